import logging
import random
from typing import TypedDict

from django.db import connection, transaction
from django.db.models import Exists, OuterRef

from annotate.errors import Conflict
from annotate.models import Campaign, Comparison, PolicyVersion, Prompt, Answer, Round, TrainingRun
from annotate.selectors.rounds import round_is_complete
from annotate.services.gold import gold_comparisons_for_round
from annotate.training.runs import training_run_start
from config.celery import task_named

log = logging.getLogger(__name__)

ROUND_PROGRESS_CHECK_TASK = "annotate.tasks.round_progress_check_task"  # kwargs: round_id


def round_prompts(*, campaign: Campaign, index: int, pool: int = 1) -> list[Prompt]:
    """The prompts a round asks about: the next comparisons_per_round prompts
    of the campaign, wrapping around, so consecutive rounds cover new ground.
    Gold-pair prompts are not among them: their answers come with the pair.
    `pool` > 1: that many times as many from the same start (at most every
    prompt once), the candidates a selecting round picks among
    (annotate/training/selection.py)."""
    prompts = list(campaign.prompts.filter(gold_pairs__isnull=True).order_by("pk"))
    n = min(campaign.comparisons_per_round, len(prompts))
    start = (index * n) % len(prompts) if prompts else 0
    return [prompts[(start + i) % len(prompts)] for i in range(min(n * pool, len(prompts)))]


class RoundSelection(TypedDict, total=False):
    """How a round's comparisons were chosen (the generate stage's outputs
    "selection", annotate/training/selection.py)."""

    strategy: str  # the one used: random when the campaign's fell back
    note: str  # why it fell back ("no reward model yet"); "" otherwise
    # [{"prompt": pk, "candidate_sample", "baseline_sample", "reason", "score"}]
    # in the order picked; None: round_prompts, every one "random".
    picks: list[dict] | None


def _round_choice(*, campaign: Campaign, index: int, selection: RoundSelection | None,
                  baseline_sample: int) -> tuple[list[Prompt], dict[int, tuple]]:
    """(the round's prompts, {prompt pk: (candidate sample, baseline sample, reason, score)})."""
    picks = (selection or {}).get("picks")
    if picks is None:
        prompts = round_prompts(campaign=campaign, index=index)
        return prompts, {p.pk: (0, baseline_sample, Comparison.SelectionReason.RANDOM, None) for p in prompts}
    by_pk = campaign.prompts.in_bulk([p["prompt"] for p in picks])
    chosen = {p["prompt"]: (p["candidate_sample"], p["baseline_sample"], p["reason"], p["score"]) for p in picks}
    return [by_pk[p["prompt"]] for p in picks], chosen


