"""Evaluation campaigns: no training; the answers of several models (external
models, and policy versions if the campaign has any) to the campaign's
prompts, compared two at a time (docs/evaluation.md).

- `pair_schedule`: which pairs of models meet on which prompt, so that every
  pair of models is compared about equally often and the prompts are used
  about equally often; pure (no Django, no database): the tests and
  bench/pair_schedule.py call it directly.
- `evaluation_start`: open round 0 with comparisons_per_round comparisons
  (no bootstrap run, no base model).
- `evaluation_comparisons_add`: more comparisons in the same round. The
  round is extended rather than a new one opened: annotators are served the
  latest round only, so a new round would strand whatever the last one had
  not finished, and the balance counts every comparison the campaign has,
  so a model added since is paired first.

Sides are random and recorded in the comparison (response_a, response_b);
the annotator API never says which model wrote which side. Gold pairs are
mixed in as in loop rounds (annotate/services/gold.py). The round's
candidate and baseline and each comparison's candidate_is_a stay null.
"""
import heapq
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import NamedTuple

from django.db import transaction

from annotate.errors import Conflict, ValidationFailed
from annotate.models import Answer, Campaign, Comparison, Round
from annotate.services.gold import gold_comparisons_for_round
from annotate.services.rounds import comparisons_analyze

MAX_COMPARISONS_ADDED = 100000  # one call; as comparisons_per_round's limit


class ScheduledPair(NamedTuple):
    prompt: Hashable
    a: Hashable  # the model shown as A
    b: Hashable  # the model shown as B


def pair_schedule(
    answered: Mapping[Hashable, Collection[Hashable]],
    count: int,
    *,
    seed: int | str = 0,
    earlier: Iterable[tuple[Hashable, Hashable, Hashable]] = (),
) -> list[ScheduledPair]:
    """Up to `count` comparisons (prompt, model on side A, model on side B).

    `answered` maps each prompt to the models that answered it; `earlier`
    lists the (prompt, model, model) comparisons already made, which count
    towards the balance and are not made again. Each step takes the pair of
    models compared least so far (ties at random), and for it the prompt
    both answered that has been used least so far (ties at random) and on
    which they have not met; the sides are random. So the counts per pair
    of models differ by at most one while every pair has prompts left, and
    the prompts are used in turn. Fewer than `count` when the pairs run out
    of prompts. Deterministic for a given seed. O(count log(pairs + prompts))
    after an O(prompts x pairs) set-up."""
    rng = random.Random(seed)
    models: dict[Hashable, int] = {}
    for who in answered.values():
        for m in who:
            models.setdefault(m, len(models))
    pair_count: Counter = Counter()
    prompt_count: Counter = Counter()
    met: set = set()
    for prompt, x, y in earlier:
        if x in models and y in models and x != y:
            pair = (x, y) if models[x] < models[y] else (y, x)
            pair_count[pair] += 1
            met.add((prompt, pair))
        prompt_count[prompt] += 1

    # For each pair, a heap of the prompts both answered and have not met on,
    # keyed by how often the prompt was used when it was pushed (refreshed
    # lazily when it is popped).
    offered: dict[tuple, list] = defaultdict(list)
    for prompt, who in answered.items():
        ranked = sorted(set(who), key=models.__getitem__)
        for n, x in enumerate(ranked):
            for y in ranked[n + 1:]:
                if (prompt, (x, y)) not in met:
                    offered[(x, y)].append((prompt_count[prompt], rng.random(), prompt))
    for heap in offered.values():
        heapq.heapify(heap)
    pairs = [(pair_count[pair], rng.random(), pair) for pair in offered]
    heapq.heapify(pairs)

    scheduled: list[ScheduledPair] = []
    while pairs and len(scheduled) < count:
        used, _, pair = heapq.heappop(pairs)
        heap = offered[pair]
        prompt = None
        while heap:
            seen, tie, candidate = heapq.heappop(heap)
            if seen == prompt_count[candidate]:
                prompt = candidate
                break
            heapq.heappush(heap, (prompt_count[candidate], tie, candidate))
        if prompt is None:
            continue  # this pair has met on every prompt both answered
        prompt_count[prompt] += 1
        x, y = pair if rng.random() < 0.5 else (pair[1], pair[0])
        scheduled.append(ScheduledPair(prompt, x, y))
        heapq.heappush(pairs, (used + 1, rng.random(), pair))
    return scheduled


