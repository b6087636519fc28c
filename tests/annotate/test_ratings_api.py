"""Submitting ratings through the API: created once, idempotent, bounded by k,
and every refusal a 4xx that writes nothing."""
import uuid
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from annotate.models import Lease, Comparison, Rating

pytestmark = pytest.mark.django_db


def lease(client, campaign_id: int) -> int:
    answer = client.post(f"/api/campaigns/{campaign_id}/next/")
    assert answer.status_code == 200, answer.content
    return answer.data["comparison"]


def rate(client, comparison_id: int, choice: str = "A", strength: int | None = 2, key=None, **extra):
    body = {"comparison": comparison_id, "choice": choice, "idempotency_key": str(key or uuid.uuid4()), **extra}
    if strength is not None:
        body["strength"] = strength
    return client.post("/api/ratings/", body, format="json")


def snapshot() -> tuple:
    """What a refused request must leave unchanged."""
    return (
        Rating.objects.count(),
        list(Comparison.objects.order_by("pk").values_list("rating_count", flat=True)),
        list(Lease.objects.order_by("pk").values_list("status", flat=True)),
    )


def test_rating_create_stores_the_rating_and_answers_201(open_round, annotator_client, annotator):
    # given
    comparison = lease(annotator_client, open_round.campaign_id)
    # when
    answer = rate(annotator_client, comparison, "B", 3, reason="more accurate", time_on_task_ms=4200)
    # then
    assert answer.status_code == 201
    rating = Rating.objects.get(pk=answer.data["id"])
    assert (rating.annotator, rating.comparison_id, rating.choice, rating.strength) == (annotator, comparison, "B", 3)
    assert rating.reason == "more accurate" and rating.time_on_task_ms == 4200
    assert Comparison.objects.get(pk=comparison).rating_count == 1
    assert Lease.objects.get(annotator=annotator).status == Lease.Status.DONE


def test_rating_create_with_the_same_idempotency_key_twice_makes_one_rating(open_round, annotator_client):
    # given
    comparison = lease(annotator_client, open_round.campaign_id)
    key = uuid.uuid4()
    first = rate(annotator_client, comparison, key=key)
    # when
    second = rate(annotator_client, comparison, key=key)
    # then
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.data["id"] == first.data["id"]
    assert Rating.objects.count() == 1
    assert Comparison.objects.get(pk=comparison).rating_count == 1


@pytest.mark.parametrize("choice", ["A", "B"])
@pytest.mark.parametrize("strength", [None, 0, 4])
def test_rating_create_requires_strength_1_to_3_for_a_or_b(open_round, annotator_client, choice, strength):
    # given
    comparison = lease(annotator_client, open_round.campaign_id)
    before = snapshot()
    # when
    answer = rate(annotator_client, comparison, choice, strength)
    # then
    assert answer.status_code == 400
    assert "strength" in answer.data["detail"]
    assert snapshot() == before


@pytest.mark.parametrize("choice", ["tie", "both_bad"])
def test_rating_create_refuses_strength_for_tie_and_both_bad(open_round, annotator_client, choice):
    # given
    comparison = lease(annotator_client, open_round.campaign_id)
    before = snapshot()
    # when
    refused = rate(annotator_client, comparison, choice, 2)
    accepted = rate(annotator_client, comparison, choice, None)
    # then
    assert refused.status_code == 400 and "strength" in refused.data["detail"]
    assert accepted.status_code == 201 and accepted.data["strength"] is None
    assert before[0] == 0 and Rating.objects.count() == 1


def test_rating_create_after_lease_expiry_is_accepted_while_a_slot_is_free(make_open_round, annotator, api_client_for):
    # given: k=1, the lease ran out and nobody took the comparison since
    round_ = make_open_round(prompts=1, overlap=1, annotators=[annotator])
    client = api_client_for(annotator)
    comparison = lease(client, round_.campaign_id)
    Lease.objects.update(leased_until=timezone.now() - timedelta(minutes=1))
    # when
    answer = rate(client, comparison)
    # then
    assert answer.status_code == 201
    assert Comparison.objects.get(pk=comparison).rating_count == 1


def test_rating_create_after_lease_expiry_is_409_when_someone_else_took_the_last_slot(
    make_open_round, annotator, other_annotator, api_client_for
):
    # given: k=1; my lease ran out and the other annotator leased the comparison
    round_ = make_open_round(prompts=1, overlap=1, annotators=[annotator, other_annotator])
    me, other = api_client_for(annotator), api_client_for(other_annotator)
    comparison = lease(me, round_.campaign_id)
    Lease.objects.update(leased_until=timezone.now() - timedelta(minutes=1))
    assert lease(other, round_.campaign_id) == comparison
    before = snapshot()
    # when
    answer = rate(me, comparison)
    # then
    assert answer.status_code == 409
    assert "expired" in answer.data["detail"]
    assert snapshot() == before
    # and the one who holds the slot can still rate
    assert rate(other, comparison).status_code == 201


