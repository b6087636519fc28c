"""Imported answers: a JSONL or CSV file of answers written outside Ratchet,
one answer a line, each by a named model (an ExternalModel of kind
`imported`, created on the first line that names it).

The rules are the prompt import's, and so are the line reader and the field
checks (annotate/services/prompts.py): every line is checked before anything
is written, and one bad line imports nothing; a dry run only checks;
importing again adds nothing. What differs is memory: an answers file is
big (100,000 answers of a few KB each), so no list of its rows is kept. The
file is read twice, a line at a time: once to check every line, keeping a
few fingerprints per line (what is needed to find a repeated answer or a
prompt given two texts), then once more to write, a batch at a time, in one
transaction (bench/import_answers.py measures both)."""
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from django.conf import settings
from django.db import transaction

from annotate.errors import ValidationFailed
from annotate.models import Answer, Campaign, ExternalModel, Prompt
from annotate.services.prompts import (
    GOLD_PREFIX,
    PROMPT_FIELDS,
    ImportResult,
    external_id_field,
    import_file,
    import_format,
    import_records,
    metadata_field,
    prompt_fields,
    storable,
)

ANSWER_FIELDS = PROMPT_FIELDS | {"model", "response", "sample_index"}
_PROMPT_TEXT_FIELDS = {"prompt", "text", "messages", "turns"}
# Rows written (and looked up) per query; fewer where their text passes
# BATCH_CHARS, so that a batch of long answers holds a few MB, not a GB.
BATCH = 1000
BATCH_CHARS = 2_000_000
# More model names than this in one file is almost surely the wrong column
# read as `model` (an id, the answer itself), not a hundred models.
MAX_MODELS = 100
# Bad lines reported in full (all are counted).
MAX_REPORTED = 1000
# Answer.sample_index is a PositiveSmallIntegerField.
MAX_SAMPLE_INDEX = 32767


@dataclass
class ModelCounts:
    name: str
    created: int = 0  # answers of this model written (dry run: would be)
    existing: int = 0  # answers it already had, left as they are
    new: bool = False  # the import created the model (dry run: would)


@dataclass
class AnswersImportResult(ImportResult):
    prompts_created: int = 0  # prompts the file's lines created (dry run: would)
    models: list[ModelCounts] = field(default_factory=list)


def _digest(text: str) -> bytes:
    # Strings made storable: no lone surrogate, so they encode.
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _prompt_digest(text: str, turns) -> bytes:
    return _digest("m" + json.dumps(turns, sort_keys=True) if turns is not None else "t" + (text or ""))


def _sample_index(value) -> int:
    # A CSV cell is text; JSON may say 1 or "1".
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SAMPLE_INDEX:
        raise ValueError(f"'sample_index' must be an integer from 0 to {MAX_SAMPLE_INDEX}")
    return value


def _answer_row(obj: dict, max_chars: int) -> dict:
    """The answer of one record: {external_id, prompt ({text, turns}, or None
    where the line only names an existing prompt), model, response,
    sample_index, metadata}; ValueError with a message fit for the user."""
    unknown = set(obj) - ANSWER_FIELDS
    if unknown:
        raise ValueError(
            f"unknown fields {sorted(unknown)}; use external_id and/or prompt (or messages), model, response, "
            "sample_index, metadata"
        )
    prompt = None
    if _PROMPT_TEXT_FIELDS & set(obj):
        fields = prompt_fields(obj, max_chars)
        # The hash of the prompt import, so that a line without external_id
        # finds the prompt that import made of the same text.
        external_id = external_id_field(obj, content=fields["text"] or fields["turns"])
        prompt = storable(fields)
    elif "external_id" in obj or "id" in obj:
        external_id = external_id_field(obj, content=None)
    else:
        raise ValueError(
            "name the prompt: 'external_id' of a prompt of the campaign, or 'prompt' (or 'messages') to create it"
        )
    external_id = storable(external_id)
    if external_id.startswith(GOLD_PREFIX):
        raise ValueError(f"'external_id' may not start with '{GOLD_PREFIX}': that prefix names gold-pair prompts")
    model = obj.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ValueError("'model' must be a non-empty string: the name of the model that wrote the answer")
    model = storable(model.strip())
    if len(model) > 200:
        raise ValueError("'model' is longer than 200 characters")
    response = obj.get("response")
    if not isinstance(response, str) or not response.strip():
        raise ValueError("'response' must be a non-empty string (the answer)")
    if len(response) > max_chars:
        raise ValueError(f"'response' is {len(response)} characters; the limit is {max_chars}")
    return {
        "external_id": external_id,
        "prompt": prompt,
        "model": model,
        "response": storable(response),
        "sample_index": _sample_index(obj.get("sample_index", 0)),
        "metadata": storable(metadata_field(obj)),
    }