def k_set_schedule(
    answered: Mapping[Hashable, Collection[Hashable]],
    count: int,
    k: int,
    *,
    seed: int | str = 0,
    earlier: Iterable[tuple[Hashable, Collection[Hashable]]] = (),
) -> list[tuple[Hashable, tuple]]:
    """Up to `count` k-sets (prompt, k models in display order) for a
    campaign that ranks k answers: each step takes the prompt used least
    (ties at random) among those k or more models answered, and on it the k
    models shown least so far whose set has not been shown on that prompt
    (`earlier`: the (prompt, models) sets already made); the order is
    random. A prompt with no new set left drops out. Fewer than `count` when
    the sets run out. Deterministic for a given seed; pure, as pair_schedule."""
    rng = random.Random(seed)
    model_count: Counter = Counter()
    prompt_count: Counter = Counter()
    done: set = set()
    for prompt, models in earlier:
        done.add((prompt, frozenset(models)))
        model_count.update(models)
        prompt_count[prompt] += 1
    heap = [(prompt_count[p], rng.random(), p) for p, who in answered.items() if len(set(who)) >= k]
    heapq.heapify(heap)
    tiebreak: dict = {}
    scheduled: list[tuple[Hashable, tuple]] = []
    while heap and len(scheduled) < count:
        _, _, prompt = heapq.heappop(heap)
        who = sorted(set(answered[prompt]), key=lambda m: tiebreak.setdefault(m, rng.random()))
        fresh = [c for c in itertools.combinations(who, k) if (prompt, frozenset(c)) not in done]
        if not fresh:
            continue  # every set of k of its models was shown on it
        chosen = list(min(fresh, key=lambda c: sum(model_count[m] for m in c)))
        rng.shuffle(chosen)
        done.add((prompt, frozenset(chosen)))
        model_count.update(chosen)
        prompt_count[prompt] += 1
        scheduled.append((prompt, tuple(chosen)))
        heapq.heappush(heap, (prompt_count[prompt], rng.random(), prompt))
    return scheduled


# --- the database side --------------------------------------------------------


def _model_key(policy_version_id: int | None, external_model_id: int | None) -> tuple[str, int] | None:
    if external_model_id is not None:
        return ("external", external_model_id)
    if policy_version_id is not None:
        return ("policy", policy_version_id)
    return None  # a gold pair's answer: no model wrote it


def _answers_by_model(campaign: Campaign) -> tuple[dict[int, list], dict[tuple, int]]:
    """({prompt id: models that answered it}, {(prompt id, model): the answer
    compared}); a model's first sample where it has several. Gold pairs'
    prompts are left out (their answers come with the pair)."""
    rows = (
        Answer.objects.filter(prompt__campaign=campaign, prompt__gold_pairs__isnull=True)
        .exclude(policy_version__isnull=True, external_model__isnull=True)
        .order_by("prompt_id", "sample_index", "pk")
        .values_list("pk", "prompt_id", "policy_version_id", "external_model_id")
    )
    answered: dict[int, list] = defaultdict(list)
    answer_of: dict[tuple, int] = {}
    for pk, prompt_id, policy_version_id, external_model_id in rows.iterator(chunk_size=5000):
        key = (prompt_id, _model_key(policy_version_id, external_model_id))
        if key not in answer_of:
            answer_of[key] = pk
            answered[prompt_id].append(key[1])
    return answered, answer_of


def _earlier(campaign: Campaign) -> list[tuple]:
    rows = (
        Comparison.objects.filter(round__campaign=campaign, gold_choice="")
        .values_list(
            "prompt_id", "response_a__policy_version_id", "response_a__external_model_id",
            "response_b__policy_version_id", "response_b__external_model_id",
        )
    )
    return [(prompt, _model_key(pa, ea), _model_key(pb, eb)) for prompt, pa, ea, pb, eb in rows.iterator(chunk_size=5000)]


def _comparisons_schedule(*, round_: Round, count: int) -> int:
    """Add up to `count` scheduled comparisons to the round, and gold pairs
    (campaign.gold_frequency of that number) at random places among them.
    Returns the regular comparisons added."""
    campaign = round_.campaign
    answered, answer_of = _answers_by_model(campaign)
    earlier = _earlier(campaign)
    seed = f"evaluation:{campaign.pk}:{round_.index}:{len(earlier)}"
    if campaign.rank_k > 2:
        comparisons = _k_sets(round_=round_, answered=answered, answer_of=answer_of, count=count, seed=seed)
    else:
        comparisons = [
            Comparison(
                round=round_, prompt_id=p.prompt, response_a_id=answer_of[(p.prompt, p.a)],
                response_b_id=answer_of[(p.prompt, p.b)], candidate_is_a=None,
            )
            for p in pair_schedule(answered, count, seed=seed, earlier=earlier)
        ]
    if not comparisons:
        return 0
    # A gold pair is mixed into a round once: an extension skips those the
    # round already has.
    have = set(round_.comparisons.exclude(gold_choice="").values_list("prompt_id", flat=True))
    gold_rng = random.Random(f"gold-order:{seed}")
    added = len(comparisons)
    for gold in gold_comparisons_for_round(round_=round_, n_regular=added):
        if gold.prompt_id not in have:
            gold.candidate_is_a = None
            comparisons.insert(gold_rng.randint(0, len(comparisons)), gold)
    Comparison.objects.bulk_create(comparisons)
    transaction.on_commit(comparisons_analyze)
    return added


