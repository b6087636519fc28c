"""The shipped human preference data the benchmarks read (data/README.md
says where it comes from): its path, and its distinct questions."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "finegrainedrlhf_qa_feedback_dev.jsonl"


def questions(n: int | None = None) -> list[str]:
    """The data's distinct questions in file order: the first `n`, or all."""
    seen: dict[str, None] = {}
    with DATA.open(encoding="utf-8") as lines:
        for line in lines:
            seen.setdefault(json.loads(line)["prompt"], None)
            if n is not None and len(seen) == n:
                break
    return list(seen)
