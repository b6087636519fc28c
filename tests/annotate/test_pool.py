"""Annotator pools: add, create accounts, daily limits, pause with a reason
(shown to the annotator), removal (the campaign disappears for them, their
ratings stay), the console pool page, and pinned query counts."""
import uuid

import pytest
from django.contrib.auth import get_user_model

from annotate.models import Membership, Rating, Role
from annotate.services.memberships import membership_update
from tests.factories import CampaignFactory, open_round, ratings_bulk_create

pytestmark = pytest.mark.django_db

User = get_user_model()

MEMBERS_API_QUERIES = 7  # token auth (2), groups, campaign, memberships, ratings state (memo key), rating counts
# The memoized counts add their key (selectors/memo.py ratings_state) on every request; the count
# itself only when the ratings changed (8 on the first request, 7 after; the pin is the first).
POOL_PAGE_QUERIES = 8  # session, user, groups, campaign, memberships, ratings state, rating counts, admins


def next_url(campaign_id):
    return f"/api/campaigns/{campaign_id}/next/"


def rate(client, comparison):
    return client.post(
        "/api/ratings/", {"comparison": comparison, "choice": "tie", "idempotency_key": str(uuid.uuid4())}, format="json"
    )


# --- members API -------------------------------------------------------------------------


def test_admin_adds_annotators_with_a_daily_limit_and_lists_them(campaign_admin_client, annotator, other_annotator):
    campaign = CampaignFactory()
    answer = campaign_admin_client.post(
        f"/api/campaigns/{campaign.pk}/members/", {"usernames": ["ann", "ann-other"], "daily_limit": 20}, format="json"
    )
    assert answer.status_code == 200, answer.data
    assert [(m["username"], m["status"], m["daily_limit"]) for m in answer.data] == [
        ("ann", "active", 20), ("ann-other", "active", 20),
    ]
    listed = campaign_admin_client.get(f"/api/campaigns/{campaign.pk}/members/").data
    assert [m["username"] for m in listed] == ["ann", "ann-other"]
    assert listed[0]["ratings_today"] == listed[0]["ratings_total"] == 0


def test_adding_unknown_or_non_annotator_users_adds_nobody(campaign_admin_client, annotator, ml_engineer):
    campaign = CampaignFactory()
    for usernames in (["ann", "ghost"], ["ann", "engineer"]):
        answer = campaign_admin_client.post(f"/api/campaigns/{campaign.pk}/members/", {"usernames": usernames}, format="json")
        assert answer.status_code == 400
    assert not Membership.objects.exists()


def test_the_old_annotators_endpoint_still_adds(campaign_admin_client, annotator):
    campaign = CampaignFactory()
    answer = campaign_admin_client.post(f"/api/campaigns/{campaign.pk}/annotators/", {"usernames": ["ann"]}, format="json")
    assert answer.data == {"added": ["ann"]}
    assert Membership.objects.get().status == Membership.Status.ACTIVE


def test_engineer_may_list_members_but_not_change_them(ml_engineer_client, annotator):
    campaign = CampaignFactory(annotators=[annotator])
    assert ml_engineer_client.get(f"/api/campaigns/{campaign.pk}/members/").status_code == 200
    assert ml_engineer_client.patch(
        f"/api/campaigns/{campaign.pk}/members/ann/", {"status": "removed"}, format="json"
    ).status_code == 403
    assert ml_engineer_client.post("/api/users/", {"username": "new"}, format="json").status_code == 403