def _records(stream: BinaryIO, start: int, format: str):
    stream.seek(start)
    return import_records(
        stream, format=format, csv_columns=ANSWER_FIELDS,
        csv_required=[_PROMPT_TEXT_FIELDS | {"external_id", "id"}, {"model"}, {"response"}],
        csv_json={"messages", "turns", "metadata"},
    )


class _Errors:
    """Bad lines: the first MAX_REPORTED of them kept, all counted."""

    def __init__(self):
        self.count, self.kept = 0, []

    def add(self, line: int, error: str) -> None:
        self.count += 1
        if len(self.kept) < MAX_REPORTED:
            self.kept.append({"line": line, "error": error})

    def raise_any(self) -> None:
        if self.count:
            self.kept.sort(key=lambda e: e["line"])
            first = self.kept[0]
            raise ValidationFailed(
                f"{self.count} bad line(s); nothing was imported. Line {first['line']}: {first['error']}",
                details=self.kept,
            )


@dataclass
class _Checked:
    """What the first read keeps of a good file."""

    lines: int = 0
    # external_id -> (the first line giving its text, and the digest of that
    # text; or, while lines only name it, the first of them and None)
    prompts: dict[str, tuple[int, bytes | None]] = field(default_factory=dict)
    models: dict[str, int] = field(default_factory=dict)  # name -> first line
    # Lines that repeat an earlier line's answer word for word: not written again.
    repeats: set[int] = field(default_factory=set)
    # Prompts a line names before a later line gives their text.
    named_early: set[str] = field(default_factory=set)


def _check_lines(records) -> _Checked:
    """Check every record on its own and against the others; ValidationFailed
    naming every bad line."""
    max_chars = settings.TEXT_MAX_CHARS
    checked, errors = _Checked(), _Errors()
    # digest of (prompt, model, sample) -> (line, digest of the response)
    answers: dict[bytes, tuple[int, bytes]] = {}
    for number, obj, error in records:
        if error is None:
            try:
                row = _answer_row(obj, max_chars)
            except ValueError as exc:
                error = str(exc)
        if error is not None:
            errors.add(number, error)
            continue
        checked.lines += 1
        eid, model = row["external_id"], row["model"]
        if row["prompt"] is not None:
            content = _prompt_digest(row["prompt"]["text"], row["prompt"]["turns"])
            first, given = checked.prompts.get(eid, (number, None))
            if given is not None and given != content:
                errors.add(number, f"prompt '{eid}' has other text on line {first}")
                continue
            if given is None:
                if eid in checked.prompts:
                    checked.named_early.add(eid)
                checked.prompts[eid] = (number, content)
        else:
            checked.prompts.setdefault(eid, (number, None))
        if model not in checked.models:
            if len(checked.models) == MAX_MODELS:
                errors.add(number, f"a model name past the first {MAX_MODELS} (is 'model' the right column?)")
                continue
            checked.models[model] = number
        # NUL cannot be in a storable string: the parts cannot run together.
        key = _digest(f"{eid}\x00{model}\x00{row['sample_index']}")
        text = _digest(row["response"])
        if key in answers:
            line, earlier = answers[key]
            if earlier != text:
                errors.add(
                    number,
                    f"answer of model '{model}' to prompt '{eid}' (sample {row['sample_index']}) is already on line "
                    f"{line}, with other text",
                )
            else:
                checked.repeats.add(number)
            continue
        answers[key] = (number, text)
    errors.raise_any()
    if not checked.lines:
        raise ValidationFailed("The file holds no answers.")
    return checked


