"""Demonstrations: better answers written on the rating page, and their
review in the console (docs/quality.md, "Demonstrations").

A demonstration arrives with its rating (the rating POST's optional
`demonstration`), so it rides the page's outbox, idempotency key and lease
check, and is written in the rating's transaction or not at all
(services/ratings.py). Its review decides whether it trains: only accepted
ones are exported for supervised fine-tuning (selectors/demonstrations.py)."""
import difflib

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from annotate.errors import Conflict, NotFound, ValidationFailed
from annotate.models import Campaign, Demonstration, DemonstrationReview, Rating

User = get_user_model()

# The answer a demonstration starts from, by the rating's choice: the better
# answer edited, or (both bad) none. A tie names no better answer to edit.
ORIGIN_BY_CHOICE = {Rating.Choice.A: "a", Rating.Choice.B: "b", Rating.Choice.BOTH_BAD: ""}


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"demonstration.{field}: {message}", details={f"demonstration.{field}": message})


def demonstration_text_validate(*, text, field: str = "text") -> str:
    """The text as stored; refused when not a string, empty or only
    whitespace, holding a NUL, or over settings.TEXT_MAX_CHARS."""
    if not isinstance(text, str):
        raise _invalid(field, "a string of markdown")
    if not text.strip():
        raise _invalid(field, "empty: write the better answer, or send the rating without a demonstration")
    if "\x00" in text:
        # PostgreSQL's text holds no NUL; refused here, not a 500 at the insert.
        raise _invalid(field, "contains a NUL character (\\u0000)")
    if len(text) > settings.TEXT_MAX_CHARS:
        raise _invalid(field, f"{len(text)} characters; the limit is {settings.TEXT_MAX_CHARS}")
    return text


def demonstration_validate(*, demonstration, choice: str) -> dict:
    """The parts of a demonstration that need no database: {text, origin,
    time_on_task_ms}, cleaned. The origin follows from the choice; one sent
    that says otherwise is refused rather than silently changed."""
    if not isinstance(demonstration, dict):
        raise _invalid("text", "send the demonstration as {text, origin, time_on_task_ms}")
    unknown = set(demonstration) - {"text", "origin", "time_on_task_ms"}
    if unknown:
        raise _invalid(sorted(unknown)[0], "not a field of a demonstration (text, origin, time_on_task_ms)")
    text = demonstration_text_validate(text=demonstration.get("text"))
    if choice not in ORIGIN_BY_CHOICE:
        raise _invalid("origin", f"a demonstration goes with A, B or both bad, not '{choice}'")
    origin = ORIGIN_BY_CHOICE[choice]
    sent = demonstration.get("origin", origin)
    if sent is None:
        sent = ""
    if sent != origin:
        raise _invalid(
            "origin",
            f"'{sent}' does not fit the choice '{choice}': "
            + (f"it edits answer {origin.upper()}, the one chosen" if origin else "on both bad it is written from nothing ('')"),
        )
    ms = demonstration.get("time_on_task_ms")
    if ms is not None and (isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms <= 24 * 3600 * 1000):
        raise _invalid("time_on_task_ms", "whole milliseconds between 0 and one day")
    return {"text": text, "origin": origin, "time_on_task_ms": ms}


def demonstration_campaign_check(*, campaign_setting: str, choice: str) -> None:
    """Refuse a demonstration the campaign does not take."""
    if campaign_setting == Campaign.Demonstrations.OFF:
        raise _invalid("text", "this campaign takes no demonstrations; send the rating without one")
    if campaign_setting == Campaign.Demonstrations.BOTH_BAD and choice != Rating.Choice.BOTH_BAD:
        raise _invalid("text", "this campaign asks for demonstrations only when both answers are bad")


def diff_chars(before: str, after: str) -> int:
    """Characters deleted plus inserted to turn `before` into `after`."""
    if not before:
        return len(after)
    changed = 0
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes():
        if op != "equal":
            changed += (i2 - i1) + (j2 - j1)
    return changed


def demonstration_write(*, rating: Rating, clean: dict, origin_text: str) -> Demonstration:
    """Store the demonstration of a rating just written (the caller's
    transaction: services/ratings.py rating_create)."""
    return Demonstration.objects.create(
        comparison_id=rating.comparison_id,
        rating=rating,
        annotator_id=rating.annotator_id,
        origin=clean["origin"],
        text=clean["text"],
        submitted_text=clean["text"],
        time_on_task_ms=clean["time_on_task_ms"],
        diff_chars=diff_chars(origin_text, clean["text"]),
    )


@transaction.atomic
def demonstration_review(
    *, campaign: Campaign, demonstration_id: int, reviewer: User, verdict: str, reason: str = "",
    edited_text: str | None = None,
) -> Demonstration:
    """One reviewer's verdict. Reject needs a reason and decides at once;
    accept (with an edit of the text, or not) decides once
    campaign.demonstration_reviews distinct reviewers accepted. Nobody
    reviews their own; nobody reviews one twice; a decided one takes no
    more reviews. Refused: nothing written."""
    demonstration = (
        Demonstration.objects.select_for_update()
        .filter(pk=demonstration_id, comparison__round__campaign=campaign).first()
    )
    if demonstration is None:
        raise NotFound(f"No demonstration {demonstration_id} in this campaign.")
    if verdict not in DemonstrationReview.Verdict.values:
        raise ValidationFailed(f"verdict: one of {', '.join(DemonstrationReview.Verdict.values)}.",
                               details={"verdict": "accept or reject"})
    if demonstration.annotator_id == reviewer.pk:
        raise Conflict("You wrote this demonstration; someone else reviews it.")
    if demonstration.status != Demonstration.Status.PENDING:
        raise Conflict(f"This demonstration is already {demonstration.status}.")
    if demonstration.reviews.filter(reviewer=reviewer).exists():
        raise Conflict("You already reviewed this demonstration; another reviewer gives the second review.")
    reason = (reason or "").strip()
    if len(reason) > settings.TEXT_MAX_CHARS:
        raise ValidationFailed(f"reason: at most {settings.TEXT_MAX_CHARS} characters.", details={"reason": "too long"})
    edited = ""
    if verdict == DemonstrationReview.Verdict.REJECT:
        if not reason:
            raise ValidationFailed("reason: say why it is rejected.", details={"reason": "required to reject"})
    elif edited_text is not None and edited_text != demonstration.text:
        try:
            edited = demonstration_text_validate(text=edited_text)
        except ValidationFailed as exc:
            message = exc.message.split(": ", 1)[1]
            raise ValidationFailed(f"edited_text: {message}", details={"edited_text": message}) from None
    DemonstrationReview.objects.create(
        demonstration=demonstration, reviewer=reviewer, verdict=verdict, reason=reason, edited_text=edited
    )
    fields = []
    if edited:
        demonstration.text = edited
        fields.append("text")
    if verdict == DemonstrationReview.Verdict.REJECT:
        demonstration.status = Demonstration.Status.REJECTED
    elif demonstration.reviews.filter(verdict=DemonstrationReview.Verdict.ACCEPT).count() >= max(
        1, campaign.demonstration_reviews
    ):
        demonstration.status = Demonstration.Status.ACCEPTED
    if demonstration.status != Demonstration.Status.PENDING:
        demonstration.decided_at = timezone.now()
        fields += ["status", "decided_at"]
    if fields:
        demonstration.save(update_fields=fields)
    return demonstration