def test_a_paused_member_gets_no_work_and_is_told_the_reason(campaign_admin_client, annotator, api_client_for):
    round_ = open_round(prompts=3, annotators=[annotator])
    answer = campaign_admin_client.patch(
        f"/api/campaigns/{round_.campaign_id}/members/ann/",
        {"status": "paused", "reason": "too fast on the last batch"}, format="json",
    )
    assert answer.status_code == 200 and answer.data["paused_reason"] == "too fast on the last batch"
    me = api_client_for(annotator)
    refused = me.post(next_url(round_.campaign_id))
    assert refused.status_code == 403
    assert refused.data["error"] == "paused" and "too fast on the last batch" in refused.data["detail"]
    # still sees the campaign, so the page can say why
    assert [c["id"] for c in me.get("/api/campaigns/").data] == [round_.campaign_id]
    # reinstated: work again
    campaign_admin_client.patch(f"/api/campaigns/{round_.campaign_id}/members/ann/", {"status": "active"}, format="json")
    assert me.post(next_url(round_.campaign_id)).status_code == 200
    assert Membership.objects.get(annotator=annotator).paused_reason == ""


def test_an_automatic_pause_says_it_was_the_gold_check(annotator, api_client_for):
    round_ = open_round(prompts=2, annotators=[annotator])
    Membership.objects.filter(annotator=annotator).update(
        status="paused", paused_reason="gold accuracy 40% over 10 gold pairs", paused_automatically=True
    )
    answer = api_client_for(annotator).post(next_url(round_.campaign_id))
    assert answer.status_code == 403 and "gold" in answer.data["detail"]


def test_pausing_needs_a_reason_and_writes_nothing_without_one(campaign_admin_client, annotator):
    campaign = CampaignFactory(annotators=[annotator])
    answer = campaign_admin_client.patch(f"/api/campaigns/{campaign.pk}/members/ann/", {"status": "paused"}, format="json")
    assert answer.status_code == 400 and "reason" in answer.data["errors"]
    assert Membership.objects.get().status == Membership.Status.ACTIVE


def test_a_removed_member_no_longer_sees_the_campaign_and_their_ratings_stay(
    campaign_admin_client, annotator, api_client_for
):
    round_ = open_round(prompts=3, annotators=[annotator])
    me = api_client_for(annotator)
    first = me.post(next_url(round_.campaign_id)).data["comparison"]
    assert rate(me, first).status_code == 201
    held = me.post(next_url(round_.campaign_id)).data["comparison"]
    # when
    answer = campaign_admin_client.patch(f"/api/campaigns/{round_.campaign_id}/members/ann/", {"status": "removed"}, format="json")
    # then
    assert answer.status_code == 200 and answer.data["ratings_total"] == 1
    assert me.get("/api/campaigns/").data == []
    assert me.post(next_url(round_.campaign_id)).status_code == 404
    assert me.get(f"/api/campaigns/{round_.campaign_id}/progress/").status_code == 404
    assert rate(me, held).status_code == 404  # a lease held before removal no longer rates
    assert Rating.objects.filter(annotator=annotator).count() == 1
    # and adding them again reinstates them
    campaign_admin_client.post(f"/api/campaigns/{round_.campaign_id}/members/", {"usernames": ["ann"]}, format="json")
    assert Membership.objects.get(annotator=annotator).status == Membership.Status.ACTIVE


def test_daily_limit_counts_ratings_today_and_leases_held(campaign_admin_client, annotator, api_client_for):
    round_ = open_round(prompts=6, overlap=1, annotators=[annotator])
    campaign_admin_client.patch(f"/api/campaigns/{round_.campaign_id}/members/ann/", {"daily_limit": 2}, format="json")
    me = api_client_for(annotator)
    first = me.post(next_url(round_.campaign_id)).data["comparison"]
    # the page prefetches: 1 held + 1 new = the limit of 2
    second = me.post(next_url(round_.campaign_id), {"exclude": [first]}, format="json").data["comparison"]
    over = me.post(next_url(round_.campaign_id), {"exclude": [first, second]}, format="json")
    assert over.status_code in (409, 429)  # 409: two live leases already; both are "no more"
    assert rate(me, first).status_code == 201
    # one rated + one held = 2: no third comparison today, and the answer says why
    refused = me.post(next_url(round_.campaign_id), {"exclude": [second]}, format="json")
    assert refused.status_code == 429 and refused.data["error"] == "daily_limit" and "2" in refused.data["detail"]
    # the held one still comes back (a reload) and can be rated
    assert me.post(next_url(round_.campaign_id)).data["comparison"] == second
    assert rate(me, second).status_code == 201
    assert me.post(next_url(round_.campaign_id)).status_code == 429
    # yesterday's ratings do not count
    from datetime import timedelta

    from django.utils import timezone

    Rating.objects.update(created_at=timezone.now() - timedelta(days=1, hours=1))
    assert me.post(next_url(round_.campaign_id)).status_code == 200
    # no limit: work again whatever today's count
    membership_update(campaign=round_.campaign, username="ann", daily_limit=None)
    assert Membership.objects.get().daily_limit is None


