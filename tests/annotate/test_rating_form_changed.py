"""A rating made on a page built before a campaign admin changed the rating
form (the aspects, whether they are required, whether written answers are
taken) is stored as made, not refused: nothing a person submitted is lost.
The page says which form it was built from (`form`); a client that says
nothing, or names the current form, is checked strictly as before."""
import json
import re
import uuid

import pytest

from annotate.models import Campaign, Comparison, Demonstration, Rating
from annotate.selectors.exports import rating_export_rows
from annotate.selectors.training import preference_rows
from annotate.services.campaigns import campaign_update
from annotate.services.rating_form import rating_form_version

pytestmark = pytest.mark.django_db

ASPECTS = [
    {"name": "correctness", "question": "Which answer is more correct?", "key": "c"},
    {"name": "safety", "question": "Which answer is safer?", "key": "f"},
]
RENAMED = [
    {"name": "correctness", "question": "Which answer is more correct?", "key": "c"},
    {"name": "harmlessness", "question": "Which answer is less harmful?", "key": "h"},
]


@pytest.fixture
def aspect_round(make_open_round, annotator, other_annotator):
    return make_open_round(prompts=3, overlap=2, annotators=[annotator, other_annotator], aspects=ASPECTS)


def page_form(client, campaign_id: int) -> str:
    """The form version the rating page carries in its config, as a browser gets it."""
    html = client.get(f"/campaigns/{campaign_id}/rate/").content.decode()
    config = json.loads(re.search(r'<script id="rate-config" type="application/json">(.*?)</script>', html, re.S)[1])
    return config["form"]


def lease(client, campaign_id: int) -> int:
    answer = client.post(f"/api/campaigns/{campaign_id}/next/")
    assert answer.status_code == 200, answer.content
    return answer.data["comparison"]


def rate(client, comparison_id: int, *, form=None, choice="A", strength=2, **extra):
    body = {"comparison": comparison_id, "choice": choice, "strength": strength,
            "idempotency_key": str(uuid.uuid4()), **extra}
    if form is not None:
        body["form"] = form
    return client.post("/api/ratings/", body, format="json")


def change_rubric(campaign_id: int) -> None:
    """What an admin does in the console while the page is open: rename an
    aspect and make every aspect required."""
    campaign = Campaign.objects.get(pk=campaign_id)
    campaign_update(campaign=campaign, fields={"aspects": RENAMED, "aspects_required": True})


def test_the_page_carries_the_campaigns_current_form(aspect_round, annotator, client):
    client.force_login(annotator)
    campaign = Campaign.objects.get(pk=aspect_round.campaign_id)
    before = page_form(client, campaign.pk)
    assert before == rating_form_version(aspects=ASPECTS, aspects_required=False,
                                         demonstrations=campaign.demonstrations)
    change_rubric(campaign.pk)
    assert page_form(client, campaign.pk) != before


def test_a_rating_made_under_the_old_rubric_is_stored_as_made(aspect_round, annotator, annotator_client, client):
    # given: the page was built, then the admin renamed safety and made all aspects required
    client.force_login(annotator)
    old_form = page_form(client, aspect_round.campaign_id)
    comparison = lease(annotator_client, aspect_round.campaign_id)
    change_rubric(aspect_round.campaign_id)
    # when: the outbox sends what the annotator judged on the old rows
    answer = rate(annotator_client, comparison, form=old_form, aspects={"safety": "B", "correctness": "A"})
    # then: stored whole, the old aspect under its old name
    assert answer.status_code == 201, answer.content
    assert answer.data["form_changed"] is True
    rating = Rating.objects.get(pk=answer.data["id"])
    assert rating.aspects == {"correctness": "A", "safety": "B"}
    assert Comparison.objects.get(pk=comparison).rating_count == 1
    # and training reads only the campaign's current aspects from it
    (row,) = preference_rows(campaign=Campaign.objects.get(pk=aspect_round.campaign_id))
    assert row["aspects"] == {"correctness": 1}
    # and the ratings export carries the old judgment beside the current columns
    (exported,) = rating_export_rows(campaign=Campaign.objects.get(pk=aspect_round.campaign_id))
    assert (exported["aspect_correctness"], exported["aspect_harmlessness"]) == ("A", "")
    assert exported["aspects_other"] == {"safety": "B"}


