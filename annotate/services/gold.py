"""Gold pairs: comparisons with a known answer.

- `gold_import`: existing preference data (prompt, chosen, rejected) into the
  campaign's gold pool, as GoldPair rows whose prompt and two answers are
  ordinary Prompt / Answer rows (the answers with no policy version).
- `gold_comparisons_for_round`: copies of pool pairs that round_open mixes
  into a round, sides randomised, looking like any other comparison.
- `gold_membership_check`: after each gold answer, pause an annotator whose
  gold accuracy fell below the campaign's bar.
"""
import random
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Count

from annotate.errors import ValidationFailed
from annotate.models import Campaign, Comparison, GoldPair, Membership, Prompt, Rating, Answer, Round
from annotate.services.prompts import (
    GOLD_PREFIX,
    ImportResult,
    existing_values,
    external_id_field,
    import_format,
    import_records,
    metadata_field,
    prompt_fields,
    storable,
    validated_rows,
)

GOLD_FIELDS = {"external_id", "id", "prompt", "text", "messages", "turns", "chosen", "rejected", "metadata", "source"}


def _gold_row(obj: dict, max_chars: int) -> dict:
    unknown = set(obj) - GOLD_FIELDS
    if unknown:
        raise ValueError(
            f"unknown fields {sorted(unknown)}; use prompt (or messages), chosen, rejected, external_id, metadata"
        )
    fields = prompt_fields(obj, max_chars)
    answers = {}
    for side in ("chosen", "rejected"):
        value = obj.get(side)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"'{side}' must be a non-empty string (the answer)")
        if len(value) > max_chars:
            raise ValueError(f"'{side}' is {len(value)} characters; the limit is {max_chars}")
        answers[side] = value
    if answers["chosen"] == answers["rejected"]:
        raise ValueError("'chosen' and 'rejected' are the same text: the pair has no right answer")
    content = [fields["text"] or fields["turns"], answers["chosen"], answers["rejected"]]
    # Room for the "gold:" prefix of the pair's Prompt row.
    external_id = external_id_field(obj, content=content, max_length=200 - len(GOLD_PREFIX))
    metadata = metadata_field(obj)
    if isinstance(obj.get("source"), str):
        metadata = {"source": obj["source"], **metadata}
    return {"external_id": storable(external_id), **storable({**fields, **answers}), "metadata": storable(metadata)}


def gold_import(*, campaign: Campaign, data: bytes, format: str = "jsonl", dry_run: bool = False) -> ImportResult:
    """Import preference pairs with a known answer into the gold pool.

    JSONL: {"prompt" (or "messages"), "chosen", "rejected"}, optional
    "external_id", "metadata", "source" (as in TRL's preference datasets).
    CSV: the same columns, messages and metadata as JSON. Every line is
    checked first; one bad line imports nothing. Pairs whose external_id (or,
    without one, whose content) the pool already has are left as they are."""
    format = import_format(format=format)
    records = import_records(
        data, format=format, csv_columns=GOLD_FIELDS, csv_required=[{"prompt", "text", "messages", "turns"},
                                                                   {"chosen"}, {"rejected"}],
        csv_json={"messages", "turns", "metadata"},
    )
    rows = [row for _, row in validated_rows(records, lambda obj: _gold_row(obj, settings.TEXT_MAX_CHARS), what="pairs")]
    with transaction.atomic():
        # One import at a time per campaign, so two uploads of the same file
        # can't both decide a pair is new.
        Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
        have = existing_values(GoldPair.objects.filter(campaign=campaign), "external_id", [r["external_id"] for r in rows])
        new = [row for row in rows if row["external_id"] not in have]
        if new and not dry_run:
            taken = existing_values(
                Prompt.objects.filter(campaign=campaign), "external_id", [GOLD_PREFIX + r["external_id"] for r in new]
            )
            if taken:
                raise ValidationFailed(
                    f"The campaign has prompts named {sorted(taken)[:5]} that are not gold pairs; "
                    "rename them or give these pairs other external_ids."
                )
            prompts = Prompt.objects.bulk_create(
                [
                    Prompt(
                        campaign=campaign, external_id=GOLD_PREFIX + r["external_id"], text=r["text"],
                        turns=r["turns"], metadata=r["metadata"],
                    )
                    for r in new
                ],
                batch_size=1000,
            )
            responses = Answer.objects.bulk_create(
                [
                    Answer(prompt=p, policy_version=None, sample_index=i, text=r[side])
                    for p, r in zip(prompts, new)
                    for i, side in enumerate(("chosen", "rejected"))
                ],
                batch_size=1000,
            )
            GoldPair.objects.bulk_create(
                [
                    GoldPair(
                        campaign=campaign, prompt=p, chosen=responses[2 * n], rejected=responses[2 * n + 1],
                        external_id=r["external_id"],
                    )
                    for n, (p, r) in enumerate(zip(prompts, new))
                ],
                batch_size=1000,
            )
    return ImportResult(created=len(new), existing=len(have), lines=len(rows), dry_run=dry_run)


