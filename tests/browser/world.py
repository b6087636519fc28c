"""A campaign as it looks after a few turns of the loop, for tests that open
every page (test_every_page.py): every page then has something to show.

- a loop campaign: v0..v3, rounds 0-2 rated by two annotators each and done,
  round 3 collecting with half its comparisons rated (the rest left for
  `rater`, who opens the rating page); gold pairs, some comparisons gold;
  a pool of six with one paused and one with a daily limit; a finished
  bootstrap run and a finished training run per later version (every stage
  succeeded, metrics and their history), reward model versions, policy
  versions with their run and reward model; an endpoint with a finished
  generation job (one prompt failed) and its answers; an export;
- an evaluation campaign: three imported models' answers, started, its
  round rated in full by others (`rater` finds nothing left to rate).

Built with bulk_create where rows are many, through the services where the
rows have rules (gold import, round opening, evaluation start). No ML runs;
model files are fake paths. `lead` is staff and both a campaign admin and
an ML engineer, so every console control shows."""
import hashlib
import math
import random
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db.models import F
from django.utils import timezone

from annotate.models import (
    Answer,
    Campaign,
    Comparison,
    Demonstration,
    Export,
    ExternalModel,
    GenerationFailure,
    GenerationJob,
    Membership,
    PolicyVersion,
    Prompt,
    Rating,
    RewardModelVersion,
    Role,
    Round,
    SFTModelVersion,
    TrainingRun,
)

User = get_user_model()

INSTRUCTIONS = "# How to rate\n\nPrefer the **correct** answer; then the clearer one.\n\n- Ties are fine.\n"


@dataclass
class World:
    lead: User  # staff, campaign admin and ML engineer
    rater: User  # an annotator of both campaigns, with comparisons left to rate in `campaign` only
    campaign: Campaign  # the loop campaign
    evaluation: Campaign
    run: TrainingRun  # the latest finished training run of `campaign`
    endpoint: ExternalModel
    job: GenerationJob
    versions: list[PolicyVersion]
    demonstration: Demonstration  # pending review, in `campaign`


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _stage(seconds: float, outputs: dict, at) -> dict:
    return {"status": "succeeded", "attempts": 1, "seconds": seconds, "outputs": outputs,
            "started_at": (at - timedelta(seconds=seconds)).isoformat(), "finished_at": at.isoformat()}


def _one_after_another(end, stages: list[tuple[str, float, dict]]) -> dict:
    """Stage records run back to back, the last finishing at `end`."""
    records, at = {}, end
    for name, seconds, outputs in reversed(stages):
        records[name] = _stage(seconds, outputs, at)
        at -= timedelta(seconds=seconds)
    return dict(reversed(list(records.items())))


def _history(v: int) -> list[dict]:
    """A training run's curves: reward loss falling, accuracy rising, a
    held-out evaluation at the end, then the policy step's KL and reward."""
    rows = [{"stage": "reward", "step": s, "reward/loss": 0.69 * math.exp(-s / 12) + 0.1,
             "reward/accuracy": min(0.95, 0.5 + s / 60), "reward/margin": s / 40} for s in range(1, 31)]
    rows.append({"stage": "reward", "step": 30, "eval/reward/loss": 0.42, "eval/reward/accuracy": 0.64 + v / 50})
    rows += [{"stage": "policy", "step": s, "policy/loss": 0.3 - s / 100, "policy/kl": 0.002 * s * v,
              "policy/reward_mean": -0.4 + s / 25 + v / 10} for s in range(1, 21)]
    return rows


def _rate(comparisons, raters, rng, *, per_comparison: int) -> list[Rating]:
    rows = []
    for n, c in enumerate(comparisons):
        for j in range(per_comparison):
            choice = rng.choice(["A", "A", "B", "B", "tie", "both_bad"])
            rows.append(Rating(
                comparison_id=c.pk, annotator=raters[(n + j) % len(raters)], choice=choice,
                strength=rng.choice([1, 2, 3]) if choice in ("A", "B") else None,
                reason="A is correct and shorter." if n % 5 == 0 else "", time_on_task_ms=rng.randint(4_000, 90_000),
            ))
    return rows


