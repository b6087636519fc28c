import hashlib
import json
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from annotate.errors import ValidationFailed
from annotate.models import Campaign, Prompt

ROLES = {"system", "user", "assistant"}


@dataclass
class ImportResult:
    created: int
    existing: int
    lines: int


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _parse_line(raw: bytes, max_chars: int) -> dict:
    """One JSONL line -> {"external_id", "text", "turns", "metadata"}; raises
    ValueError with a message fit for the user."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        obj = json.loads(line, parse_constant=_reject_constant)
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    unknown = set(obj) - {"external_id", "id", "prompt", "text", "messages", "turns", "metadata"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; use prompt (or messages), external_id, metadata")
    text = obj.get("prompt", obj.get("text"))
    turns = obj.get("messages", obj.get("turns"))
    if (text is None) == (turns is None):
        raise ValueError("give exactly one of 'prompt' (a string) or 'messages' (a list of {role, content})")
    if text is not None:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("'prompt' must be a non-empty string")
        if len(text) > max_chars:
            raise ValueError(f"'prompt' is {len(text)} characters; the limit is {max_chars}")
    else:
        if not isinstance(turns, list) or not turns:
            raise ValueError("'messages' must be a non-empty list of {role, content}")
        total = 0
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict) or set(turn) != {"role", "content"}:
                raise ValueError(f"message {i} must be an object with exactly 'role' and 'content'")
            if turn["role"] not in ROLES or not isinstance(turn["content"], str):
                raise ValueError(f"message {i}: role must be one of {sorted(ROLES)} and content a string")
            total += len(turn["content"])
        if total > max_chars:
            raise ValueError(f"the messages hold {total} characters; the limit is {max_chars}")
        if turns[-1]["role"] != "user":
            raise ValueError("the last message must be from the user: the model answers it")
    external_id = obj.get("external_id", obj.get("id"))
    if external_id is None:
        # No id: the content itself identifies the prompt, so re-importing
        # the same file still adds nothing.
        external_id = "sha1:" + hashlib.sha1(json.dumps(text or turns, sort_keys=True).encode()).hexdigest()
    if not isinstance(external_id, (str, int)) or isinstance(external_id, bool) or str(external_id) == "":
        raise ValueError("'external_id' must be a non-empty string or integer")
    if len(str(external_id)) > 200:
        raise ValueError("'external_id' is longer than 200 characters")
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError("'metadata' must be an object")
    return {"external_id": str(external_id), "text": text or "", "turns": turns, "metadata": metadata}


def prompts_import_jsonl(*, campaign: Campaign, data: bytes) -> ImportResult:
    """Validate every line, then write all of them or none. Prompts whose
    external_id the campaign already has are left as they are."""
    if len(data) > settings.IMPORT_MAX_BYTES:
        raise ValidationFailed(
            f"The file is {len(data)} bytes; the limit is {settings.IMPORT_MAX_BYTES}. Split it into parts."
        )
    rows: list[dict] = []
    errors: list[dict] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = _parse_line(raw, settings.TEXT_MAX_CHARS)
        except ValueError as exc:
            errors.append({"line": number, "error": str(exc)})
            continue
        if row["external_id"] in seen:
            errors.append(
                {"line": number, "error": f"external_id '{row['external_id']}' repeats line {seen[row['external_id']]}"}
            )
            continue
        seen[row["external_id"]] = number
        rows.append(row)
    if errors:
        first = errors[0]
        raise ValidationFailed(
            f"{len(errors)} bad line(s); nothing was imported. Line {first['line']}: {first['error']}",
            details=errors[:1000],
        )
    if not rows:
        raise ValidationFailed("The file holds no prompts.")
    with transaction.atomic():
        have = set(
            Prompt.objects.filter(campaign=campaign, external_id__in=list(seen)).values_list("external_id", flat=True)
        )
        new = [Prompt(campaign=campaign, **row) for row in rows if row["external_id"] not in have]
        Prompt.objects.bulk_create(new, batch_size=1000, ignore_conflicts=True)
    return ImportResult(created=len(new), existing=len(have), lines=len(rows))
