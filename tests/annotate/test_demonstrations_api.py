"""The demonstrations API (annotate/apis/demonstrations.py): the list a
reviewer works through, and the review (accept, reject with a reason, edit
and accept; a second reviewer when the campaign asks for two), through the
same service as the console's page. Refusals in the {"error", "detail"}
shape, writing nothing; permissions as the console's (campaign admins of
the campaign and staff review; engineers and admins read)."""
import pytest
from django.contrib.auth.models import Group

from annotate.models import Campaign, Demonstration, DemonstrationReview, Role
from tests.annotate.test_demonstrations import _demo, demo_round, export_dir  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db


def review_url(demo: Demonstration) -> str:
    return f"/api/campaigns/{demo.comparison.round.campaign_id}/demonstrations/{demo.pk}/review/"


def state(demo: Demonstration) -> tuple:
    """What a refused review must leave unchanged."""
    demo.refresh_from_db()
    return demo.status, demo.text, demo.decided_at, DemonstrationReview.objects.count()


def test_the_list_shows_pending_ones_with_prompt_answers_origin_and_counts(
    demo_round, annotator_client, ml_engineer_client
):
    # given: two demonstrations, one accepted since
    first = _demo(demo_round, annotator_client, text="First, better.")
    second = _demo(demo_round, annotator_client, choice="both_bad", strength=None, text="Written new.")
    Demonstration.objects.filter(pk=first.pk).update(status=Demonstration.Status.ACCEPTED)
    url = f"/api/campaigns/{demo_round.campaign_id}/demonstrations/"
    # when
    pending = ml_engineer_client.get(url)
    accepted = ml_engineer_client.get(url, {"status": "accepted"})
    # then
    assert pending.status_code == 200, pending.content
    body = pending.json()
    assert body["counts"] == {"pending": 1, "accepted": 1, "rejected": 0} and body["reviews_required"] == 1
    [shown] = body["demonstrations"]
    comparison = second.comparison
    assert (shown["id"], shown["origin"], shown["text"], shown["choice"], shown["annotator"]) == (
        second.pk, "", "Written new.", "both_bad", "ann")
    assert (shown["prompt"], shown["response_a"], shown["response_b"]) == (
        comparison.prompt.text, comparison.response_a.text, comparison.response_b.text)
    assert shown["diff_chars"] == len("Written new.") and shown["reviews"] == []
    assert [d["id"] for d in accepted.json()["demonstrations"]] == [first.pk]


def test_the_list_refuses_a_status_that_is_not_one(demo_round, ml_engineer_client):
    answer = ml_engineer_client.get(f"/api/campaigns/{demo_round.campaign_id}/demonstrations/", {"status": "maybe"})
    assert answer.status_code == 400 and set(answer.json()) >= {"error", "detail"}
    assert "status" in answer.json()["detail"]


def test_accept_reject_and_edit_through_the_api(demo_round, annotator_client, campaign_admin_client):
    # given
    accepted, rejected, edited = (_demo(demo_round, annotator_client, text=t) for t in ("Good.", "Copied.", "Tpyo."))
    # when
    a = campaign_admin_client.post(review_url(accepted), {"verdict": "accept"}, format="json")
    r = campaign_admin_client.post(review_url(rejected), {"verdict": "reject", "reason": "copies A"}, format="json")
    e = campaign_admin_client.post(review_url(edited), {"verdict": "accept", "edited_text": "Typo."}, format="json")
    # then
    assert (a.status_code, r.status_code, e.status_code) == (200, 200, 200), (a.content, r.content, e.content)
    assert a.json()["status"] == "accepted" and a.json()["reviews"][0]["reviewer"] == "admin"
    assert r.json()["status"] == "rejected" and r.json()["reviews"][0]["reason"] == "copies A"
    assert (e.json()["status"], e.json()["text"], e.json()["submitted_text"]) == ("accepted", "Typo.", "Tpyo.")
    assert e.json()["reviews"][0]["edited"] is True
    edited.refresh_from_db()
    assert (edited.text, edited.submitted_text) == ("Typo.", "Tpyo.")


def test_with_two_reviews_required_the_first_accept_leaves_it_pending_until_another_reviewer(
    demo_round, annotator_client, campaign_admin_client, api_client_for, make_user
):
    # given
    Campaign.objects.filter(pk=demo_round.campaign_id).update(demonstration_reviews=2)
    demo = _demo(demo_round, annotator_client)
    second = make_user(Role.CAMPAIGN_ADMIN, username="admin-two")
    second.administered_campaigns.add(demo_round.campaign_id)
    # when: the first reviewer accepts, then tries again
    first = campaign_admin_client.post(review_url(demo), {"verdict": "accept"}, format="json")
    before = state(demo)
    again = campaign_admin_client.post(review_url(demo), {"verdict": "accept"}, format="json")
    # then
    assert first.status_code == 200 and first.json()["status"] == "pending"
    assert again.status_code == 409 and again.json()["error"] == "conflict" and "already reviewed" in again.json()["detail"]
    assert state(demo) == before
    # when: a second reviewer accepts
    other = api_client_for(second).post(review_url(demo), {"verdict": "accept"}, format="json")
    # then
    assert other.status_code == 200 and other.json()["status"] == "accepted"
    assert [r["reviewer"] for r in other.json()["reviews"]] == ["admin", "admin-two"]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"verdict": "reject", "reason": "   "}, 400, "reason"),  # reject needs a reason
        ({"verdict": "reject"}, 400, "reason"),
        ({"verdict": "maybe"}, 400, "verdict"),
        ({}, 400, "verdict"),
        ({"verdict": "accept", "edited_text": "  \n "}, 400, "edited_text"),  # an empty edit
        ({"verdict": "accept", "edited_text": "x" * 101}, 400, "edited_text"),  # TEXT_MAX_CHARS is 100 here
        ({"verdict": "accept", "edited_text": 5}, 400, "edited_text"),
        ({"verdict": "accept", "edited_text": "Nul\x00here."}, 400, "edited_text"),
        ({"verdict": "reject", "reason": "r" * 101}, 400, "reason"),
    ],
)
def test_a_bad_review_is_a_400_naming_the_field_and_writes_nothing(
    demo_round, annotator_client, campaign_admin_client, settings, body, status, says
):
    # given
    settings.TEXT_MAX_CHARS = 100
    demo = _demo(demo_round, annotator_client, text="Fine.")
    before = state(demo)
    # when
    answer = campaign_admin_client.post(review_url(demo), body, format="json")
    # then
    assert answer.status_code == status, answer.content
    assert set(answer.json()) >= {"error", "detail"} and says in answer.json()["detail"]
    assert state(demo) == before