@transaction.atomic
def round_open(*, campaign: Campaign, index: int, candidate: PolicyVersion, baseline: PolicyVersion,
               selection: RoundSelection | None = None) -> Round:
    """Open round `index`: one comparison per prompt, candidate against
    baseline answers, sides randomised and recorded (a k-set of rank_k
    answers where the campaign ranks: _k_set_comparison), each with why it
    was chosen (`selection`'s picks, or the prompts in turn); where the campaign has
    a reference model, also the candidate against the reference's answer on
    each of the round's prompts it answered (placed at random among the
    others, counted in the round like them); plus copies of gold pairs
    (campaign.gold_frequency of that number) placed at random among them,
    so that annotators meet them all through the round and can't tell them
    apart. Opening twice returns the first round (the open stage is safe to
    run again)."""
    existing = Round.objects.filter(campaign=campaign, index=index).first()
    if existing is not None:
        return existing
    round_ = Round.objects.create(
        campaign=campaign, index=index, candidate=candidate, baseline=baseline,
        selection_strategy=(selection or {}).get("strategy") or Campaign.Selection.RANDOM,
        selection_note=(selection or {}).get("note") or "",
    )
    # Round 0 compares two samples of the base model; later rounds compare
    # the new policy's first sample with the previous policy's (or the samples picked).
    baseline_sample = 1 if candidate.pk == baseline.pk else 0
    prompts, chosen = _round_choice(campaign=campaign, index=index, selection=selection, baseline_sample=baseline_sample)
    responses = {
        (r.prompt_id, r.policy_version_id, r.sample_index): r
        for r in Answer.objects.filter(prompt__in=prompts, policy_version__in=[candidate, baseline])
    }
    rng = random.Random(f"{campaign.pk}:{index}")
    comparisons = []
    for prompt in prompts:
        new_sample, old_sample, reason, score = chosen[prompt.pk]
        if campaign.rank_k > 2:
            k_set = _k_set_comparison(round_=round_, prompt=prompt, responses=responses, rng=rng)
            k_set.selection_reason, k_set.selection_score = reason, score
            comparisons.append(k_set)
            continue
        new = responses.get((prompt.pk, candidate.pk, new_sample))
        old = responses.get((prompt.pk, baseline.pk, old_sample))
        if new is None or old is None:
            raise RuntimeError(
                f"Prompt {prompt.external_id} has no answer from policy v{candidate.version if new is None else baseline.version}; "
                "run the generate stage first."
            )
        candidate_is_a = rng.random() < 0.5
        a, b = (new, old) if candidate_is_a else (old, new)
        comparisons.append(
            Comparison(round=round_, prompt=prompt, response_a=a, response_b=b, candidate_is_a=candidate_is_a,
                       selection_reason=reason, selection_score=score)
        )
    # Leases go out in pk order (among equally rated comparisons): reference
    # and gold pairs at random positions are served all along the round, not last.
    reference_rng = random.Random(f"reference:{campaign.pk}:{index}")
    for pair in _reference_comparisons(round_=round_, prompts=prompts, candidate=candidate, rng=reference_rng):
        comparisons.insert(reference_rng.randint(0, len(comparisons)), pair)
    gold_rng = random.Random(f"gold-order:{campaign.pk}:{index}")
    for gold in gold_comparisons_for_round(round_=round_, n_regular=len(comparisons)):
        gold.selection_reason = Comparison.SelectionReason.GOLD
        comparisons.insert(gold_rng.randint(0, len(comparisons)), gold)
    Comparison.objects.bulk_create(comparisons)
    Round.objects.filter(campaign=campaign, index__lt=index).exclude(status=Round.Status.DONE).update(
        status=Round.Status.DONE
    )
    transaction.on_commit(comparisons_analyze)
    return round_


def k_set_samples(*, campaign: Campaign, candidate: PolicyVersion, baseline: PolicyVersion) -> list[tuple[int, int]]:
    """The (policy version id, sample index) answers a k-set of a loop round
    shows, k = campaign.rank_k: round 0 (the base against itself) k samples
    of the base; later rounds k - 1 samples of the candidate and the
    baseline's first, so each set still meets the previous policy."""
    k = campaign.rank_k
    if candidate.pk == baseline.pk:
        return [(candidate.pk, s) for s in range(k)]
    return [(candidate.pk, s) for s in range(k - 1)] + [(baseline.pk, 0)]


def _k_set_comparison(*, round_: Round, prompt: Prompt, responses: dict, rng) -> Comparison:
    """An unsaved k-set: the answers k_set_samples names, in a random display
    order recorded in `answers` (1..k on the page); response_a and
    response_b are the first two shown. candidate_is_a is null: who wrote
    each position is read from its answer."""
    wanted = k_set_samples(campaign=round_.campaign, candidate=round_.candidate, baseline=round_.baseline)
    shown = []
    for version_id, sample in wanted:
        answer = responses.get((prompt.pk, version_id, sample))
        if answer is None:
            raise RuntimeError(
                f"Prompt {prompt.external_id} has no answer {sample} from policy version id {version_id}; "
                "run the generate stage first."
            )
        shown.append(answer)
    rng.shuffle(shown)
    return Comparison(round=round_, prompt=prompt, response_a=shown[0], response_b=shown[1], candidate_is_a=None,
                      answers=[a.pk for a in shown])


def _reference_comparisons(*, round_: Round, prompts: list[Prompt], candidate: PolicyVersion, rng) -> list[Comparison]:
    """Unsaved comparisons of the candidate's first answer against the
    campaign's reference model's (its first sample) on each of `prompts` the
    reference answered, sides random and recorded in candidate_is_a. None
    without a reference model (or one of another campaign)."""
    campaign = round_.campaign
    reference_id = campaign.reference_model_id
    if reference_id is None:
        return []
    theirs: dict[int, int] = {}
    for prompt_id, answer_id in (
        Answer.objects.filter(prompt__in=prompts, external_model_id=reference_id, external_model__campaign=campaign)
        .order_by("-sample_index", "-pk")
        .values_list("prompt_id", "pk")
    ):
        theirs[prompt_id] = answer_id  # the last written wins: the lowest sample index
    ours = dict(
        Answer.objects.filter(prompt__in=prompts, policy_version=candidate, sample_index=0).values_list("prompt_id", "pk")
    )
    comparisons = []
    for prompt in prompts:
        if prompt.pk not in theirs or prompt.pk not in ours:
            continue
        candidate_is_a = rng.random() < 0.5
        a, b = (ours[prompt.pk], theirs[prompt.pk]) if candidate_is_a else (theirs[prompt.pk], ours[prompt.pk])
        comparisons.append(
            Comparison(round=round_, prompt=prompt, response_a_id=a, response_b_id=b, candidate_is_a=candidate_is_a,
                       selection_reason=Comparison.SelectionReason.REFERENCE)
        )
    return comparisons


