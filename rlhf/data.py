"""Preference rows, conversation rows and JSONL files; no torch here (the web
process imports it).

A preference row is a dict:
    {"prompt": str | [{"role", "content"}, ...], "chosen": str, "rejected": str,
     "margin": float = 0, "weight": float = 1, "prompt_id": str (optional),
     "aspects": {"<aspect name>": 1 | -1 | 0} (optional: 1 chosen is better on it, -1 rejected is, 0 same)}
or, for a ranking of k answers, instead of chosen/rejected:
    {"prompt": ..., "ranking": [["best", ...], ["next"], ...], "weight": float = 1, ...}
tie groups best first, each answer once (rlhf.plackett_luce reads them).

A conversation row (supervised fine-tuning, rlhf.sft; TRL's conversational
SFT schema) is a dict:
    {"messages": [{"role": "user", "content": str}, {"role": "assistant", "content": str}, ...],
     "prompt_id": str (optional)}

    python -m rlhf.data check pairs.jsonl
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from pathlib import Path
from typing import Any, Iterable


def write_jsonl(rows: Iterable[dict], path: str | Path) -> str:
    """Write one JSON object per line; return the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    h = hashlib.sha256()
    with open(tmp, "wb") as f:
        for row in rows:
            # sort_keys + compact separators make the bytes (and so the sha256)
            # a function of the rows alone.
            line = (json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n").encode()
            h.update(line)
            f.write(line)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return h.hexdigest()


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file of objects; ValueError names the first bad line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}: line {lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def _check_prompt(prompt: Any, where: str) -> None:
    if isinstance(prompt, str):
        return
    if isinstance(prompt, list) and prompt and all(
        isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("content"), str) for t in prompt
    ):
        return
    raise ValueError(f"{where}: 'prompt' must be a string or a non-empty list of {{'role', 'content'}} turns")


def _check_ranking(ranking: Any, where: str) -> None:
    if not (isinstance(ranking, list) and ranking and all(isinstance(g, list) and g for g in ranking)
            and all(isinstance(t, str) for g in ranking for t in g)):
        raise ValueError(f"{where}: 'ranking' must be a list of tie groups (best first), each a non-empty list of answer texts")
    texts = [t for g in ranking for t in g]
    if len(texts) < 2:
        raise ValueError(f"{where}: a ranking needs at least 2 answers")
    if len(set(texts)) != len(texts):
        raise ValueError(f"{where}: an answer appears twice in 'ranking'; each answer goes in one tie group once")


def _check_aspects(aspects: Any, where: str) -> None:
    if not isinstance(aspects, dict) or not all(
            isinstance(k, str) and v in (1, -1, 0) and not isinstance(v, bool) for k, v in aspects.items()):
        raise ValueError(f"{where}: 'aspects' must map aspect names to 1 (chosen better), -1 (rejected better) or 0 (same)")


def validate_preference_rows(rows: list[dict], source: str = "rows") -> list[dict]:
    """Check fields and fill defaults (margin 0, weight 1); returns new dicts.
    Pair rows (chosen, rejected, optional aspects) and ranking rows (ranking) may mix."""
    out = []
    for i, row in enumerate(rows, start=1):
        where = f"{source}: row {i}"
        if "ranking" in row:
            if "chosen" in row or "rejected" in row:
                raise ValueError(f"{where}: a row has either chosen/rejected or ranking, not both")
            if "prompt" not in row:
                raise ValueError(f"{where}: missing 'prompt' (a ranking row needs prompt, ranking)")
            _check_ranking(row["ranking"], where)
        else:
            for key in ("prompt", "chosen", "rejected"):
                if key not in row:
                    raise ValueError(f"{where}: missing '{key}' (a preference row needs prompt, chosen, rejected)")
            for key in ("chosen", "rejected"):
                if not isinstance(row[key], str):
                    raise ValueError(f"{where}: '{key}' must be a string")
            if row.get("aspects") is not None:
                _check_aspects(row["aspects"], where)
        _check_prompt(row["prompt"], where)
        clean = dict(row)
        for key, default in (("margin", 0.0), ("weight", 1.0)):
            try:
                clean[key] = float(row.get(key, default) if row.get(key) is not None else default)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: '{key}' must be a number, got {row.get(key)!r}") from None
        if clean["weight"] < 0:
            raise ValueError(f"{where}: 'weight' must be >= 0")
        out.append(clean)
    return out