def _k_sets(*, round_: Round, answered: dict, answer_of: dict, count: int, seed: str) -> list[Comparison]:
    """Unsaved k-sets (campaign.rank_k answers of distinct models to one
    prompt, k_set_schedule), balanced with the campaign's earlier k-sets."""
    models_of = {pk: model for (_, model), pk in answer_of.items()}
    earlier = [
        (prompt, [models_of.get(pk) for pk in shown])
        for prompt, shown in Comparison.objects.filter(round__campaign=round_.campaign, gold_choice="")
        .exclude(answers=[]).values_list("prompt_id", "answers").iterator(chunk_size=5000)
    ]
    comparisons = []
    for prompt, models in k_set_schedule(answered, count, round_.campaign.rank_k, seed=seed, earlier=earlier):
        shown = [answer_of[(prompt, m)] for m in models]
        comparisons.append(Comparison(round=round_, prompt_id=prompt, response_a_id=shown[0], response_b_id=shown[1],
                                      candidate_is_a=None, answers=shown))
    return comparisons


def _models_check(campaign: Campaign) -> None:
    answered, _ = _answers_by_model(campaign)
    models = {m for who in answered.values() for m in who}
    k = max(2, campaign.rank_k)  # a k-set needs k models' answers to one prompt
    n = "two" if k == 2 else str(k)
    shared = sum(1 for who in answered.values() if len(who) >= k)
    if len(models) < k or not shared:
        names = sorted(campaign.external_models.values_list("name", flat=True))
        raise ValidationFailed(
            f"An evaluation campaign compares the answers of at least {n} models to the same prompts; "
            f"campaign '{campaign.name}' has answers from {len(models)} model(s) "
            f"(its external models: {', '.join(names) or 'none'}) and {shared} prompt(s) answered by {n} or more. "
            "Import answers or add an endpoint and generate, then start it."
        )


def _evaluation_campaign(campaign: Campaign) -> Campaign:
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.kind != Campaign.Kind.EVALUATION:
        raise Conflict(
            f"Campaign '{campaign.name}' is a {campaign.kind} campaign: its rounds are opened by training "
            "(POST /api/campaigns/{id}/start/ and /train/), not by adding comparisons."
        )
    if campaign.status == Campaign.Status.ARCHIVED:
        raise Conflict(f"Campaign '{campaign.name}' is archived; it gets no more comparisons.")
    return campaign


@transaction.atomic
def evaluation_start(*, campaign: Campaign) -> tuple[Round, int]:
    """Open round 0 of an evaluation campaign with comparisons_per_round
    comparisons between its models' answers, and make the campaign active.
    No training run and no base model. Starting again returns the round
    (and 0 comparisons added). (round, comparisons added)."""
    campaign = _evaluation_campaign(campaign)
    existing = campaign.rounds.order_by("index").first()
    if existing is not None:
        return existing, 0
    if not campaign.prompts.filter(gold_pairs__isnull=True).exists():
        raise ValidationFailed("The campaign has no prompts yet: import prompts (and the models' answers) first.")
    _models_check(campaign)
    round_ = Round.objects.create(campaign=campaign, index=0, candidate=None, baseline=None)
    added = _comparisons_schedule(round_=round_, count=campaign.comparisons_per_round)
    campaign.status = Campaign.Status.ACTIVE
    campaign.save(update_fields=["status"])
    return round_, added


@transaction.atomic
def evaluation_comparisons_add(*, campaign: Campaign, count: int) -> tuple[Round, int]:
    """Add `count` more comparisons to the evaluation campaign's current
    round, balanced with everything it already compared (a model added
    since is paired first). A 409 when nothing is left to pair: every pair
    of models has met on every prompt both answered. (round, added)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COMPARISONS_ADDED:
        raise ValidationFailed(
            f"count must be a whole number from 1 to {MAX_COMPARISONS_ADDED}, not {count!r}.",
            details={"count": f"between 1 and {MAX_COMPARISONS_ADDED}"},
        )
    campaign = _evaluation_campaign(campaign)
    round_ = campaign.rounds.order_by("-index").first()
    if round_ is None:
        raise Conflict(f"Campaign '{campaign.name}' has not started: start it first (POST /api/campaigns/{campaign.pk}/start/).")
    added = _comparisons_schedule(round_=round_, count=count)
    if not added:
        raise Conflict(
            "Every pair of models has already been compared on every prompt both answered: import more "
            "prompts and answers, or add a model, to compare more."
        )
    return round_, added