@pytest.mark.parametrize("limit", [0, -1, "many"])
def test_a_bad_daily_limit_is_a_400_and_writes_nothing(campaign_admin_client, annotator, limit):
    campaign = CampaignFactory(annotators=[annotator])
    answer = campaign_admin_client.patch(f"/api/campaigns/{campaign.pk}/members/ann/", {"daily_limit": limit}, format="json")
    assert answer.status_code == 400
    assert Membership.objects.get().daily_limit is None


def test_patching_someone_outside_the_pool_is_a_404(campaign_admin_client, annotator):
    campaign = CampaignFactory()
    answer = campaign_admin_client.patch(f"/api/campaigns/{campaign.pk}/members/ann/", {"status": "active"}, format="json")
    assert answer.status_code == 404


# --- POST /api/users/ ----------------------------------------------------------------------


def test_admin_creates_an_annotator_with_a_generated_password_shown_once(campaign_admin_client, anonymous_client):
    answer = campaign_admin_client.post("/api/users/", {"username": "newbie"}, format="json")
    assert answer.status_code == 201
    password = answer.data["generated_password"]
    assert len(password) >= 12 and answer.data["roles"] == ["annotator"]
    user = User.objects.get(username="newbie")
    assert user.check_password(password) and user.password != password
    assert set(user.groups.values_list("name", flat=True)) == {Role.ANNOTATOR}
    token = anonymous_client.post("/api/auth/token/", {"username": "newbie", "password": password})
    assert token.status_code == 200


def test_admin_creates_an_annotator_with_a_chosen_password(campaign_admin_client):
    answer = campaign_admin_client.post("/api/users/", {"username": "chosen", "password": "a good long pass"}, format="json")
    assert answer.status_code == 201 and answer.data["generated_password"] is None
    assert User.objects.get(username="chosen").check_password("a good long pass")


@pytest.mark.parametrize(
    "body, status",
    [({"username": "ann"}, 409), ({"username": "bad name!"}, 400), ({"username": "x", "password": "short"}, 400)],
)
def test_user_create_refuses_bad_input_and_writes_nothing(campaign_admin_client, annotator, body, status):
    before = User.objects.count()
    answer = campaign_admin_client.post("/api/users/", body, format="json")
    assert answer.status_code == status
    assert User.objects.count() == before
    annotator.refresh_from_db()
    assert not annotator.has_usable_password()  # an existing user's password is never reset


# --- console pool page ---------------------------------------------------------------------


@pytest.fixture
def admin_browser_client(client, campaign_admin):
    client.force_login(campaign_admin)
    return client


def test_pool_page_creates_an_account_and_shows_the_generated_password_once(admin_browser_client):
    campaign = CampaignFactory()
    answer = admin_browser_client.post(f"/console/campaigns/{campaign.pk}/pool/create/", {"username": "fresh", "daily_limit": "15"})
    html = answer.content.decode()
    assert answer.status_code == 200 and 'id="generated-password"' in html
    membership = Membership.objects.get(annotator__username="fresh")
    assert membership.daily_limit == 15
    assert 'id="generated-password"' not in admin_browser_client.get(f"/console/campaigns/{campaign.pk}/pool/").content.decode()


