"""The annotator's side of the API: leasing the next comparison, blind."""
from datetime import timedelta

import pytest
from django.utils import timezone

from annotate.models import Lease, Comparison, Rating
from annotate.services.leases import comparison_lease_next
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def next_url(campaign_id: int) -> str:
    return f"/api/campaigns/{campaign_id}/next/"


def rate(client, comparison_id: int, choice: str = "A", strength: int | None = 2, key: str | None = None):
    import uuid

    body = {"comparison": comparison_id, "choice": choice, "idempotency_key": key or str(uuid.uuid4())}
    if strength is not None:
        body["strength"] = strength
    return client.post("/api/ratings/", body, format="json")


def test_comparison_next_leases_one_comparison_to_the_annotator(open_round, annotator_client, annotator):
    # when
    answer = annotator_client.post(next_url(open_round.campaign_id))
    # then
    assert answer.status_code == 200
    comparison = Comparison.objects.get(pk=answer.data["comparison"])
    assert comparison.round_id == open_round.pk
    assert answer.data["response_a"] == comparison.response_a.text
    assert answer.data["response_b"] == comparison.response_b.text
    assert answer.data["prompt"] == comparison.prompt.text
    lease = Lease.objects.get(annotator=annotator)
    assert lease.comparison_id == comparison.pk
    assert lease.status == Lease.Status.LEASED
    assert lease.leased_until > timezone.now()


def test_comparison_next_returns_the_same_comparison_on_reload_while_the_lease_holds(open_round, annotator_client):
    # given
    first = annotator_client.post(next_url(open_round.campaign_id)).data
    # when
    again = annotator_client.post(next_url(open_round.campaign_id)).data
    # then
    assert again["comparison"] == first["comparison"]
    assert Lease.objects.count() == 1


def test_comparison_next_respects_overlap_k(make_open_round, make_user, api_client_for):
    # given: one comparison, k=2, three annotators
    users = [make_user("annotator") for _ in range(3)]
    round_ = make_open_round(prompts=1, overlap=2, annotators=users)
    first, second, third = (api_client_for(u) for u in users)
    # when
    a = first.post(next_url(round_.campaign_id))
    b = second.post(next_url(round_.campaign_id))
    c = third.post(next_url(round_.campaign_id))
    # then: two leases, and the third annotator finds no work
    assert a.status_code == b.status_code == 200
    assert a.data["comparison"] == b.data["comparison"]
    assert c.status_code == 204
    assert Lease.objects.filter(comparison_id=a.data["comparison"]).count() == 2


def test_comparison_next_gives_the_third_annotator_a_different_comparison_when_k_is_taken(
    make_open_round, make_user, api_client_for
):
    # given: two comparisons, k=2, three annotators
    users = [make_user("annotator") for _ in range(3)]
    round_ = make_open_round(prompts=2, overlap=2, annotators=users)
    # when
    got = [api_client_for(u).post(next_url(round_.campaign_id)).data["comparison"] for u in users]
    # then
    assert got[0] == got[1]
    assert got[2] != got[0]


def test_comparison_next_never_gives_an_annotator_a_comparison_they_rated(open_round, annotator_client):
    # given
    seen = []
    # when: rate until no work is left
    for _ in range(10):
        answer = annotator_client.post(next_url(open_round.campaign_id))
        if answer.status_code == 204:
            break
        seen.append(answer.data["comparison"])
        assert rate(annotator_client, answer.data["comparison"]).status_code == 201
    # then: each of the round's three comparisons exactly once
    assert sorted(seen) == sorted(open_round.comparisons.values_list("pk", flat=True))
    assert annotator_client.post(next_url(open_round.campaign_id)).status_code == 204


def test_comparison_next_returns_expired_leases_to_the_pool(make_open_round, annotator, other_annotator, api_client_for):
    # given: k=1 and the only comparison leased by someone whose lease ran out
    round_ = make_open_round(prompts=1, overlap=1, annotators=[annotator, other_annotator])
    taken = api_client_for(annotator).post(next_url(round_.campaign_id)).data["comparison"]
    assert api_client_for(other_annotator).post(next_url(round_.campaign_id)).status_code == 204
    Lease.objects.filter(annotator=annotator).update(leased_until=timezone.now() - timedelta(seconds=1))
    # when
    answer = api_client_for(other_annotator).post(next_url(round_.campaign_id))
    # then
    assert answer.status_code == 200
    assert answer.data["comparison"] == taken