def comparisons_analyze() -> None:
    """Refresh PostgreSQL's statistics of the comparison table once a round's
    comparisons are in: with a fresh table's (none yet; autovacuum comes a
    minute or more later), the planner takes the lease query for a few rows
    and sorts the whole round on every next call instead of walking the
    lease-order index (~30 ms instead of ~0.1 ms at 2,600 comparisons)."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Comparison._meta.db_table}")


def round_progress_check(*, round_id: int) -> TrainingRun | None:
    """Start training when the round has every rating it wants and the
    campaign trains by itself. Safe to run any number of times."""
    round_ = Round.objects.select_related("campaign").get(pk=round_id)
    campaign = round_.campaign
    if round_.status != Round.Status.COLLECTING or not campaign.auto_train:
        return None
    if campaign.kind == Campaign.Kind.EVALUATION:
        return None  # nothing to train: the round collects until the admins stop adding comparisons
    if not round_is_complete(round_=round_):
        return None
    try:
        return training_run_start(campaign=campaign)
    except Conflict as exc:
        # e.g. every rating was a tie: nothing to train on. The round stays
        # open; an engineer can still trigger training or extend it.
        log.warning("round %s is complete but not trained on: %s", round_id, exc.message)
        return None


def round_progress_check_enqueue(*, round_id: int, overlap: int | None = None) -> None:
    """Queue round_progress_check for after a rating filled a comparison
    (called from transaction.on_commit). The rating is committed already, so
    a broker that is down must neither turn its 2xx into a 5xx nor be
    retried here for long (CELERY_TASK_PUBLISH_RETRY_POLICY bounds the
    wait): the check is logged as not sent and rounds_progress_sweep, run by
    beat, finds the complete round later.

    `overlap` (k): first look whether a regular comparison of the round is
    still short of k ratings (one index probe), and queue nothing if so:
    most filled comparisons don't complete their round. Run after the
    commit, so of ratings that fill the last comparisons at the same moment
    the one committed last sees them all and queues the check."""
    if overlap is not None:
        # SQL: a third of all ratings (k = 3) fill a comparison and run this;
        # as a queryset it cost five times what the statement does (bench/load.py).
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT 1 FROM {Comparison._meta.db_table} WHERE round_id = %s AND gold_choice = ''"
                " AND rating_count < %s LIMIT 1",
                [round_id, overlap],
            )
            if cursor.fetchone() is not None:
                return
    try:
        task_named(ROUND_PROGRESS_CHECK_TASK).delay(round_id=round_id)
    except Exception as exc:  # kombu's OperationalError and whatever the transport raises
        log.warning(
            "round %s: could not queue its progress check (%s: %s); the beat sweep will run it",
            round_id, type(exc).__name__, exc,
        )


def rounds_progress_sweep() -> list[int]:
    """Run round_progress_check on every collecting round of an auto-train
    campaign whose regular comparisons all have k ratings: the rating that
    completed it may have failed to queue the check (broker down) or the
    broker may have lost the message in a restart. Safe to run any number of
    times, and beside the checks the ratings queue: starting a round's
    training returns the existing run. Returns the ids of the rounds
    checked."""
    regular = Comparison.objects.filter(round=OuterRef("pk"), gold_choice="")
    short = regular.filter(rating_count__lt=OuterRef("campaign__overlap"))
    complete = (
        Round.objects.filter(status=Round.Status.COLLECTING, campaign__auto_train=True, campaign__kind=Campaign.Kind.LOOP)
        .filter(Exists(regular))
        .exclude(Exists(short))
        .values_list("pk", flat=True)
    )
    checked = []
    for round_id in complete:
        run = round_progress_check(round_id=round_id)
        if run is not None:
            log.info("round %s was complete with no training started: run %s started by the sweep", round_id, run.pk)
        checked.append(round_id)
    return checked