def test_a_decided_one_the_authors_own_and_a_missing_one_are_refused(
    demo_round, annotator_client, annotator, campaign_admin_client, api_client_for
):
    # given: an accepted one, and an author who is also an admin of the campaign
    decided = _demo(demo_round, annotator_client, text="Done.")
    assert campaign_admin_client.post(review_url(decided), {"verdict": "accept"}, format="json").status_code == 200
    own = _demo(demo_round, annotator_client, text="Mine.")
    annotator.groups.add(Group.objects.get_or_create(name=Role.CAMPAIGN_ADMIN)[0])
    annotator.administered_campaigns.add(demo_round.campaign_id)
    before = DemonstrationReview.objects.count()
    # when
    twice = campaign_admin_client.post(review_url(decided), {"verdict": "reject", "reason": "no"}, format="json")
    mine = api_client_for(annotator).post(review_url(own), {"verdict": "accept"}, format="json")
    missing = campaign_admin_client.post(
        f"/api/campaigns/{demo_round.campaign_id}/demonstrations/999999/review/", {"verdict": "accept"}, format="json")
    # then
    assert twice.status_code == 409 and "already accepted" in twice.json()["detail"]
    assert mine.status_code == 409 and "You wrote" in mine.json()["detail"]
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert DemonstrationReview.objects.count() == before


def test_permissions_are_the_consoles(
    demo_round, annotator_client, ml_engineer_client, other_campaign_admin, api_client_for
):
    # given
    demo = _demo(demo_round, annotator_client)
    listing = f"/api/campaigns/{demo_round.campaign_id}/demonstrations/"
    before = state(demo)
    # then: engineers read but do not review; annotators do neither; an admin of another campaign sees nothing
    assert ml_engineer_client.get(listing).status_code == 200
    assert ml_engineer_client.post(review_url(demo), {"verdict": "accept"}, format="json").status_code == 403
    assert annotator_client.get(listing).status_code == 403
    assert annotator_client.post(review_url(demo), {"verdict": "accept"}, format="json").status_code == 403
    outsider = api_client_for(other_campaign_admin)
    assert outsider.get(listing).status_code == 404
    assert outsider.post(review_url(demo), {"verdict": "accept"}, format="json").status_code == 404
    assert state(demo) == before


def test_a_demonstration_of_another_campaign_is_a_404_under_this_one(
    demo_round, annotator_client, campaign_admin_client, make_open_round, annotator
):
    # given: a demonstration of this campaign, asked for under another the admin also runs
    demo = _demo(demo_round, annotator_client)
    other = make_open_round(prompts=1, overlap=1, annotators=[annotator])
    before = state(demo)
    # when
    answer = campaign_admin_client.post(
        f"/api/campaigns/{other.campaign_id}/demonstrations/{demo.pk}/review/", {"verdict": "accept"}, format="json")
    # then
    assert answer.status_code == 404 and state(demo) == before


def test_the_list_reads_a_fixed_number_of_queries_whatever_the_number_of_demonstrations(
    demo_round, annotator_client, other_annotator, api_client_for, ml_engineer_client, campaign_admin
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from annotate.services.demonstrations import demonstration_review

    url = f"/api/campaigns/{demo_round.campaign_id}/demonstrations/"

    def queries() -> int:
        with CaptureQueriesContext(connection) as context:
            assert ml_engineer_client.get(url, {"status": "pending"}).status_code == 200
        return len(context)

    # given: one pending demonstration, then three more, each with a review
    Campaign.objects.filter(pk=demo_round.campaign_id).update(demonstration_reviews=2)
    first = _demo(demo_round, annotator_client)
    one = queries()
    others = [_demo(demo_round, annotator_client), _demo(demo_round, api_client_for(other_annotator)),
              _demo(demo_round, api_client_for(other_annotator))]
    campaign = Campaign.objects.get(pk=demo_round.campaign_id)
    for demo in [first, *others]:
        demonstration_review(campaign=campaign, demonstration_id=demo.pk, reviewer=campaign_admin, verdict="accept")
    # then
    assert Demonstration.objects.filter(status="pending").count() == 4
    assert queries() == one