def test_a_rating_without_an_aspect_made_required_after_the_page_loaded_is_kept(
    aspect_round, annotator, annotator_client, client
):
    client.force_login(annotator)
    old_form = page_form(client, aspect_round.campaign_id)
    comparison = lease(annotator_client, aspect_round.campaign_id)
    change_rubric(aspect_round.campaign_id)
    answer = rate(annotator_client, comparison, form=old_form)
    assert answer.status_code == 201, answer.content
    assert Rating.objects.get(pk=answer.data["id"]).aspects == {}


@pytest.mark.parametrize("form", [None, "current"], ids=["no-form-sent", "current-form"])
def test_a_client_on_the_current_form_is_checked_strictly(aspect_round, annotator, annotator_client, client, form):
    # given: the rubric changed before this client built its rating
    comparison = lease(annotator_client, aspect_round.campaign_id)
    change_rubric(aspect_round.campaign_id)
    client.force_login(annotator)
    sent = page_form(client, aspect_round.campaign_id) if form == "current" else None
    before = list(Rating.objects.values_list("pk", flat=True))
    # when: it names an aspect the campaign no longer has, and leaves a required one out
    answer = rate(annotator_client, comparison, form=sent, aspects={"safety": "B", "correctness": "A"})
    # then: refused as before, nothing written
    assert answer.status_code == 400, answer.content
    assert answer.data["error"] == "invalid" and "no aspect 'safety'" in answer.data["detail"]
    assert list(Rating.objects.values_list("pk", flat=True)) == before


def test_a_changed_form_does_not_let_a_bad_value_through(aspect_round, annotator, annotator_client, client):
    client.force_login(annotator)
    old_form = page_form(client, aspect_round.campaign_id)
    comparison = lease(annotator_client, aspect_round.campaign_id)
    change_rubric(aspect_round.campaign_id)
    answer = rate(annotator_client, comparison, form=old_form, aspects={"safety": "maybe"})
    assert answer.status_code == 400 and "use one of A, B, same" in answer.data["detail"]
    assert not Rating.objects.exists()


def test_a_written_answer_sent_after_the_admin_switched_them_off_is_kept_for_review(
    make_open_round, annotator, annotator_client, client
):
    # given: a campaign that took written answers when the page loaded
    round_ = make_open_round(prompts=2, overlap=1, annotators=[annotator])
    Campaign.objects.filter(pk=round_.campaign_id).update(demonstrations=Campaign.Demonstrations.OPTIONAL)
    client.force_login(annotator)
    old_form = page_form(client, round_.campaign_id)
    comparison = lease(annotator_client, round_.campaign_id)
    Campaign.objects.filter(pk=round_.campaign_id).update(demonstrations=Campaign.Demonstrations.OFF)
    demonstration = {"text": "Paris is the capital of France.", "origin": "a", "time_on_task_ms": 9000}
    # when: the current form refuses it (nothing written)...
    strict = rate(annotator_client, comparison, form=page_form(client, round_.campaign_id),
                  demonstration=demonstration)
    assert strict.status_code == 400 and "takes no demonstrations" in strict.data["detail"]
    assert not Rating.objects.exists() and not Demonstration.objects.exists()
    # ...while the page built before the change has both kept, the answer pending review
    answer = rate(annotator_client, comparison, form=old_form, demonstration=demonstration)
    assert answer.status_code == 201, answer.content
    assert answer.data["form_changed"] is True
    kept = Demonstration.objects.get(rating_id=answer.data["id"])
    assert kept.text == demonstration["text"] and kept.status == Demonstration.Status.PENDING
