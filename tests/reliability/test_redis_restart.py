"""Redis dies during a burst of ratings, twice, and nothing is lost (docs/architecture.md,
invariants 1-3): every rating the server acknowledged is in the database
exactly once, none is duplicated, no comparison goes over k, no request
answers 5xx, and the round that was completed while Redis was down still
starts training once it is back (its check was never queued: the beat sweep
finds it). Real gunicorn + Celery worker (with beat) on PostgreSQL and a
private redis-server without persistence, SIGKILLed and started again on
the same port; annotator threads over HTTP retry a failed call with the same
idempotency key, as the rating page's outbox does."""
import random
import threading
import time
import uuid

import psycopg
import pytest

from annotate.apis.client import TransportError
from config.platform import Platform
from tests.e2e.test_loop import TINY_TRAINING, tiny_model  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e

PROMPTS = 40
K = 3
ANNOTATORS = 10
TOTAL = PROMPTS * K
# Counted in submits started: Redis is killed before the submit that starts
# the second third and started again before the last third; killed again
# before the last five submits (so the rating that completes the round is
# committed while it is down) and started again once the burst is over.
OUTAGES = [(TOTAL // 3, "kill"), (2 * TOTAL // 3, "start"), (TOTAL - 5, "kill")]
# After the burst: how long the platform gets to notice the complete round and train on it.
TRAIN_TIMEOUT_S = 600


class Burst:
    """The annotators' shared record, and the outages, run by whichever
    thread is about to submit when the count of submits started reaches the
    next threshold (so each outage falls at a known point of the burst,
    however many submits are in flight)."""

    def __init__(self, redis_server):
        self.redis = redis_server
        self.lock = threading.Lock()
        self.acked: list[tuple[str, int, str]] = []  # (idempotency key, comparison, annotator)
        self.refused: list[tuple[int, object]] = []
        self.server_errors: list[tuple[str, int, object]] = []
        self.connection_errors = 0
        self.retries = 0
        self.redis_up = True
        self.acked_while_down = 0
        self.submits = 0
        self.pending = list(OUTAGES)
        self.failures: list[BaseException] = []

    def before_submit(self) -> None:
        with self.lock:
            self.submits += 1
            while self.pending and self.submits > self.pending[0][0]:
                _, action = self.pending.pop(0)
                if action == "kill":
                    self.redis.kill()
                    self.redis_up = False
                else:
                    self.redis.start()
                    self.redis_up = True

    def record(self, key: str, comparison: int, annotator: str) -> None:
        with self.lock:
            self.acked.append((key, comparison, annotator))
            self.acked_while_down += not self.redis_up


def call(burst: Burst, client, method: str, path: str, body=None):
    """One API call, retried on a 5xx or a dropped connection (same body, so
    the same idempotency key) until the server gives a definite answer."""
    for attempt in range(50):
        try:
            status, answer = client.request(method, path, body)
        except TransportError:
            with burst.lock:
                burst.connection_errors += 1
        else:
            if status < 500:
                return status, answer
            with burst.lock:
                burst.server_errors.append((path, status, answer))
        with burst.lock:
            burst.retries += 1
        time.sleep(min(0.1 * 2**attempt, 2.0))
    raise AssertionError(f"{method} {path} never got an answer below 500")


def annotate(burst: Burst, client, name: str, campaign_id: int, seed: int) -> None:
    rng = random.Random(seed)
    try:
        while True:
            status, body = call(burst, client, "POST", f"/api/campaigns/{campaign_id}/next/")
            if status == 204:
                return
            assert status == 200, body
            time.sleep(rng.uniform(0.02, 0.1))  # reading the answers
            choice = rng.choice(["A", "B", "A", "tie"])
            payload = {"comparison": body["comparison"], "choice": choice, "idempotency_key": str(uuid.uuid4())}
            if choice in ("A", "B"):
                payload["strength"] = rng.randint(1, 3)
            burst.before_submit()
            status, answer = call(burst, client, "POST", "/api/ratings/", payload)
            if status in (200, 201):
                burst.record(payload["idempotency_key"], body["comparison"], name)
            else:
                with burst.lock:
                    burst.refused.append((status, answer))
    except BaseException as exc:  # reported by the test, not lost in the thread
        burst.failures.append(exc)


def test_redis_killed_and_restarted_during_a_burst_of_ratings_loses_nothing_and_the_round_still_trains(
    private_redis_platform: Platform, private_redis, tiny_model: str  # noqa: F811
):
    platform = private_redis_platform
    admin = platform.user("alice", "campaign_admin", "ml_engineer")
    names = [f"rater{i}" for i in range(ANNOTATORS)]
    clients = {name: platform.user(name, "annotator") for name in names}
    status, campaign = admin.post(
        "/api/campaigns/create/",
        {"name": "redis", "base_model": tiny_model, "overlap": K, "comparisons_per_round": PROMPTS,
         "training_config": TINY_TRAINING, "method": "rloo"},
    )
    assert status == 201, campaign
    cid = campaign["id"]
    assert campaign.get("auto_train", True), "the round must train by itself once complete"
    jsonl = "\n".join(f'{{"external_id": "q{i}", "prompt": "Question {i}: what is {i} plus one?"}}'
                      for i in range(PROMPTS)).encode()
    assert admin.post(f"/api/campaigns/{cid}/prompts/import/", raw=jsonl, content_type="application/x-ndjson")[0] == 200
    assert admin.post(f"/api/campaigns/{cid}/annotators/", {"usernames": names})[0] == 200
    assert admin.post(f"/api/campaigns/{cid}/start/")[0] == 202
    platform.wait_for(
        lambda: (admin.get(f"/api/campaigns/{cid}/progress/")[1]["round"] or {}).get("comparisons") == PROMPTS,
        timeout=300, what="round 0 to open",
    )

    # The burst, through two Redis outages.
    burst = Burst(private_redis)
    threads = [
        threading.Thread(target=annotate, args=(burst, clients[name], name, cid, i), name=name)
        for i, name in enumerate(names)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "an annotator never finished"
    assert not burst.failures, burst.failures
    assert burst.pending == [] and not burst.redis_up, "the burst ended before both outages happened"
    private_redis.start()  # the same port, empty: whatever was queued before the kill is gone
    print(f"\nacknowledged {len(burst.acked)} ratings ({burst.acked_while_down} while Redis was down), "
          f"refused {len(burst.refused)}, retries {burst.retries}, connection errors {burst.connection_errors}")

    # Every call got a definite answer and none was a server error.
    assert burst.server_errors == [], burst.server_errors[:5]
    assert burst.refused == [], burst.refused[:5]
    assert burst.acked_while_down >= TOTAL // 4, "too few ratings fell inside the outages to test anything"

    # In the database: exactly the acknowledged ratings, once each, k per comparison, no annotator twice.
    with psycopg.connect(platform.env["DATABASE_URL"]) as db:
        rows = db.execute(
            """SELECT r.idempotency_key::text, r.comparison_id, u.username
               FROM annotate_rating r JOIN auth_user u ON u.id = r.annotator_id
               JOIN annotate_comparison c ON c.id = r.comparison_id
               JOIN annotate_round rd ON rd.id = c.round_id WHERE rd.campaign_id = %s""",
            [cid],
        ).fetchall()
        per_comparison = dict(db.execute(
            """SELECT c.id, count(r.id) FROM annotate_comparison c
               JOIN annotate_round rd ON rd.id = c.round_id AND rd.campaign_id = %s AND rd.index = 0
               LEFT JOIN annotate_rating r ON r.comparison_id = c.id GROUP BY c.id""",
            [cid],
        ).fetchall())
        counters = dict(db.execute(
            """SELECT c.id, c.rating_count FROM annotate_comparison c
               JOIN annotate_round rd ON rd.id = c.round_id AND rd.campaign_id = %s AND rd.index = 0""",
            [cid],
        ).fetchall())
    assert len(rows) == len({row[0] for row in rows}), "an idempotency key was stored twice"
    assert sorted(rows) == sorted(burst.acked), "the database and the acknowledged ratings differ"
    assert len({(c, a) for _, c, a in rows}) == len(rows), "an annotator rated a comparison twice"
    assert len(per_comparison) == PROMPTS
    assert set(per_comparison.values()) == {K}, f"comparisons not at k={K}: {per_comparison}"
    assert counters == per_comparison

    # The round was completed while Redis was down: the sweep starts training once it is back.
    def trained():
        runs = admin.get(f"/api/training-runs/?campaign={cid}")[1]
        train = next((r for r in runs if r["kind"] == "train"), None)
        assert train is None or train["status"] != "failed", train["error"]
        progress = admin.get(f"/api/campaigns/{cid}/progress/")[1]
        opened = progress["round"] and progress["round"]["round"] == 1
        return train if train and train["status"] == "succeeded" and opened else None

    train = platform.wait_for(trained, timeout=TRAIN_TIMEOUT_S, what="the complete round to be trained on")
    assert train["round"] is not None
    web_log = (platform.workdir / "web.log").read_text(errors="replace")
    worker_log = (platform.workdir / "worker.log").read_text(errors="replace")
    assert "could not queue its progress check" in web_log, "no round check was lost: the outages missed the fills"
    assert "started by the sweep" in worker_log, "training was not started by the sweep"
