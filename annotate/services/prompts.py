"""Prompt imports: JSONL or CSV, every line checked before anything is
written, a dry run that only checks, and re-imports that add nothing.

The line reader (`import_records`) and the field checks (`prompt_fields`)
are shared with the gold-pair import (annotate/services/gold.py)."""
import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from typing import BinaryIO
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from annotate.errors import ValidationFailed
from annotate.models import Campaign, Prompt

ROLES = {"system", "user", "assistant"}
FORMATS = ("jsonl", "csv")
# Gold pairs keep their prompts as Prompt rows named "gold:<pair id>"; a
# plain prompt may not take such a name.
GOLD_PREFIX = "gold:"
PROMPT_FIELDS = {"external_id", "id", "prompt", "text", "messages", "turns", "metadata"}


@dataclass
class ImportResult:
    created: int  # rows written (on a dry run: rows that would be written)
    existing: int  # rows the campaign already had, left as they are
    lines: int  # records read from the file
    dry_run: bool = False


# A UTF-16 surrogate: in a Python string only where JSON held one without its
# pair ("\ud83d", an emoji cut in half); UTF-8, and so PostgreSQL, has no
# encoding for it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(value):
    """`value` (a string, or JSON holding strings) as PostgreSQL can store
    it: NUL (U+0000), which text and jsonb cannot hold, and a lone surrogate
    become U+FFFD. A model's output may hold either; the training steps store
    theirs the same way."""
    if isinstance(value, str):
        value = value.replace("\x00", "\ufffd")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = _SURROGATE.sub("\ufffd", value)
        return value
    if isinstance(value, list):
        return [storable(v) for v in value]
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    return value


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _object_without_repeats(pairs: list[tuple[str, object]]) -> dict:
    obj = {}
    for key, value in pairs:
        if key in obj:
            # json.loads would keep the last one silently: which did the author mean?
            raise ValueError(f"key '{key}' appears twice in one object")
        obj[key] = value
    return obj


def _json(text: str):
    """json.loads that refuses NaN and Infinity (not JSON, and not storable)
    and an object with a repeated key."""
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_object_without_repeats)


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


# Bytes read at a time while skipping the rest of an over-long line.
_SKIP_CHUNK = 64 * 1024


def _lines(stream: BinaryIO, limit: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) for each line of the file, with its line end;
    None for a line longer than `limit` bytes, whose rest is read past a
    chunk at a time: memory holds one line of at most `limit` bytes, never
    the file."""
    number = 0
    while line := stream.readline(limit + 1):
        number += 1
        if len(line) > limit and not line.endswith(b"\n"):
            while (chunk := stream.readline(_SKIP_CHUNK)) and not chunk.endswith(b"\n"):
                pass
            yield number, None
            continue
        yield number, line


def _line_too_long(limit: int) -> str:
    return f"the line is longer than {limit} bytes, the limit for one line (IMPORT_MAX_LINE_BYTES)"


def import_file(data: bytes | BinaryIO) -> BinaryIO:
    """Imports read a seekable binary file; bytes are wrapped in one."""
    return io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data


def _file_size(stream: BinaryIO) -> int:
    """Bytes from the current position to the end, read without reading them."""
    start = stream.tell()
    size = stream.seek(0, os.SEEK_END) - start
    stream.seek(start)
    return size


def import_format(*, format: str | None = None, filename: str = "", content_type: str = "") -> str:
    """The file's format: as given, else from the file name or content type; JSONL by default."""
    if format:
        if format.lower() not in FORMATS:
            raise ValidationFailed(f"Unknown import format '{format}'; use one of {', '.join(FORMATS)}.")
        return format.lower()
    if filename.lower().endswith(".csv") or content_type.split(";")[0].strip() == "text/csv":
        return "csv"
    return "jsonl"


def _jsonl_records(stream: BinaryIO, *, line_limit: int) -> Iterator[tuple[int, dict | None, str | None]]:
    for number, raw in _lines(stream, line_limit):
        if raw is None:
            yield number, None, _line_too_long(line_limit)
            continue
        if not raw.strip():
            continue
        try:
            obj = _json(_decode(raw))
        except ValueError as exc:
            message = str(exc)
            yield number, None, message if message.startswith("not valid") else f"not valid JSON: {message}"
            continue
        if not isinstance(obj, dict):
            yield number, None, "each line must be a JSON object"
            continue
        yield number, obj, None


