"""Exports: the ratings as export rows, and the campaign's exports
(services/exports.py writes the files)."""
from collections.abc import Iterator

from django.db.models import Case, CharField, F, QuerySet, Value, When
from django.db.models.functions import Cast, Concat

from annotate.models import Answer, Campaign, Rating, Round


def answer_model_name(answer: str):
    """An expression for the model that wrote the answer at lookup path
    `answer` (e.g. "comparison__response_a"; "" on Answer rows), as people name it: "v3" for a
    policy version, its name for an external model, null for a gold pair's
    answer."""
    answer = f"{answer}__" if answer else ""  # "": the Answer itself
    # A Case, not Coalesce over Concat: PostgreSQL's Concat reads a null as "".
    return Case(
        When(**{f"{answer}external_model__isnull": False}, then=F(f"{answer}external_model__name")),
        When(
            **{f"{answer}policy_version__isnull": False},
            then=Concat(Value("v"), Cast(f"{answer}policy_version__version", CharField())),
        ),
        default=Value(None),
        output_field=CharField(),
    )


# Column of the ratings export -> the lookup that reads it.
RATING_EXPORT_COLUMNS = {
    "rating_id": "pk",
    "campaign_id": "comparison__round__campaign_id",
    "round": "comparison__round__index",
    "comparison_id": "comparison_id",
    "prompt_id": "comparison__prompt_id",
    "prompt_external_id": "comparison__prompt__external_id",
    "annotator_id": "annotator_id",
    "annotator": "annotator__username",
    "choice": "choice",
    "strength": "strength",
    "reason": "reason",
    "time_on_task_ms": "time_on_task_ms",
    "created_at": "created_at",
    "version_a": "comparison__response_a__policy_version__version",
    "version_b": "comparison__response_b__policy_version__version",
    "model_a": answer_model_name("comparison__response_a"),
    "model_b": answer_model_name("comparison__response_b"),
    "candidate_is_a": "comparison__candidate_is_a",
    "candidate_version": "comparison__round__candidate__version",
    "baseline_version": "comparison__round__baseline__version",
    "gold_choice": "comparison__gold_choice",
    # A k-set's ranking (display positions 1..k in tie groups, best first) and
    # the model at each position; null for a pair.
    "ranking": "ranking",
    "k_set_models": "comparison__answers",
}


def rating_export_columns(*, campaign: Campaign) -> list[str]:
    """The ratings export's columns: RATING_EXPORT_COLUMNS, then one
    `aspect_<name>` column per aspect of the campaign ("A", "B", "same", or
    empty where the rating did not judge it; sides as `choice`), then
    `aspects_other`: judgments under names the campaign no longer has
    (a rating made on a page built before an admin renamed or removed an
    aspect, services/rating_form.py), {} for none, so none is left behind."""
    return [*RATING_EXPORT_COLUMNS, *(f"aspect_{a['name']}" for a in campaign.aspects), "aspects_other"]


def chunks(iterable, size: int):
    """Lists of up to `size` items of `iterable`, in order."""
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def rating_export_rows(*, campaign: Campaign, round_: Round | None = None) -> Iterator[dict]:
    """Every rating with its round, prompt, and the model on each side (the
    policy version's number and the model's name), one at a time, read in
    chunks. For admins and engineers only: it says which model wrote which side.
    With aspects, each rating's judgment of each (rating_export_columns)."""
    ratings = Rating.objects.filter(comparison__round__campaign=campaign)
    if round_ is not None:
        ratings = ratings.filter(comparison__round=round_)
    names = [a["name"] for a in campaign.aspects]
    lookups = [*RATING_EXPORT_COLUMNS.values(), "aspects"]
    rows = ratings.order_by("pk").values_list(*lookups).iterator(chunk_size=2000)
    for chunk in chunks(rows, 2000):
        chunk = [(dict(zip(RATING_EXPORT_COLUMNS, values)), values[-1]) for values in chunk]
        # The k-sets' answers' models, one statement a chunk (none without k-sets).
        wanted = {pk for row, _ in chunk for pk in row["k_set_models"] or ()}
        models = dict(Answer.objects.filter(pk__in=wanted).values_list("pk", answer_model_name(""))) if wanted else {}
        for row, aspects in chunk:
            row["created_at"] = row["created_at"].isoformat()
            row["k_set_models"] = [models.get(pk) for pk in row["k_set_models"]] or None
            for name in names:
                row[f"aspect_{name}"] = aspects.get(name, "")
            row["aspects_other"] = {k: v for k, v in sorted(aspects.items()) if k not in names}
            yield row


def campaign_exports(*, campaign: Campaign) -> QuerySet:
    """The campaign's exports, newest first, with their round and author."""
    return campaign.exports.select_related("round", "created_by").order_by("-created_at", "-pk")