def test_rating_create_after_lease_expiry_is_409_when_the_comparison_filled_up_meanwhile(
    make_open_round, annotator, other_annotator, api_client_for
):
    # given: k=1; my lease ran out, the other annotator leased and rated it
    round_ = make_open_round(prompts=1, overlap=1, annotators=[annotator, other_annotator])
    me, other = api_client_for(annotator), api_client_for(other_annotator)
    comparison = lease(me, round_.campaign_id)
    Lease.objects.filter(annotator=annotator).update(leased_until=timezone.now() - timedelta(minutes=1))
    lease(other, round_.campaign_id)
    assert rate(other, comparison).status_code == 201
    before = snapshot()
    # when
    answer = rate(me, comparison)
    # then
    assert answer.status_code == 409
    assert snapshot() == before
    assert Comparison.objects.get(pk=comparison).rating_count == 1


# --- Bad input: a 4xx that says what was wrong, and nothing written ------


def test_rating_create_rejects_an_unknown_choice(open_round, annotator_client):
    # given
    comparison = lease(annotator_client, open_round.campaign_id)
    before = snapshot()
    # when
    answer = rate(annotator_client, comparison, "C", None)
    # then
    assert answer.status_code == 400
    assert "Unknown choice 'C'" in answer.data["detail"]
    assert snapshot() == before


def test_rating_create_rejects_a_comparison_the_annotator_does_not_hold(open_round, annotator_client):
    # given: a comparison of my campaign, never leased to me
    comparison = open_round.comparisons.first()
    before = snapshot()
    # when
    answer = rate(annotator_client, comparison.pk)
    # then
    assert answer.status_code == 409
    assert "do not hold" in answer.data["detail"]
    assert snapshot() == before


def test_rating_create_rejects_second_rating_of_same_comparison(open_round, annotator_client):
    # given
    comparison = lease(annotator_client, open_round.campaign_id)
    assert rate(annotator_client, comparison).status_code == 201
    before = snapshot()
    # when: a new submission (fresh key), not a retry
    answer = rate(annotator_client, comparison, "B", 1)
    # then
    assert answer.status_code == 409
    assert "already rated" in answer.data["detail"]
    assert snapshot() == before


def test_rating_create_is_404_for_a_comparison_of_a_campaign_the_annotator_is_not_in(
    open_round, make_open_round, annotator_client, other_annotator
):
    # given: another campaign's comparison, leased by one of its annotators
    elsewhere = make_open_round(prompts=1, overlap=2, annotators=[other_annotator]).comparisons.get()
    before = snapshot()
    # when
    answer = rate(annotator_client, elsewhere.pk)
    # then
    assert answer.status_code == 404
    assert snapshot() == before


def test_rating_create_rejects_an_idempotency_key_reused_for_another_comparison(open_round, annotator_client):
    # given
    key = uuid.uuid4()
    first = lease(annotator_client, open_round.campaign_id)
    assert rate(annotator_client, first, key=key).status_code == 201
    second = lease(annotator_client, open_round.campaign_id)
    before = snapshot()
    # when
    answer = rate(annotator_client, second, key=key)
    # then
    assert answer.status_code == 409
    assert "idempotency key" in answer.data["detail"]
    assert snapshot() == before


@override_settings(TEXT_MAX_CHARS=10)
def test_rating_create_rejects_a_reason_over_the_length_limit(open_round, annotator_client):
    # given
    comparison = lease(annotator_client, open_round.campaign_id)
    before = snapshot()
    # when
    answer = rate(annotator_client, comparison, reason="x" * 11)
    # then
    assert answer.status_code == 400
    assert "limit is 10" in answer.data["detail"]
    assert snapshot() == before


def test_rating_create_rejects_a_missing_idempotency_key(open_round, annotator_client):
    # given
    comparison = lease(annotator_client, open_round.campaign_id)
    before = snapshot()
    # when
    answer = annotator_client.post("/api/ratings/", {"comparison": comparison, "choice": "tie"}, format="json")
    # then
    assert answer.status_code == 400
    assert answer.data["error"] == "invalid" and "idempotency_key" in answer.data["errors"]
    assert snapshot() == before