def test_comparison_next_never_tells_the_annotator_which_policy_wrote_which_side(open_round, annotator_client):
    # when
    answer = annotator_client.post(next_url(open_round.campaign_id))
    # then: nothing about policies, versions, sides or paths
    body = answer.content.decode()
    assert set(answer.data) == {
        "comparison", "round", "prompt", "prompt_turns", "response_a", "response_b", "response_a_truncated",
        "response_b_truncated", "answers", "leased_until", "progress", "round_progress",
    }
    for leak in ("candidate", "baseline", "policy", "version", "sha256", "/nonexistent/store"):
        assert leak not in body


def test_comparison_next_skips_comparisons_that_are_full_with_ratings_and_others_leases(make_open_round, make_user):
    # given: k=2; 25 comparisons each hold one rating and one live lease of
    # someone else (full), and one comparison is untouched. The full ones sort
    # first (most ratings first).
    others = [make_user("annotator") for _ in range(2)]
    me = make_user("annotator")
    round_ = make_open_round(prompts=26, overlap=2, annotators=[*others, me])
    comparisons = list(round_.comparisons.order_by("pk"))
    free, full = comparisons[-1], comparisons[:-1]
    now = timezone.now()
    for c in full:
        Rating.objects.create(comparison=c, annotator=others[0], choice="tie")
        Lease.objects.create(comparison=c, annotator=others[0], status="done", leased_at=now, leased_until=now)
        Lease.objects.create(
            comparison=c, annotator=others[1], leased_at=now, leased_until=now + timedelta(minutes=5)
        )
    Comparison.objects.filter(pk__in=[c.pk for c in full]).update(rating_count=1)
    # when
    lease = comparison_lease_next(annotator=me, campaign=round_.campaign)
    # then
    assert lease is not None, "work is left, yet the annotator was told there is none"
    assert lease.comparison_id == free.pk


def test_comparison_next_is_404_for_a_campaign_the_annotator_is_not_in(open_round, make_user, api_client_for):
    # given
    outsider = api_client_for(make_user("annotator"))
    # when
    answer = outsider.post(next_url(open_round.campaign_id))
    # then
    assert answer.status_code == 404
    assert Lease.objects.count() == 0


def test_campaign_list_shows_an_annotator_only_their_campaigns(open_round, make_open_round, annotator_client):
    # given: a second campaign the annotator is not in
    make_open_round(prompts=1, annotators=[UserFactory(roles=["annotator"])])
    # when
    answer = annotator_client.get("/api/campaigns/")
    # then
    assert answer.status_code == 200
    assert [c["id"] for c in answer.data] == [open_round.campaign_id]


def test_lease_renew_extends_a_live_lease(open_round, annotator_client, annotator):
    # given
    comparison = annotator_client.post(next_url(open_round.campaign_id)).data["comparison"]
    Lease.objects.filter(annotator=annotator).update(leased_until=timezone.now() + timedelta(seconds=5))
    # when
    answer = annotator_client.post(f"/api/comparisons/{comparison}/renew/")
    # then
    assert answer.status_code == 200
    assert Lease.objects.get(annotator=annotator).leased_until > timezone.now() + timedelta(seconds=500)


def test_comparison_skip_gives_the_slot_back_and_the_annotator_never_gets_it_again(
    make_open_round, annotator, other_annotator, api_client_for
):
    # given: k=1, one comparison, leased by me
    round_ = make_open_round(prompts=1, overlap=1, annotators=[annotator, other_annotator])
    me = api_client_for(annotator)
    comparison = me.post(next_url(round_.campaign_id)).data["comparison"]
    # when
    answer = me.post(f"/api/comparisons/{comparison}/skip/", {"reason": "I can't read this language"}, format="json")
    # then
    assert answer.status_code == 200
    assert me.post(next_url(round_.campaign_id)).status_code == 204
    assert api_client_for(other_annotator).post(next_url(round_.campaign_id)).data["comparison"] == comparison
    assert rate(me, comparison).status_code == 409


def test_comparison_skip_without_a_reason_is_400_and_keeps_the_lease(open_round, annotator_client, annotator):
    comparison = annotator_client.post(next_url(open_round.campaign_id)).data["comparison"]
    answer = annotator_client.post(f"/api/comparisons/{comparison}/skip/", {"reason": "  "}, format="json")
    assert answer.status_code == 400
    assert Lease.objects.get(annotator=annotator).status == Lease.Status.LEASED


def test_comparison_next_with_exclude_prefetches_a_second_lease_and_no_third(open_round, annotator_client):
    # given
    url = next_url(open_round.campaign_id)
    first = annotator_client.post(url).data["comparison"]
    # when
    second = annotator_client.post(url, {"exclude": [first]}, format="json")
    third = annotator_client.post(url, {"exclude": [first, second.data["comparison"]]}, format="json")
    # then
    assert second.status_code == 200 and second.data["comparison"] != first
    assert third.status_code == 409
    assert Lease.objects.count() == 2