def build_world(*, prompts: int = 12, versions: int = 4) -> World:
    from annotate.services.evaluation import evaluation_start
    from annotate.services.gold import gold_import
    from annotate.services.rounds import round_open
    from tests.factories import UserFactory, evaluation_campaign, ratings_bulk_create

    rng = random.Random(17)
    now = timezone.now()
    lead = UserFactory(username="lead", roles=[Role.CAMPAIGN_ADMIN, Role.ML_ENGINEER])
    User.objects.filter(pk=lead.pk).update(is_staff=True)
    lead.refresh_from_db()
    rater = UserFactory(username="rater", roles=[Role.ANNOTATOR])
    others = [UserFactory(username=f"annotator{i}", roles=[Role.ANNOTATOR]) for i in range(5)]

    campaign = Campaign.objects.create(
        name="Loop campaign", instructions=INSTRUCTIONS, overlap=2, comparisons_per_round=prompts,
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct", auto_train=True, status=Campaign.Status.ACTIVE,
        created_by=lead,
    )
    campaign.admins.add(lead)
    Membership.objects.bulk_create(
        [Membership(campaign=campaign, annotator=rater)]
        + [Membership(campaign=campaign, annotator=u, daily_limit=50 if i == 1 else None,
                      status="paused" if i == 4 else "active", paused_reason="gold accuracy 40% (2 of 5)" if i == 4 else "")
           for i, u in enumerate(others)]
    )
    rows = Prompt.objects.bulk_create(
        Prompt(campaign=campaign, external_id=f"p{i}",
               text=f"Question {i}: why is the sky blue? Answer in **two** sentences.") for i in range(prompts)
    )
    gold_import(campaign=campaign, data="\n".join(
        f'{{"external_id": "g{i}", "prompt": "What is {i} + {i}?", "chosen": "{2 * i}", "rejected": "{2 * i + 1}"}}'
        for i in range(4)
    ).encode())

    # Runs and versions in the order training makes them: bootstrap writes v0
    # and opens round 0; the run on round i writes reward v(i+1) and policy
    # v(i+1) and opens round i+1.
    bootstrap = TrainingRun.objects.create(
        campaign=campaign, kind=TrainingRun.Kind.BOOTSTRAP, stage="open", status=TrainingRun.Status.SUCCEEDED,
        progress=1.0, triggered_by=lead, started_at=now - timedelta(days=versions + 1), finished_at=now - timedelta(days=versions),
        stages={name: _stage(s, {}, now - timedelta(days=versions)) for name, s in (("import", 31.0), ("generate", 64.0), ("open", 0.1))},
    )
    chain = [PolicyVersion.objects.create(campaign=campaign, version=0, path="/store/policy-v0", sha256=_sha("v0"),
                                          training_run=bootstrap)]
    answer_rows = [Answer(prompt=p, policy_version=chain[0], sample_index=s, text=f"v0, sample {s}: Rayleigh scattering of {p.external_id}.")
                   for p in rows for s in (0, 1)]
    Answer.objects.bulk_create(answer_rows)
    rounds = [round_open(campaign=campaign, index=0, candidate=chain[0], baseline=chain[0])]
    run = None
    for v in range(1, versions):
        done_at = now - timedelta(days=versions - v)
        round_ = rounds[-1]
        run = TrainingRun.objects.create(
            campaign=campaign, round=round_, kind=TrainingRun.Kind.TRAIN, stage="open",
            status=TrainingRun.Status.SUCCEEDED, progress=1.0, triggered_by=None, config={
                "method": "rloo", "reward": {"epochs": 2, "lr": 3e-5}, "policy": {"beta": 0.05, "k": 4},
            },
            dataset_path=f"/store/datasets/run-{v}", dataset_sha256=_sha(f"dataset {v}"),
            started_at=done_at - timedelta(minutes=5), finished_at=done_at, metrics_history=_history(v),
            # The first train run fine-tuned on demonstrations (base -> s1 -> v1); the others had none new.
            sft_dataset_path=f"/store/datasets/run-{v}-sft" if v == 1 else "",
            sft_dataset_sha256=_sha(f"sft dataset {v}") if v == 1 else "",
            stages=_one_after_another(done_at, [
                ("snapshot", 0.4, {"pairs": 20 + v}),
                ("sft", 12.5, {"sft_version": 1, "start_version": 0, "conversations": 7}) if v == 1 else
                ("sft", 0.1, {"skipped": True, "reason": "no accepted demonstrations that an earlier SFT model has not learned"}),
                ("reward", 31.8, {"reward_version": v}),
                ("policy", 182.3, {"policy_version": v}), ("generate", 64.1, {"answers": prompts}),
                ("open", 0.1, {"round": v}),
            ]),
        )
        # Queued a little before it started, as a real run is (created_at is set on insert).
        TrainingRun.objects.filter(pk=run.pk).update(created_at=run.started_at - timedelta(seconds=20))
        run.refresh_from_db()
        run.metrics = {k: val for row in run.metrics_history for k, val in row.items() if "/" in k}
        run.save(update_fields=["metrics"])
        reward = RewardModelVersion.objects.create(
            campaign=campaign, version=v, path=f"/store/reward-v{v}", sha256=_sha(f"r{v}"), training_run=run,
            dataset_sha256=run.dataset_sha256, metrics={"eval/reward/accuracy": 0.64 + v / 50, "eval/reward/loss": 0.42},
        )
        sft = SFTModelVersion.objects.create(
            campaign=campaign, version=1, start=chain[-1], path="/store/sft-s1", sha256=_sha("s1"), training_run=run,
            dataset_path=run.sft_dataset_path, dataset_sha256=run.sft_dataset_sha256, demonstration_ids=list(range(1, 8)),
            metrics={"sft/loss": 1.91, "eval/sft/loss": 2.07, "eval/sft/token_accuracy": 0.41, "sft/steps": 14},
        ) if v == 1 else None
        chain.append(PolicyVersion.objects.create(
            campaign=campaign, version=v, parent=chain[-1], path=f"/store/policy-v{v}", sha256=_sha(f"v{v}"),
            training_run=run, reward_model=reward, sft_model=sft,
            metrics={"policy/kl": 0.04 * v, "policy/reward_mean": 0.1 * v},
        ))
        # Later versions write more: the newest answers are longer than a
        # screen, so that the rating page scrolls at both widths.
        Answer.objects.bulk_create(
            Answer(prompt=p, policy_version=chain[-1], sample_index=0, text="\n\n".join(
                [f"## v{v} on {p.external_id}"]
                + [f"Paragraph {n}: light is scattered by molecules; **blue** scatters most. " * 2 for n in range(4 * v * v)]
                + ["```python\ndef scattering(wavelength):\n    return 1 / wavelength ** 4\n```"]
            ))
            for p in rows
        )
        Round.objects.filter(pk=round_.pk).update(status=Round.Status.DONE, closed_at=done_at)
        rounds.append(round_open(campaign=campaign, index=v, candidate=chain[v], baseline=chain[v - 1]))

    raters = [rater, *others[:4]]
    for round_ in rounds[:-1]:
        ratings_bulk_create({"comparison_id": r.comparison_id, "annotator": r.annotator, "choice": r.choice,
                             "strength": r.strength, "reason": r.reason, "time_on_task_ms": r.time_on_task_ms}
                            for r in _rate(round_.comparisons.order_by("pk"), raters, rng, per_comparison=2))
    open_half = list(rounds[-1].comparisons.order_by("pk"))
    ratings_bulk_create({"comparison_id": r.comparison_id, "annotator": r.annotator, "choice": r.choice,
                         "strength": r.strength, "time_on_task_ms": r.time_on_task_ms}
                        for r in _rate(open_half[: len(open_half) // 2], others[:4], rng, per_comparison=1))
    # Ratings over the days the rounds ran, not all at this instant.
    for age, round_ in enumerate(reversed(rounds)):
        Rating.objects.filter(comparison__round=round_).update(
            created_at=F("created_at") - timedelta(days=age, minutes=7)
        )
    Comparison.objects.filter(round__campaign=campaign, pk__in=[c.pk for c in open_half[::4]]).update(gold_choice="A")

    endpoint = ExternalModel.objects.create(
        campaign=campaign, name="smol-server", kind=ExternalModel.Kind.ENDPOINT, base_url="http://127.0.0.1:9/v1",
        model_name="SmolLM2-135M-Instruct", generation={"max_tokens": 64, "temperature": 0.7}, created_by=lead,
    )
    job = GenerationJob.objects.create(
        model=endpoint, status=GenerationJob.Status.SUCCEEDED, prompts_total=prompts, answered=prompts - 1, failed=1,
        prompt_tokens=40 * prompts, completion_tokens=60 * prompts, requests=prompts + 2, created_by=lead,
        started_at=now - timedelta(minutes=3), finished_at=now - timedelta(minutes=2),
    )
    Answer.objects.bulk_create(
        Answer(prompt=p, external_model=endpoint, sample_index=0, text=f"The server's answer to {p.external_id}.")
        for p in rows[1:]
    )
    GenerationFailure.objects.create(job=job, prompt=rows[0], attempts=3, error="HTTP 500 from the server: model overloaded")
    Export.objects.create(
        campaign=campaign, kind=Export.Kind.PREFERENCES, format=Export.Format.JSONL, path="/store/exports/1.jsonl",
        sha256=_sha("export"), rows=24, size_bytes=9_876, created_by=lead,
    )

    evaluation, _ = evaluation_campaign(models=3, prompts=10, annotators=raters, name="Evaluation campaign",
                                        instructions=INSTRUCTIONS, comparisons_per_round=18)
    evaluation.admins.add(lead)
    evaluation_start(campaign=evaluation)
    evaluation.refresh_from_db()
    comparisons = list(Comparison.objects.filter(round__campaign=evaluation).order_by("pk"))
    ratings_bulk_create({"comparison_id": r.comparison_id, "annotator": r.annotator, "choice": r.choice,
                         "strength": r.strength, "time_on_task_ms": r.time_on_task_ms}
                        for r in _rate(comparisons, others[:4], rng, per_comparison=evaluation.overlap))
    # A demonstration waiting for review: an annotator's edit of the answer they chose.
    rating = Rating.objects.filter(comparison__round__campaign=campaign, choice=Rating.Choice.A).select_related(
        "comparison__response_a").first()
    original = rating.comparison.response_a.text
    edited = original + "\n\nIn short: the second step is the one that matters."
    demonstration = Demonstration.objects.create(
        comparison=rating.comparison, rating=rating, annotator=rating.annotator, origin=Demonstration.Origin.A,
        text=edited, submitted_text=edited, time_on_task_ms=41_000, diff_chars=len(edited) - len(original),
    )
    Campaign.objects.filter(pk=campaign.pk).update(demonstrations=Campaign.Demonstrations.OPTIONAL)
    campaign.refresh_from_db()
    return World(lead=lead, rater=rater, campaign=campaign, evaluation=evaluation, run=run, endpoint=endpoint,
                 job=job, versions=chain, demonstration=demonstration)


@pytest.fixture
def world(transactional_db) -> World:
    return build_world()