def test_pool_page_create_with_a_taken_name_creates_nothing_and_says_so(admin_browser_client, annotator):
    campaign = CampaignFactory()
    answer = admin_browser_client.post(f"/console/campaigns/{campaign.pk}/pool/create/", {"username": "ann", "daily_limit": "3"})
    assert answer.status_code == 400 and 'id="err-create-username"' in answer.content.decode()
    assert not Membership.objects.exists()


def test_pool_page_pauses_and_reinstates(admin_browser_client, annotator):
    campaign = CampaignFactory(annotators=[annotator])
    url = f"/console/campaigns/{campaign.pk}/pool/members/ann/"
    assert admin_browser_client.post(url, {"status": "paused", "reason": "check the guidelines"}).status_code == 302
    html = admin_browser_client.get(f"/console/campaigns/{campaign.pk}/pool/").content.decode()
    assert "check the guidelines" in html
    assert admin_browser_client.post(url, {"status": "active"}).status_code == 302
    assert Membership.objects.get().status == Membership.Status.ACTIVE


def _big_pool(n_members: int, make_user):
    members = [make_user(Role.ANNOTATOR) for _ in range(n_members)]
    round_ = open_round(prompts=4, overlap=n_members, annotators=members)
    ratings_bulk_create(
        {"comparison_id": c.pk, "annotator": a, "choice": "tie"} for c in round_.comparisons.all() for a in members
    )
    Membership.objects.filter(annotator=members[0]).update(status="paused", paused_reason="r")
    return round_.campaign


@pytest.mark.parametrize("n_members", [2, 25])
def test_members_api_query_count_is_pinned(campaign_admin_client, make_user, n_members, django_assert_max_num_queries):
    campaign = _big_pool(n_members, make_user)
    with django_assert_max_num_queries(MEMBERS_API_QUERIES):
        answer = campaign_admin_client.get(f"/api/campaigns/{campaign.pk}/members/")
    assert len(answer.data) == n_members and all(m["ratings_total"] == 4 for m in answer.data)


@pytest.mark.parametrize("n_members", [2, 25])
def test_pool_page_query_count_is_pinned(admin_browser_client, make_user, n_members, django_assert_max_num_queries):
    campaign = _big_pool(n_members, make_user)
    with django_assert_max_num_queries(POOL_PAGE_QUERIES):
        page = admin_browser_client.get(f"/console/campaigns/{campaign.pk}/pool/")
    assert page.content.decode().count('class="member member-') == n_members


def test_pool_page_shows_fifty_members_a_page_and_a_failed_change_on_its_members_page(admin_browser_client, make_user):
    from frontend.console.pool import POOL_PAGE_SIZE

    members = [make_user(Role.ANNOTATOR, username=f"m{i:03d}") for i in range(POOL_PAGE_SIZE + 5)]
    round_ = open_round(prompts=2, overlap=3, annotators=members)
    last = members[-1]
    ratings_bulk_create({"comparison_id": c.pk, "annotator": last, "choice": "tie"} for c in round_.comparisons.all())
    url = f"/console/campaigns/{round_.campaign_id}/pool/"
    first = admin_browser_client.get(url).content.decode()
    assert first.count('class="member member-') == POOL_PAGE_SIZE and "m000" in first and last.username not in first
    assert "Page 1 of 2" in first and f"Pool ({POOL_PAGE_SIZE + 5})" in first
    second = admin_browser_client.get(url + "?page=2").content.decode()
    assert second.count('class="member member-') == 5 and last.username in second
    assert f'<td class="ratings-total">{round_.comparisons.count()}</td>' in second  # counted for the page
    # pausing without a reason fails: the answer is the failing member's page, with the error
    failed = admin_browser_client.post(f"{url}members/{last.username}/", {"status": "paused", "reason": ""})
    html = failed.content.decode()
    assert failed.status_code == 400 and "Page 2 of 2" in html and 'role="alert"' in html
