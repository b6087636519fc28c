"""What bench/load.py needs of a server it loads: the shape of an annotator's
loop (ask for the next item, submit a rating of it), the task data both
servers get, and the invariants' summary, shared by Ratchet's side
(bench/load_ratchet.py) and Label Studio's (bench/peers/label_studio.py)."""
from __future__ import annotations

import json
import random
import sqlite3
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "finegrainedrlhf_qa_feedback_dev.jsonl"
OVERLAP = 3
DATA_PAIRS = sum(1 for _ in DATA.open(encoding="utf-8"))


def pairs(n: int) -> list[dict]:
    """n (prompt, answer A, answer B) rows from the shipped human-preference
    pairs, cycling through them (with new ids) when n is larger; sides random."""
    rows = [json.loads(line) for line in DATA.open(encoding="utf-8")]
    rng = random.Random(0)
    out = []
    for i in range(n):
        row = rows[i % len(rows)]
        a, b = (row["chosen"], row["rejected"]) if rng.random() < 0.5 else (row["rejected"], row["chosen"])
        out.append({"external_id": f"q{i:06d}", "prompt": row["prompt"], "a": a, "b": b})
    return out


class LoadTarget:
    """A server under load. Each target says how it starts, is seeded
    (`seed` -> {"annotators": [[user id, token]...], "campaigns": [id per
    level]}), is measured (`server_pgids`, `db_pids`) and checked (`check`),
    and how its two calls look, in the attributes below."""

    name: str
    base: str  # http://host:port
    warm_path: str  # a cheap authenticated GET that every server process answers once before the levels
    keepalive: bool  # whether the client may keep connections open between calls
    next_method: str
    next_path: str  # "{campaign}": the campaign (project) id
    no_work_status: int  # what next answers when nothing is left to rate
    item_key: str  # the field of next's body that names the item to rate
    submit_path: str  # "{item}": what next named

    # The target's own database, for the SQL checks: a PostgreSQL DSN, or else a SQLite file.
    postgres_dsn: str | None = None
    sqlite_path: Path | str | None = None

    def rating(self, item: int, rng: random.Random, key: str) -> dict:
        """The body of a submit: a random rating of `item`."""
        raise NotImplementedError

    # -- the two calls of a loop ----------------------------------------------
    def next_call(self, campaign: int) -> tuple[str, str, dict | None]:
        return self.next_method, self.next_path.format(campaign=campaign), None

    def item_of(self, status, body):
        """The item next gave, "no work", or None (an error: the loop waits and asks again)."""
        if status == self.no_work_status:
            return "no work"
        return body[self.item_key] if status == 200 else None

    def submit_call(self, campaign: int, item: int, rng: random.Random) -> tuple[str, str, dict, str]:
        """(method, path, body, the client's record key); Ratchet takes the key as the idempotency key."""
        key = str(uuid.uuid4())
        return "POST", self.submit_path.format(item=item), self.rating(item, rng, key), key

    @staticmethod
    def acked_id(status, body):
        return body["id"] if status == 201 else None

    # -- the checks -------------------------------------------------------------
    def query(self, sql: str, params=()) -> list[tuple]:
        """Rows of `sql` ('?' placeholders) on the target's database ([] for a statement without rows)."""
        if self.postgres_dsn:
            with psycopg.connect(self.postgres_dsn, autocommit=True) as conn:
                cursor = conn.execute(sql.replace("?", "%s"), params)
                return cursor.fetchall() if cursor.description else []
        with sqlite3.connect(self.sqlite_path) as conn:
            return conn.execute(sql, params).fetchall()

    @staticmethod
    def invariants(*, stored: int, acked: list[tuple], missing: list, over_k: list, duplicates: list, given: dict,
                   **more: int) -> dict:
        """The figures every target reports after a level (`more`: a target's own)."""
        return {
            "ratings_in_db": stored,
            "acknowledged": len(acked),
            "acknowledged_missing": len(missing),
            "over_k": len(over_k),
            "duplicates": len(duplicates),
            "given_past_overlap_clients": sum(1 for who in given.values() if len(who) > OVERLAP),
            **more,
        }