def read_preferences(path: str | Path) -> list[dict]:
    return validate_preference_rows(read_jsonl(path), source=str(path))


def prompt_key(row: dict) -> str:
    """The grouping key for splits: prompt_id if given, else the prompt itself."""
    if row.get("prompt_id") is not None:
        return "id:" + str(row["prompt_id"])
    return "text:" + json.dumps(row["prompt"], sort_keys=True, ensure_ascii=False)


def split_by_prompt(rows: list[dict], eval_fraction: float, seed: int = 0,
                    key=prompt_key) -> tuple[list[dict], list[dict]]:
    """Split so no prompt lands in both halves; pairs of one prompt are correlated,
    and splitting them would inflate held-out accuracy. `key` gives a row's
    prompt (conversation_key for conversation rows)."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    keys = sorted({key(r) for r in rows})
    random.Random(seed).shuffle(keys)
    n_eval = round(len(keys) * eval_fraction)
    if eval_fraction > 0 and len(keys) >= 2:
        n_eval = min(max(n_eval, 1), len(keys) - 1)
    eval_keys = set(keys[:n_eval])
    train = [r for r in rows if key(r) not in eval_keys]
    held = [r for r in rows if key(r) in eval_keys]
    return train, held


ROLES = ("system", "user", "assistant", "tool")


def validate_conversation_rows(rows: list[dict], source: str = "rows") -> list[dict]:
    """Check conversation rows: a non-empty `messages` list of {"role", "content"}
    turns, at least one of them the assistant's (what SFT learns), and not the
    assistant first (its answer would follow no prompt). Returns new dicts
    whose turns keep role and content only."""
    out = []
    for i, row in enumerate(rows, start=1):
        where = f"{source}: row {i}"
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"{where}: needs 'messages', a non-empty list of {{'role', 'content'}} turns")
        for j, turn in enumerate(messages, start=1):
            if not (isinstance(turn, dict) and isinstance(turn.get("content"), str) and turn.get("role") in ROLES):
                raise ValueError(f"{where}: turn {j} must be {{'role': one of {', '.join(ROLES)}, 'content': str}}")
        roles = [t["role"] for t in messages]
        if "assistant" not in roles:
            raise ValueError(f"{where}: no assistant turn (SFT learns the assistant's turns)")
        if roles[0] == "assistant":
            raise ValueError(f"{where}: the first turn is the assistant's; it must answer something")
        clean = dict(row)
        clean["messages"] = [{"role": t["role"], "content": t["content"]} for t in messages]
        out.append(clean)
    return out


def read_conversations(path: str | Path) -> list[dict]:
    return validate_conversation_rows(read_jsonl(path), source=str(path))


def conversation_key(row: dict) -> str:
    """The split key of a conversation row: prompt_id if given, else the turns before its first answer."""
    if row.get("prompt_id") is not None:
        return "id:" + str(row["prompt_id"])
    roles = [t["role"] for t in row["messages"]]
    first = roles.index("assistant") if "assistant" in roles else len(roles)
    return "text:" + json.dumps(row["messages"][:first], sort_keys=True, ensure_ascii=False)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rlhf.data")
    parser.add_argument("cmd", choices=["check"])
    parser.add_argument("path")
    args = parser.parse_args(argv)
    try:
        rows = read_preferences(args.path)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps({"pairs": sum("ranking" not in r for r in rows), "rankings": sum("ranking" in r for r in rows),
                      "prompts": len({prompt_key(r) for r in rows})}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
