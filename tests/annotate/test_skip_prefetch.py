"""Prefetch (`exclude` on the next API, two live leases at most) and skip
with a reason: what the rating page relies on."""
import uuid

import pytest

from annotate.models import Lease, Rating
from annotate.services.leases import MAX_LIVE_LEASES, lease_skip

pytestmark = pytest.mark.django_db


def next_url(campaign_id):
    return f"/api/campaigns/{campaign_id}/next/"


def skip_url(comparison_id):
    return f"/api/comparisons/{comparison_id}/skip/"


def test_comparison_next_with_exclude_leases_a_second_comparison_for_the_page_to_prefetch(open_round, annotator_client):
    # given: I hold one comparison
    first = annotator_client.post(next_url(open_round.campaign_id)).data["comparison"]
    # when: the page asks for another one, excluding it
    answer = annotator_client.post(next_url(open_round.campaign_id), {"exclude": [first]}, format="json")
    # then: a different comparison, and both leases are live
    assert answer.status_code == 200
    second = answer.data["comparison"]
    assert second != first
    assert Lease.objects.filter(annotator=annotator_client.user, status="leased").count() == 2
    # and asking again without exclude still gives the first (a reload shows it)
    assert annotator_client.post(next_url(open_round.campaign_id)).data["comparison"] == first
    # and asking with exclude again gives the same second one, not a third lease
    again = annotator_client.post(next_url(open_round.campaign_id), {"exclude": [first]}, format="json")
    assert again.data["comparison"] == second


def test_comparison_next_refuses_a_third_live_lease(open_round, annotator_client):
    first = annotator_client.post(next_url(open_round.campaign_id)).data["comparison"]
    second = annotator_client.post(next_url(open_round.campaign_id), {"exclude": [first]}, format="json").data["comparison"]
    # when
    answer = annotator_client.post(next_url(open_round.campaign_id), {"exclude": [first, second]}, format="json")
    # then
    assert answer.status_code == 409
    assert f"already hold {MAX_LIVE_LEASES} comparisons" in answer.data["detail"]
    assert Lease.objects.filter(annotator=annotator_client.user).count() == 2


def test_comparison_next_after_a_rating_leases_a_new_one_beside_the_prefetched(open_round, annotator_client):
    first = annotator_client.post(next_url(open_round.campaign_id)).data["comparison"]
    second = annotator_client.post(next_url(open_round.campaign_id), {"exclude": [first]}, format="json").data["comparison"]
    annotator_client.post("/api/ratings/", {"comparison": first, "choice": "tie", "idempotency_key": str(uuid.uuid4())},
                          format="json")
    # when: the page shows the prefetched one and prefetches behind it
    third = annotator_client.post(next_url(open_round.campaign_id), {"exclude": [second]}, format="json").data["comparison"]
    # then
    assert len({first, second, third}) == 3


def test_comparison_next_with_exclude_answers_204_when_nothing_else_is_free(make_open_round, annotator, api_client_for):
    round_ = make_open_round(prompts=1, overlap=1, annotators=[annotator])
    client = api_client_for(annotator)
    only = client.post(next_url(round_.campaign_id)).data["comparison"]
    assert client.post(next_url(round_.campaign_id), {"exclude": [only]}, format="json").status_code == 204


def test_comparison_next_sends_round_progress_counts_and_nothing_about_policies(open_round, annotator_client):
    answer = annotator_client.post(next_url(open_round.campaign_id))
    assert answer.data["round_progress"] == {
        "round": 0, "comparisons": 3, "ratings": 0, "target_ratings": 6, "fraction": 0.0,
    }
    body = answer.content.decode()
    for leak in ("candidate", "baseline", "policy", "version", "sha256"):
        assert leak not in body


def test_comparison_next_rejects_an_exclude_that_is_not_a_list_of_ids(open_round, annotator_client):
    answer = annotator_client.post(next_url(open_round.campaign_id), {"exclude": ["x"]}, format="json")
    assert answer.status_code == 400


def test_skip_releases_the_lease_stores_the_reason_and_the_annotator_never_gets_it_again(
    open_round, annotator_client, other_annotator, api_client_for
):
    first = annotator_client.post(next_url(open_round.campaign_id)).data["comparison"]
    # when
    answer = annotator_client.post(skip_url(first), {"reason": "I can't judge this topic"}, format="json")
    # then
    assert answer.status_code == 200
    assert answer.data == {"comparison": first, "status": "released", "skip_reason": "I can't judge this topic"}
    assignment = Lease.objects.get(annotator=annotator_client.user, comparison_id=first)
    assert (assignment.status, assignment.skip_reason) == ("released", "I can't judge this topic")
    seen = set()
    while (nxt := annotator_client.post(next_url(open_round.campaign_id))).status_code == 200:
        seen.add(nxt.data["comparison"])
        annotator_client.post("/api/ratings/", {"comparison": nxt.data["comparison"], "choice": "tie",
                                                "idempotency_key": str(uuid.uuid4())}, format="json")
    assert first not in seen and len(seen) == 2
    # and the slot went back to the pool: someone else gets it
    other = api_client_for(other_annotator)
    taken = set()
    while (nxt := other.post(next_url(open_round.campaign_id))).status_code == 200:
        taken.add(nxt.data["comparison"])
        other.post("/api/ratings/", {"comparison": nxt.data["comparison"], "choice": "tie",
                                     "idempotency_key": str(uuid.uuid4())}, format="json")
    assert first in taken


def test_skip_needs_a_reason(open_round, annotator_client):
    first = annotator_client.post(next_url(open_round.campaign_id)).data["comparison"]
    answer = annotator_client.post(skip_url(first), {"reason": "   "}, format="json")
    assert answer.status_code == 400
    assert "Say why you skip" in answer.data["detail"]
    assert Lease.objects.get(annotator=annotator_client.user, comparison_id=first).status == "leased"


def test_skip_of_a_comparison_you_do_not_hold_is_a_409_that_says_so(open_round, annotator_client):
    comparison = open_round.comparisons.first()
    answer = annotator_client.post(skip_url(comparison.pk), {"reason": "no"}, format="json")
    assert answer.status_code == 409
    assert answer.data == {
        "error": "conflict", "detail": f"You hold no lease on comparison {comparison.pk}, so there is nothing to skip."
    }


def test_skip_after_rating_is_refused_and_the_rating_stays(open_round, annotator_client):
    first = annotator_client.post(next_url(open_round.campaign_id)).data["comparison"]
    annotator_client.post("/api/ratings/", {"comparison": first, "choice": "A", "strength": 1,
                                            "idempotency_key": str(uuid.uuid4())}, format="json")
    answer = annotator_client.post(skip_url(first), {"reason": "changed my mind"}, format="json")
    assert answer.status_code == 409
    assert "already rated" in answer.data["detail"]
    assert Rating.objects.filter(comparison_id=first).count() == 1


def test_skip_twice_is_refused_the_second_time(open_round, annotator, annotator_client):
    first = annotator_client.post(next_url(open_round.campaign_id)).data["comparison"]
    lease_skip(annotator=annotator, comparison_id=first, reason="unclear")
    answer = annotator_client.post(skip_url(first), {"reason": "unclear"}, format="json")
    assert answer.status_code == 409
    assert "already given back" in answer.data["detail"]


def test_skip_is_for_annotators_only(open_round, ml_engineer_client, anonymous_client):
    comparison = open_round.comparisons.first()
    assert ml_engineer_client.post(skip_url(comparison.pk), {"reason": "x"}, format="json").status_code == 403
    assert anonymous_client.post(skip_url(comparison.pk), {"reason": "x"}, format="json").status_code in (401, 403)