def _check_against_campaign(campaign: Campaign, checked: _Checked) -> tuple[dict[str, ExternalModel], set[str]]:
    """(the file's models the campaign has, by name; the external_ids of the
    prompts the import creates), or ValidationFailed naming each line whose
    model is an endpoint, whose prompt is missing, or whose prompt text is
    not the text the campaign has."""
    errors = _Errors()
    models = {m.name: m for m in ExternalModel.objects.filter(campaign=campaign, name__in=list(checked.models)).only(
        "pk", "name", "kind"
    )}
    for name, model in models.items():
        if model.kind != ExternalModel.Kind.IMPORTED:
            errors.add(
                checked.models[name],
                f"model '{name}' is an endpoint of this campaign (its answers are asked of a server); "
                "give imported answers a model name of their own",
            )
    to_create: set[str] = set()
    eids = list(checked.prompts)
    for i in range(0, len(eids), BATCH):
        chunk = eids[i : i + BATCH]
        have = {
            eid: _prompt_digest(text, turns)
            for eid, text, turns in Prompt.objects.filter(campaign=campaign, external_id__in=chunk).values_list(
                "external_id", "text", "turns"
            )
        }
        for eid in chunk:
            line, given = checked.prompts[eid]
            if eid not in have:
                if given is None:
                    errors.add(
                        line,
                        f"the campaign has no prompt '{eid}'; import it first, or give 'prompt' (or 'messages') "
                        "to create it",
                    )
                else:
                    to_create.add(eid)
            elif given is not None and given != have[eid]:
                errors.add(
                    line,
                    f"the campaign's prompt '{eid}' has other text; leave out 'prompt' (or 'messages') to answer "
                    "it as it is, or give this prompt another external_id",
                )
    errors.raise_any()
    return models, to_create


def _rows(records, repeats: set[int]) -> Iterator[dict]:
    """The rows of a file _check_lines passed, each with "repeat": whether
    an earlier line holds the same answer."""
    max_chars = settings.TEXT_MAX_CHARS
    for number, obj, _ in records:
        yield {**_answer_row(obj, max_chars), "repeat": number in repeats}


def _chars(row: dict) -> int:
    prompt = row["prompt"] or {"text": "", "turns": None}
    size = len(row["response"]) + len(prompt["text"]) + sum(len(t["content"]) for t in prompt["turns"] or [])
    return size + (len(json.dumps(row["metadata"])) if row["metadata"] else 0)


def _batches(rows: Iterator[dict]) -> Iterator[list[dict]]:
    """Rows BATCH at a time, or fewer where their text passes BATCH_CHARS."""
    batch, chars = [], 0
    for row in rows:
        batch.append(row)
        chars += _chars(row)
        if len(batch) == BATCH or chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _prompts_create(campaign: Campaign, batch: list[dict], only: set[str] | None = None) -> dict[str, int]:
    """{external_id: pk} of the batch's prompts: those the campaign has, and
    those the batch's lines give the text of (of `only`, if given), created."""
    eids = {row["external_id"] for row in batch}
    ids = dict(Prompt.objects.filter(campaign=campaign, external_id__in=eids).values_list("external_id", "pk"))
    new = {}
    for row in batch:
        eid = row["external_id"]
        if row["prompt"] is not None and eid not in ids and eid not in new and (only is None or eid in only):
            new[eid] = Prompt(campaign=campaign, external_id=eid, **row["prompt"])
    if new:
        # A prompt import beside this one (it takes no lock) may have made
        # one of them since: it stays as that import wrote it.
        Prompt.objects.bulk_create(new.values(), ignore_conflicts=True)
        ids.update(
            Prompt.objects.filter(campaign=campaign, external_id__in=list(new)).values_list("external_id", "pk")
        )
    return ids