def gold_comparisons_for_round(*, round_: Round, n_regular: int) -> list[Comparison]:
    """Unsaved comparisons copied from the gold pool for a round of
    `n_regular` ordinary comparisons: round(gold_frequency * n_regular) of
    them (fewer if the pool is smaller), pairs used least in earlier rounds
    first. The chosen answer's side is random and recorded in gold_choice;
    candidate_is_a means nothing for a gold pair and is False."""
    campaign = round_.campaign
    wanted = min(round(campaign.gold_frequency * n_regular), campaign.gold_pairs.count()) if n_regular else 0
    if wanted <= 0:
        return []
    pairs = list(
        GoldPair.objects.filter(campaign=campaign).annotate(used=Count("prompt__comparisons")).order_by("used", "pk")
    )
    rng = random.Random(f"gold:{campaign.pk}:{round_.index}")
    # Least used first; random among equally used ones.
    pairs.sort(key=lambda p: (p.used, rng.random()))
    comparisons = []
    for pair in pairs[:wanted]:
        chosen_is_a = rng.random() < 0.5
        a, b = (pair.chosen_id, pair.rejected_id) if chosen_is_a else (pair.rejected_id, pair.chosen_id)
        comparisons.append(
            Comparison(
                round=round_, prompt_id=pair.prompt_id, response_a_id=a, response_b_id=b, candidate_is_a=False,
                gold_choice=Rating.Choice.A if chosen_is_a else Rating.Choice.B,
            )
        )
    return comparisons


@dataclass
class GoldStanding:
    correct: int  # gold answers right, since the last pause
    answered: int  # gold answers given since the last pause
    paused: bool  # whether this check paused the annotator


def gold_window(*, choices: list[tuple[str, str]], min_count: int, min_accuracy: float) -> tuple[int, int, bool]:
    """Replay the pause rule over (choice, gold_choice) in the order given:
    after each answer, a window of at least `min_count` answers with
    accuracy below `min_accuracy` is a pause, and the answers after it start a
    new window. Returns (correct, answered, paused) of the last window;
    `paused`: the last answer closed it with a pause.

    The replay is what makes reinstatement stick without storing when it
    happened: an annotator an admin reinstates starts from an empty window,
    because the answers that paused them closed the window before it."""
    correct = answered = 0
    for n, (choice, gold) in enumerate(choices, start=1):
        answered += 1
        correct += choice == gold
        if answered >= max(min_count, 1) and correct / answered < min_accuracy:
            if n == len(choices):
                return correct, answered, True
            correct = answered = 0
    return correct, answered, False


def gold_accuracy_reason(*, correct: int, answered: int, campaign: Campaign) -> str:
    return (
        f"Gold accuracy {correct}/{answered} ({correct / answered:.0%}) is below this campaign's "
        f"{campaign.gold_min_accuracy:.0%}."
    )


def gold_membership_check(*, annotator, campaign: Campaign) -> GoldStanding:
    """Pause the annotator's membership (automatically, with the reason) when
    their latest gold answer closes a window of at least gold_min_count gold
    answers whose accuracy is below gold_min_accuracy. Called inside
    rating_create's transaction after a gold answer; the membership row is
    locked so two ratings at once decide once."""
    membership = (
        Membership.objects.select_for_update().filter(campaign=campaign, annotator=annotator).first()
    )
    choices = list(
        Rating.objects.filter(annotator=annotator, comparison__round__campaign=campaign)
        .exclude(comparison__gold_choice="")
        .order_by("created_at", "pk")
        .values_list("choice", "comparison__gold_choice")
    )
    correct, answered, closed = gold_window(
        choices=choices, min_count=campaign.gold_min_count, min_accuracy=campaign.gold_min_accuracy
    )
    if membership is None or membership.status != Membership.Status.ACTIVE or not closed:
        return GoldStanding(correct=correct, answered=answered, paused=False)
    membership.status = Membership.Status.PAUSED
    membership.paused_automatically = True
    membership.paused_reason = gold_accuracy_reason(correct=correct, answered=answered, campaign=campaign)
    membership.save(update_fields=["status", "paused_automatically", "paused_reason"])
    return GoldStanding(correct=correct, answered=answered, paused=True)
