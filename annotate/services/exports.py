"""Exports: preference pairs (TRL's schema), accepted demonstrations (TRL's
SFT `messages`) and raw ratings written to a file
under settings.EXPORT_DIR one row at a time, and recorded, with the filters
that chose them and the file's sha256, in an `Export` row.

Memory stays flat however many ratings there are: the rows come from a
chunked database iterator (annotate/selectors/exports.py and training.py)
and go straight to the file and the hash. The file is written under a
temporary name and renamed when complete; the Export row is created only
then, so a listed export always has a whole file behind it."""
import csv
import hashlib
import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from annotate.errors import ValidationFailed
from annotate.models import Campaign, Export, Round
from annotate.selectors.demonstrations import sft_rows_iter
from annotate.selectors.exports import rating_export_columns, rating_export_rows
from annotate.selectors.training import preference_rows_iter
from annotate.services.aspects import COMBINED

User = get_user_model()


class _HashingWriter:
    """A text sink for json / csv that encodes, hashes and writes as it goes."""

    def __init__(self, file):
        self.file = file
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        self.sha256.update(data)
        self.file.write(data)
        self.size += len(data)
        return len(text)


def _write_jsonl(rows: Iterable[dict], sink: _HashingWriter) -> int:
    count = 0
    for count, row in enumerate(rows, start=1):
        sink.write(json.dumps(row, ensure_ascii=False) + "\n")
    return count


def _write_csv(rows: Iterable[dict], sink: _HashingWriter, columns: list[str]) -> int:
    writer = csv.DictWriter(sink, fieldnames=columns)
    writer.writeheader()
    count = 0
    for count, row in enumerate(rows, start=1):
        # Lists and objects (a k-set's ranking and models, aspects_other) as JSON, which a CSV reader can parse back.
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
    return count


def export_validate(*, kind: str, format: str) -> None:
    if kind not in Export.Kind.values:
        raise ValidationFailed(f"Unknown export kind '{kind}'; use one of {', '.join(Export.Kind.values)}.")
    if format not in Export.Format.values:
        raise ValidationFailed(f"Unknown export format '{format}'; use one of {', '.join(Export.Format.values)}.")
    if kind == Export.Kind.PREFERENCES and format != Export.Format.JSONL:
        # A prompt may be chat turns (a list), which a CSV cell cannot carry
        # in a way TRL or `datasets` would read back.
        raise ValidationFailed("Preference exports are JSONL only (prompts may be chat turns); use format 'jsonl'.")
    if kind == Export.Kind.SFT and format != Export.Format.JSONL:
        raise ValidationFailed("SFT exports are JSONL only (each row is a list of chat messages); use format 'jsonl'.")


def export_aspect_validate(*, campaign: Campaign, kind: str, aspect: str) -> None:
    """A preferences export's `aspect`: "" (the overall choice), one of the
    campaign's aspects, or "combined" (its aspect_weights)."""
    if not aspect:
        return
    if kind != Export.Kind.PREFERENCES:
        raise ValidationFailed(f"aspect applies to preferences exports only, not to '{kind}'; leave it out.",
                               details={"aspect": "preferences only"})
    names = [a["name"] for a in campaign.aspects]
    if aspect != COMBINED and aspect not in names:
        raise ValidationFailed(
            f"Campaign '{campaign.name}' has no aspect '{aspect}'; use one of {', '.join(names) or 'none'}, "
            f"'{COMBINED}' (the aspect_weights combination) or leave it out (the overall choice).",
            details={"aspect": "not an aspect of this campaign"},
        )


def export_create(
    *, campaign: Campaign, kind: str, format: str, round_: Round | None = None, user: User | None = None,
    aspect: str = "",
) -> Export:
    """Write the campaign's (or one round's) preferences or ratings to a new
    file and record it. `aspect` (preferences): build the pairs from one
    aspect or the combination (selectors/training.py preference_rows_iter).
    Bad kind, format, round or aspect: ValidationFailed, nothing written."""
    export_validate(kind=kind, format=format)
    export_aspect_validate(campaign=campaign, kind=kind, aspect=aspect)
    if round_ is not None and round_.campaign_id != campaign.pk:
        raise ValidationFailed(f"Round {round_.index} belongs to another campaign.")

    if kind == Export.Kind.PREFERENCES:
        rows = preference_rows_iter(campaign=campaign, round_=round_, aspect=aspect)
    elif kind == Export.Kind.SFT:
        rows = sft_rows_iter(campaign=campaign, round_=round_)
    else:
        rows = rating_export_rows(campaign=campaign, round_=round_)
    folder = Path(settings.EXPORT_DIR) / f"campaign-{campaign.pk}"
    folder.mkdir(parents=True, exist_ok=True)
    scope = (f"round{round_.index}" if round_ is not None else "all") + (f"-{aspect}" if aspect else "")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%S")
    path = folder / f"{kind}-{scope}-{stamp}-{uuid.uuid4().hex[:8]}.{format}"
    partial = path.with_name(f".{path.name}.partial")

    # write: to a temporary name, hashing as it goes
    try:
        with open(partial, "wb") as file:
            sink = _HashingWriter(file)
            if format == Export.Format.JSONL:
                count = _write_jsonl(rows, sink)
            else:
                count = _write_csv(rows, sink, rating_export_columns(campaign=campaign))
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)

    # record: only now that the file is whole
    return Export.objects.create(
        campaign=campaign,
        round=round_,
        kind=kind,
        format=format,
        aspect=aspect,
        path=str(path),
        sha256=sink.sha256.hexdigest(),
        rows=count,
        size_bytes=sink.size,
        created_by=user if user is not None and user.is_authenticated else None,
    )