def _answers_write(
    campaign: Campaign, batch: list[dict], models: dict[str, ExternalModel], counts: dict[str, ModelCounts],
    dry_run: bool,
) -> None:
    """Write one batch's new prompts and answers (dry run: count them)."""
    if dry_run:
        eids = {row["external_id"] for row in batch}
        prompt_ids = dict(
            Prompt.objects.filter(campaign=campaign, external_id__in=eids).values_list("external_id", "pk")
        )
    else:
        prompt_ids = _prompts_create(campaign, batch)
    model_ids = {m.pk for m in models.values() if m.pk}
    have = set()
    if model_ids and prompt_ids:
        have = set(
            Answer.objects.filter(prompt_id__in=list(prompt_ids.values()), external_model_id__in=model_ids).values_list(
                "prompt_id", "external_model_id", "sample_index"
            )
        )
    new = []
    for row in batch:
        model = models[row["model"]]
        if row["repeat"] or (prompt_ids.get(row["external_id"]), model.pk, row["sample_index"]) in have:
            counts[row["model"]].existing += 1
            continue
        counts[row["model"]].created += 1
        if not dry_run:
            new.append(
                Answer(
                    prompt_id=prompt_ids[row["external_id"]], external_model=model,
                    sample_index=row["sample_index"], text=row["response"], metadata=row["metadata"],
                )
            )
    Answer.objects.bulk_create(new)


def answers_import(
    *, campaign: Campaign, data: bytes | BinaryIO, format: str = "jsonl", dry_run: bool = False, created_by=None
) -> AnswersImportResult:
    """Import answers of models outside Ratchet: check every line of a JSONL
    or CSV file, then write all of it or nothing (`dry_run`: write nothing,
    say what an import would do). docs/models.md, "Imported answers".

    Each line: the prompt (`external_id` of one of the campaign's prompts,
    or `prompt` / `messages` creating it as the prompt import does), `model`
    (the name; the campaign's imported model of that name, created on first
    use), `response`, optional `sample_index` (default 0) and `metadata` (an
    object). An answer the campaign already has (same prompt, model and
    sample_index) is left as it is."""
    format = import_format(format=format)
    stream = import_file(data)
    start = stream.tell()
    checked = _check_lines(_records(stream, start, format))
    with transaction.atomic():
        if not dry_run:
            # One import at a time per campaign, so that two uploads of the
            # same file can't both decide an answer or a prompt is new. NO KEY:
            # rows written meanwhile that point at the campaign (a prompt
            # import's) take a KEY SHARE lock on it, which a plain FOR UPDATE
            # would block, and a deadlock follows where both write one prompt.
            Campaign.objects.select_for_update(no_key=True).filter(pk=campaign.pk).first()
        models, to_create = _check_against_campaign(campaign, checked)
        counts = {name: ModelCounts(name=name, new=name not in models) for name in checked.models}
        for name in checked.models:
            if name not in models:
                models[name] = ExternalModel(
                    campaign=campaign, name=name, kind=ExternalModel.Kind.IMPORTED, created_by=created_by
                )
                if not dry_run:
                    models[name].save()
        early = checked.named_early & to_create
        if early and not dry_run:
            # A line answers a prompt before a later line gives its text:
            # create those prompts first, so that each batch finds its own.
            for batch in _batches(_rows(_records(stream, start, format), checked.repeats)):
                _prompts_create(campaign, batch, only=early)
        for batch in _batches(_rows(_records(stream, start, format), checked.repeats)):
            _answers_write(campaign, batch, models, counts, dry_run)
    created = sum(c.created for c in counts.values())
    return AnswersImportResult(
        created=created,
        # A line repeating an earlier one word for word finds that answer there.
        existing=checked.lines - created,
        lines=checked.lines,
        dry_run=dry_run,
        prompts_created=len(to_create),
        models=sorted(counts.values(), key=lambda c: c.name),
    )