def _csv_records(
    stream: BinaryIO, *, line_limit: int, columns: set[str], required: list[set[str]], json_columns: set[str]
) -> Iterator[tuple[int, dict | None, str | None]]:
    """Records of a CSV file with a header line. `line` is the file line the
    record starts on (a quoted cell may span lines). Empty cells count as
    absent; cells of `json_columns` hold JSON.

    Two passes over the file: the first checks that every line is UTF-8 and
    within the line limit, and reports each one that is not (the CSV reader
    could not find its way past such a line in the middle of a record); the
    second parses, a line at a time."""
    start = stream.tell()
    bad = False
    for number, raw in _lines(stream, line_limit):
        if raw is None:
            bad = True
            yield number, None, _line_too_long(line_limit)
            continue
        try:
            _decode(raw)
        except ValueError as exc:
            bad = True
            yield number, None, str(exc)
    if bad:
        return
    stream.seek(start)

    def text_lines() -> Iterator[str]:
        for number, raw in _lines(stream, line_limit):
            text = raw.decode("utf-8")
            # A byte-order mark, as spreadsheet programs write it.
            yield text[1:] if number == 1 and text.startswith("\ufeff") else text

    csv.field_size_limit(max(settings.IMPORT_MAX_BYTES, 131072))
    reader = csv.reader(text_lines(), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        yield 1, None, f"not a valid CSV header: {exc}"
        return
    header = [h.strip() for h in header]
    unknown = [h for h in header if h not in columns]
    missing = [" or ".join(sorted(group)) for group in required if not group & set(header)]
    if unknown or missing or len(set(header)) != len(header):
        problems = []
        if unknown:
            problems.append(f"unknown column(s) {unknown}")
        if missing:
            problems.append(f"missing column(s) {missing}")
        if len(set(header)) != len(header):
            problems.append("a column name repeats")
        yield 1, None, "header: " + "; ".join(problems) + f". The columns are {sorted(columns)}."
        return
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, None, f"not valid CSV: {exc}"
            return  # the reader cannot find the next record after this
        number, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield number, None, f"{len(row)} cells; the header has {len(header)}"
            continue
        obj = {}
        try:
            for name, cell in zip(header, row):
                if cell == "":
                    continue
                if name in json_columns:
                    try:
                        obj[name] = _json(cell)
                    except ValueError as exc:
                        raise ValueError(f"column '{name}' is not valid JSON: {exc}") from None
                else:
                    obj[name] = cell
        except ValueError as exc:
            yield number, None, str(exc)
            continue
        yield number, obj, None


def import_records(
    data: bytes | BinaryIO, *, format: str, csv_columns: set[str], csv_required: list[set[str]], csv_json: set[str]
) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, object, error) for each record of a JSONL or CSV file:
    bytes, or a seekable binary file (an upload, spooled to disk when big),
    which is read a line at a time."""
    stream = import_file(data)
    size = _file_size(stream)
    if size > settings.IMPORT_MAX_BYTES:
        raise ValidationFailed(
            f"The file is {size} bytes; the limit is {settings.IMPORT_MAX_BYTES}. Split it into parts."
        )
    line_limit = settings.IMPORT_MAX_LINE_BYTES
    if format == "csv":
        return _csv_records(
            stream, line_limit=line_limit, columns=csv_columns, required=csv_required, json_columns=csv_json
        )
    return _jsonl_records(stream, line_limit=line_limit)


def prompt_fields(obj: dict, max_chars: int) -> dict:
    """{"text", "turns"} of a record's prompt ('prompt' a string, or
    'messages' chat turns); ValueError with a message fit for the user."""
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
    return {"text": text or "", "turns": turns}


def external_id_field(obj: dict, *, content, max_length: int = 200) -> str:
    """The record's external_id (or id); without one, a hash of `content`, so
    that importing the same file again still adds nothing."""
    external_id = obj.get("external_id", obj.get("id"))
    if external_id is None:
        return "sha1:" + hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()
    if not isinstance(external_id, (str, int)) or isinstance(external_id, bool) or str(external_id) == "":
        raise ValueError("'external_id' must be a non-empty string or integer")
    if len(str(external_id)) > max_length:
        raise ValueError(f"'external_id' is longer than {max_length} characters")
    return str(external_id)


def metadata_field(obj: dict) -> dict:
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError("'metadata' must be an object")
    return metadata


def _prompt_row(obj: dict, max_chars: int) -> dict:
    unknown = set(obj) - PROMPT_FIELDS
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; use prompt (or messages), external_id, metadata")
    fields = prompt_fields(obj, max_chars)
    external_id = external_id_field(obj, content=fields["text"] or fields["turns"])
    if external_id.startswith(GOLD_PREFIX):
        raise ValueError(f"'external_id' may not start with '{GOLD_PREFIX}': that prefix names gold-pair prompts")
    return {"external_id": storable(external_id), **storable(fields), "metadata": storable(metadata_field(obj))}


# Values per `__in` lookup: PostgreSQL takes at most 65,535 parameters in
# one query, and a file may hold more lines than that.
LOOKUP_CHUNK = 10_000


def existing_values(queryset, field: str, values: list) -> set:
    """The `values` that rows of `queryset` have in `field`, asked a chunk at a time."""
    found = set()
    for i in range(0, len(values), LOOKUP_CHUNK):
        found.update(queryset.filter(**{f"{field}__in": values[i : i + LOOKUP_CHUNK]}).values_list(field, flat=True))
    return found


def validated_rows(records, row_of: Callable[[dict], dict], *, what: str) -> list[tuple[int, dict]]:
    """Check every record; the (line, row) pairs, or ValidationFailed naming
    every bad line (`details`: [{line, error}...]) when any is bad."""
    rows: list[tuple[int, dict]] = []
    errors: list[dict] = []
    seen: dict[str, int] = {}
    for number, obj, error in records:
        if error is None:
            try:
                row = row_of(obj)
            except ValueError as exc:
                error = str(exc)
        if error is not None:
            errors.append({"line": number, "error": error})
            continue
        if row["external_id"] in seen:
            errors.append(
                {"line": number, "error": f"external_id '{row['external_id']}' repeats line {seen[row['external_id']]}"}
            )
            continue
        seen[row["external_id"]] = number
        rows.append((number, row))
    if errors:
        first = errors[0]
        raise ValidationFailed(
            f"{len(errors)} bad line(s); nothing was imported. Line {first['line']}: {first['error']}",
            details=errors[:1000],
        )
    if not rows:
        raise ValidationFailed(f"The file holds no {what}.")
    return rows


def prompts_import(
    *, campaign: Campaign, data: bytes | BinaryIO, format: str = "jsonl", dry_run: bool = False
) -> ImportResult:
    """Validate every record of a JSONL or CSV file, then write all of them
    or none (`dry_run`: write nothing, say what an import would do). Prompts
    whose external_id the campaign already has are left as they are.

    JSONL: one object a line, {"external_id", "prompt"} or {"external_id",
    "messages": [{"role", "content"}...]}, optional "metadata" (an object).
    CSV: a header line with external_id and prompt and/or messages (JSON),
    optional metadata (JSON)."""
    format = import_format(format=format)
    records = import_records(
        data, format=format, csv_columns=PROMPT_FIELDS, csv_required=[{"prompt", "text", "messages", "turns"}],
        csv_json={"messages", "turns", "metadata"},
    )
    rows = [row for _, row in validated_rows(records, lambda obj: _prompt_row(obj, settings.TEXT_MAX_CHARS), what="prompts")]
    ids = [row["external_id"] for row in rows]
    with transaction.atomic():
        have = existing_values(Prompt.objects.filter(campaign=campaign), "external_id", ids)
        new = [Prompt(campaign=campaign, **row) for row in rows if row["external_id"] not in have]
        if not dry_run:
            Prompt.objects.bulk_create(new, batch_size=1000, ignore_conflicts=True)
    return ImportResult(created=len(new), existing=len(have), lines=len(rows), dry_run=dry_run)


def prompts_import_jsonl(*, campaign: Campaign, data: bytes, dry_run: bool = False) -> ImportResult:
    """prompts_import for a JSONL file."""
    return prompts_import(campaign=campaign, data=data, format="jsonl", dry_run=dry_run)
