"""Demonstrations as data: the accepted ones in TRL's SFT schema
(`messages`), the preference pairs an accepted edit makes, and the console's
review list (services/demonstrations.py writes them)."""
from collections.abc import Iterator

from django.db.models import Count, Prefetch, Q, QuerySet

from annotate.models import Campaign, Demonstration, DemonstrationReview, Round, SFTModelVersion


def _accepted(*, campaign: Campaign, round_: Round | None) -> QuerySet[Demonstration]:
    demos = Demonstration.objects.filter(comparison__round__campaign=campaign, status=Demonstration.Status.ACCEPTED)
    if round_ is not None:
        demos = demos.filter(comparison__round=round_)
    return demos.order_by("pk")


def demonstrations_untrained_ids(*, campaign: Campaign) -> list[int]:
    """The accepted demonstrations no SFT model has learned yet, in id order.
    A demonstration counts as learned once an SFT model trained on it was the
    start of a published policy version (a cancelled run's SFT model was not)."""
    learned: set[int] = set()
    for ids in SFTModelVersion.objects.filter(campaign=campaign, policies__isnull=False).distinct().values_list(
        "demonstration_ids", flat=True
    ):
        learned.update(ids)
    return [pk for pk in _accepted(campaign=campaign, round_=None).values_list("pk", flat=True) if pk not in learned]


def _messages(prompt_text: str, prompt_turns, answer: str) -> list[dict]:
    """The prompt as chat turns (as the model was prompted: Prompt.content),
    then the demonstration as the assistant's answer."""
    if prompt_turns:
        turns = [{"role": str(t.get("role", "user")), "content": str(t.get("content", ""))} for t in prompt_turns]
    else:
        turns = [{"role": "user", "content": prompt_text}]
    return [*turns, {"role": "assistant", "content": answer}]


def sft_rows_iter(*, campaign: Campaign, round_: Round | None = None, ids: list[int] | None = None) -> Iterator[dict]:
    """Every accepted demonstration (of `ids` only, when given) as a row of
    TRL's conversational SFT schema ({"messages": [...]}) with where it came
    from, one at a time, read in chunks."""
    demos = _accepted(campaign=campaign, round_=round_)
    if ids is not None:
        demos = demos.filter(pk__in=ids)
    rows = demos.values_list(
        "pk", "comparison_id", "comparison__round__index", "comparison__prompt_id", "comparison__prompt__text",
        "comparison__prompt__turns", "annotator_id", "origin", "diff_chars", "text",
    )
    for pk, comparison_id, round_index, prompt_id, text, turns, annotator_id, origin, diff, answer in rows.iterator(
        chunk_size=500
    ):
        yield {
            "messages": _messages(text, turns, answer),
            "demonstration_id": pk,
            "comparison_id": comparison_id,
            "round": round_index,
            "prompt_id": str(prompt_id),
            "annotator_id": annotator_id,
            "origin": origin,  # "a" / "b": edited from that answer; "": written from nothing
            "diff_chars": diff,
        }


def demonstration_preference_rows_iter(
    *, campaign: Campaign, round_: Round | None, weights: dict[int, float]
) -> Iterator[dict]:
    """An accepted edit of the better answer as two preference pairs, in the
    rows preference_rows_iter (selectors/training.py) yields: the edit beats
    the answer it came from (margin 0: by how much, nobody said) and the
    other answer (the rating's own margin). Only edits make pairs: one
    written from nothing (both bad) is SFT data only. An edit that changed
    nothing is no preference over the answer it came from: that pair is left out."""
    rows = _accepted(campaign=campaign, round_=round_).exclude(origin="").values_list(
        "pk", "rating_id", "rating__strength", "annotator_id", "comparison_id", "comparison__round__index",
        "comparison__prompt_id", "comparison__prompt__text", "comparison__prompt__turns", "origin", "text",
        "comparison__response_a__text", "comparison__response_b__text",
    )
    for (pk, rating_id, strength, annotator_id, comparison_id, round_index, prompt_id, text, turns, origin, edit,
         a, b) in rows.iterator(chunk_size=500):
        came_from, other = (a, b) if origin == "a" else (b, a)
        base = {
            "prompt": turns if turns else text,
            "chosen": edit,
            "weight": weights.get(annotator_id, 1.0),
            "prompt_id": str(prompt_id),
            "rating_id": rating_id,
            "comparison_id": comparison_id,
            "annotator_id": annotator_id,
            "round": round_index,
            # The edit's author is the annotator; see demonstration_id.
            "chosen_model": f"demonstration:{pk}",
        }
        if edit != came_from:
            yield {**base, "rejected": came_from, "margin": 0.0, "rejected_model": None}
        yield {**base, "rejected": other, "margin": ((strength or 1) - 1) / 2.0, "rejected_model": None}


def demonstrations_for_review(*, campaign: Campaign, status: str = Demonstration.Status.PENDING) -> QuerySet:
    """The campaign's demonstrations with `status` (oldest first: reviewed in
    the order written), with prompt, both answers, rating, author and reviews."""
    return (
        Demonstration.objects.filter(comparison__round__campaign=campaign, status=status)
        .select_related("comparison__prompt", "comparison__response_a", "comparison__response_b", "rating",
                        "annotator", "comparison__round")
        .prefetch_related(Prefetch("reviews", queryset=DemonstrationReview.objects.select_related("reviewer")
                                   .order_by("pk")))
        .order_by("pk")
    )


def demonstration_counts(*, campaign: Campaign) -> dict[str, int]:
    """{pending, accepted, rejected}: how many of the campaign's demonstrations are in each state."""
    counts = Demonstration.objects.filter(comparison__round__campaign=campaign).aggregate(
        **{s: Count("pk", filter=Q(status=s)) for s in Demonstration.Status.values}
    )
    return {s: counts[s] or 0 for s in Demonstration.Status.values}