def test_comparison_next_says_which_answer_was_cut_at_the_token_limit(open_round, annotator_client):
    # given: every second sample cut at the limit (as the generate stage records it)
    from annotate.models import Answer

    Answer.objects.filter(prompt__campaign=open_round.campaign, sample_index=1).update(metadata={"truncated": True})
    # when
    answer = annotator_client.post(next_url(open_round.campaign_id))
    # then: the flags follow the answers, side by side
    comparison = Comparison.objects.select_related("response_a", "response_b").get(pk=answer.data["comparison"])
    assert answer.data["response_a_truncated"] is (comparison.response_a.sample_index == 1)
    assert answer.data["response_b_truncated"] is (comparison.response_b.sample_index == 1)
    assert answer.data["response_a_truncated"] != answer.data["response_b_truncated"]


def progress_url(campaign_id: int) -> str:
    return f"/api/campaigns/{campaign_id}/progress/"


def test_progress_gives_the_annotators_own_counts_in_the_round_and_the_campaign(
    open_round, annotator, annotator_client
):
    # given: two ratings by this annotator
    for _ in range(2):
        comparison = annotator_client.post(next_url(open_round.campaign_id)).data["comparison"]
        assert rate(annotator_client, comparison).status_code == 201
    # when
    body = annotator_client.get(progress_url(open_round.campaign_id)).json()
    # then
    assert body["mine"] == {"mine_today": 2, "mine_in_campaign": 2, "mine_in_round": 2}
    assert body["round"]["round"] == 0 and body["round"]["status"] == "collecting"
    assert (body["round"]["ratings"], body["round"]["target_ratings"]) == (2, 6)
    assert body["training"] is None and body["auto_train"] is open_round.campaign.auto_train
    assert (body["round"]["candidate_version"], body["round"]["baseline_version"]) == (0, 0)


def _past_run(campaign, seconds: dict):
    from annotate.models import TrainingRun

    return TrainingRun.objects.create(
        campaign=campaign, kind=TrainingRun.Kind.TRAIN, status=TrainingRun.Status.SUCCEEDED,
        stages={name: {"status": "succeeded", "seconds": s} for name, s in seconds.items()},
    )


def test_progress_while_training_estimates_the_time_left_from_earlier_rounds(
    open_round, annotator, annotator_client, enqueued
):
    from statistics import median

    from annotate.training.bookkeeping import training_stage_begin
    from annotate.training.runs import training_run_start
    from annotate.training.stages import STAGES

    campaign = open_round.campaign
    comparison = annotator_client.post(next_url(campaign.pk)).data["comparison"]
    assert rate(annotator_client, comparison).status_code == 201
    run = training_run_start(campaign=campaign)
    # without history: no figure
    body = annotator_client.get(progress_url(campaign.pk)).json()
    assert body["round"]["status"] == "training"
    assert body["training"] == {"run_status": "queued", "stage": "snapshot", "eta_seconds": None}
    # given: three earlier rounds timed stage by stage
    stages = STAGES["train"]
    timed = [{name: 60.0 * (i + 1) * (j + 1) for j, name in enumerate(stages)} for i in range(3)]
    for seconds in timed:
        _past_run(campaign, seconds)
    typical = {name: median(t[name] for t in timed) for name in stages}
    # when: queued, every stage is still to come
    body = annotator_client.get(progress_url(campaign.pk)).json()
    assert body["training"]["eta_seconds"] == round(sum(typical.values()))
    # and: the snapshot done, the reward stage running for 90 s
    training_stage_begin(run_id=run.pk, stage="snapshot")
    from annotate.training.bookkeeping import training_stage_succeed

    training_stage_succeed(run_id=run.pk, stage="snapshot", outputs={})
    training_stage_begin(run_id=run.pk, stage="sft")
    training_stage_succeed(run_id=run.pk, stage="sft", outputs={"skipped": True})
    training_stage_begin(run_id=run.pk, stage="reward")
    run.refresh_from_db()
    started = timezone.now() - timedelta(seconds=90)
    run.stages["reward"]["started_at"] = started.isoformat()
    run.save(update_fields=["stages"])
    body = annotator_client.get(progress_url(campaign.pk)).json()
    left = sum(typical[n] for n in stages[stages.index("reward") + 1:]) + typical["reward"] - 90
    # within the second or two the request took
    assert left - 3 <= body["training"]["eta_seconds"] <= left
    assert body["training"]["stage"] == "reward"
