"""Simulated raters taking turns on one thread (Simulation), and the config
of a pool of them (SimulationConfig, checked by simulation_config_errors).
No Django: the raters reach the platform through a RaterClient
(annotate/simulation/clients.py), over HTTP or through the services in
this process; annotate/services/simulation.py makes their accounts and
runs them, and the reviewer that accepts what they write.

Raters who write: with `references` (a JSONL file, question -> reference
answer) a rater calls both answers bad when the question's reference beats
the better one by `both_bad_margin` or more, and sends the reference as its
demonstration with that rating, in the rating's body as the rating page
does (docs/simulation.md, "Raters who write").
"""
from __future__ import annotations

import heapq
import math
import random
import re
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

from annotate.apis.client import TransportError
from annotate.simulation.clients import RaterClient
from annotate.simulation.preference import (
    Judge, preference_parse, references_load, simulated_choice, simulated_ranking,
)

@dataclass
class SimulationConfig:
    """One pool of simulated raters and how they judge. Stored as a dict in
    the Celery task's arguments; every field is a flag of `simulate_raters`."""

    preference: str = "shorter"  # shorter | longer | keyword:<word> | reward:<reward model folder or RewardModelVersion id>
    strength: float = 4.0  # logistic scale: P(pick A) = sigmoid(strength x margin); higher = more decisive, fewer ties
    noise: float = 0.0  # probability of a random pick (A or B, random strength), whatever the answers say
    position_bias: float = 0.0  # probability of picking the left answer (A), whatever the answers say
    seconds_per_rating: float = 0.0  # mean time to read and rate one comparison; each rater is within ±25% of it; 0 = no wait
    raters: int = 3  # simulated annotators in this pool
    seed: int = 0  # choices, speeds
    label: str = "r"  # names the pool: sim-c<campaign>-<label><i>; pools with other labels can rate the same campaign
    max_ratings: int | None = None  # stop after this many ratings in all; None = no cap
    rounds: int | None = 1  # rounds to rate, from the one open now, waiting for training in between
    wait_timeout_s: float = 6 * 3600.0  # give up waiting for the next round after this long
    references: str = ""  # JSONL of {"prompt", "reference"} (or "chosen": the shipped data's preferred answers): what the raters write, and what the reference preference compares with
    write: bool = True  # with references: write the reference on both bad; False = only judge by it (a pool that never writes)
    both_bad_margin: float | None = None  # with references: both bad (and the reference written) when it beats the better answer by this much (log-odds); None = 1.0
    review: bool = False  # simulated reviewers accept what the pool writes (the review service the console calls), so that it trains


# With references and no both_bad_margin: the reference beats the better
# answer by e (2.7) times in the preference's odds before both are "bad".
DEFAULT_BOTH_BAD_MARGIN = 1.0


LABEL = re.compile(r"[a-z0-9]{1,20}")
LIMITS = {"raters": (1, 200), "rounds": (1, 1000), "max_ratings": (1, 10_000_000)}


def simulation_config_errors(values: dict) -> dict[str, str]:
    """Every problem with a config dict, by field (empty when it is good).
    Reward model ids are checked against the database by simulation_config_build."""
    errors: dict[str, str] = {}
    known = {f.name for f in fields(SimulationConfig)}
    for key in sorted(set(values) - known):
        errors[key] = f"not a setting (known: {', '.join(sorted(known))})"
    defaults = SimulationConfig()
    for name in ("strength", "noise", "position_bias", "seconds_per_rating", "wait_timeout_s", "both_bad_margin"):
        value = values.get(name, getattr(defaults, name))
        if value is None and name == "both_bad_margin":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            errors[name] = f"must be a number, not {value!r}"
    for name in ("raters", "seed", "rounds", "max_ratings"):
        value = values.get(name, getattr(defaults, name))
        if value is None and name in ("rounds", "max_ratings"):
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            errors[name] = f"must be a whole number, not {value!r}"
        elif name in LIMITS and not LIMITS[name][0] <= value <= LIMITS[name][1]:
            errors[name] = f"must be between {LIMITS[name][0]} and {LIMITS[name][1]}, not {value}"
    if errors:
        return errors
    merged = {**asdict(defaults), **values}
    try:
        preference_parse(merged["preference"] if isinstance(merged["preference"], str) else "")
    except ValueError as exc:
        errors["preference"] = str(exc)
    if not 0 < merged["strength"] <= 1000:
        errors["strength"] = f"must be above 0 and at most 1000, not {merged['strength']}"
    for name in ("noise", "position_bias"):
        if not 0 <= merged[name] <= 1:
            errors[name] = f"is a probability: between 0 and 1, not {merged[name]}"
    if "noise" not in errors and "position_bias" not in errors and merged["noise"] + merged["position_bias"] > 1:
        errors["position_bias"] = (
            f"noise + position_bias is {merged['noise'] + merged['position_bias']:g}; together they can be at most 1"
        )
    if not 0 <= merged["seconds_per_rating"] <= 3600:
        errors["seconds_per_rating"] = f"must be between 0 and 3600 seconds, not {merged['seconds_per_rating']}"
    if not 0 < merged["wait_timeout_s"] <= 7 * 24 * 3600:
        errors["wait_timeout_s"] = f"must be above 0 and at most a week (604800), not {merged['wait_timeout_s']}"
    if not isinstance(merged["label"], str) or not LABEL.fullmatch(merged["label"]):
        errors["label"] = f"1 to 20 lowercase letters or digits, not {merged['label']!r}"
    for name in ("review", "write"):
        if not isinstance(merged[name], bool):
            errors[name] = f"true or false, not {merged[name]!r}"
    if not isinstance(merged["references"], str):
        errors["references"] = f"a JSONL file's path, not {merged['references']!r}"
    elif merged["references"]:
        try:
            references_load(merged["references"])
        except (OSError, ValueError) as exc:
            errors["references"] = f"cannot be read: {exc}"
    if merged["review"] is True and not (merged["references"] and merged["write"] is True):
        errors["review"] = "the raters write nothing to review: give them references, with write on"
    if ("references" not in errors and not merged["references"] and "preference" not in errors
            and preference_parse(merged["preference"]).kind == "reference"):
        errors["references"] = "the reference preference needs the references file it compares with"
    if merged["both_bad_margin"] is not None and "both_bad_margin" not in errors and not 0 <= merged["both_bad_margin"] <= 100:
        errors["both_bad_margin"] = f"must be between 0 and 100 (log-odds), not {merged['both_bad_margin']}"
    return errors


@dataclass
class Rater:
    username: str
    client: RaterClient
    rng: random.Random
    seconds_per_rating: float  # this rater's own speed
    held: dict | None = None  # the comparison leased and being read
    leased_at: float = 0.0
    idle: bool = False  # nothing left for them in the round open now
    stopped: str = ""  # why they stopped for good (paused, removed, ...)
    ratings: int = 0
    skips: int = 0
    lost: int = 0  # ratings the server refused (409: lease lost, round closed)
    choices: Counter = field(default_factory=Counter)
    demonstrations: int = 0  # ratings sent with a written answer, and stored


@dataclass
class SimulationResult:
    ratings: int = 0
    skips: int = 0
    lost: int = 0
    demonstrations: int = 0  # ratings stored with a demonstration (the reference written on both bad)
    reviewed: int = 0  # of those, reviewed by the simulated reviewers
    rounds: list[int] = field(default_factory=list)  # round indexes rated in
    seconds: float = 0.0
    ended: str = ""  # why the run ended
    waiting_for_round: int | None = None  # set when it ended to wait for this round to open
    raters: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


class Simulation:
    """Raters taking turns on one thread, each at their own pace: a rater
    leases a comparison, reads it for their seconds_per_rating (other raters
    act meanwhile, holding their own leases), then submits and leases the
    next. One thread keeps the order of events, and so the results, the same
    for the same seed when there is no wait (and no thread shares a database
    connection); the server is what is under test, not the client."""

    def __init__(self, *, campaign_id: int, config: SimulationConfig, accounts: list[tuple[str, str]],
                 make_client: Callable[[str], RaterClient], judge: Judge, step: int = 0,
                 on_event: Callable[[str, "SimulationResult"], None] | None = None,
                 review: Callable[[int, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        """`review(rating_id, text written)`: called after each rating stored
        with a demonstration (the simulated reviewers), or None to leave
        them to people. The judge's references are what the raters write."""
        self.campaign_id, self.config, self.judge, self.review = campaign_id, config, judge, review
        margin = config.both_bad_margin
        self.both_bad_margin = DEFAULT_BOTH_BAD_MARGIN if margin is None else margin
        self.on_event = on_event or (lambda kind, result: None)
        self.clock, self.sleep = clock, sleep
        self.raters = []
        for username, token in accounts:
            rng = random.Random(f"{config.seed}:{step}:{username}")
            speed = config.seconds_per_rating * (0.75 + 0.5 * rng.random())
            self.raters.append(Rater(username, make_client(token), rng, speed))
        self.result = SimulationResult()
        self.started = self.clock()

    # -- one rater's moves ------------------------------------------------------------
    def _call(self, send: Callable[[], tuple[int, object]]) -> tuple[int, object]:
        """A request, sent again (same body, so the same idempotency key) when
        the connection failed: at most one rating results (docs/architecture.md,
        invariant 3)."""
        for attempt in range(4):
            try:
                return send()
            except TransportError:
                if attempt == 3:
                    raise
                self.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def _lease(self, rater: Rater) -> bool:
        """Ask for the next comparison; True when one was leased."""
        status, body = self._call(lambda: rater.client.next(self.campaign_id))
        if status == 200:
            rater.held, rater.leased_at = body, self.clock()
            return True
        if status == 204:
            rater.idle = True
        elif status in (403, 404, 409, 429):
            # paused (by an admin or the gold check), removed, campaign paused
            # or archived, daily limit: what a person would be told.
            detail = body.get("detail", body) if isinstance(body, dict) else body
            rater.stopped = f"next answered {status}: {detail}"
            self.on_event(f"{rater.username} stopped: {rater.stopped}", self.result)
        else:
            rater.stopped = f"next answered {status}: {body}"
            self.on_event(f"{rater.username} stopped: {rater.stopped}", self.result)
        return False

    def _submit(self, rater: Rater) -> None:
        held, rater.held = rater.held, None
        comparison = held["comparison"]
        prompt = held.get("prompt_turns") or held["prompt"]
        if held.get("answers"):  # a k-set: a ranking
            self._submit_ranking(rater, held, prompt)
            return
        try:
            margin = self.judge.margin(prompt, held["response_a"], held["response_b"])
        except Exception as exc:  # a judge that cannot judge this one: give it back, say why
            reason = f"simulated rater could not judge it: {exc}"[:500]
            self._call(lambda: rater.client.skip(comparison, reason))  # refused or not, the rater moves on
            rater.skips += 1
            self.result.skips += 1
            return
        # simulated_choice's first draw decides a careless click (noise,
        # position bias); peeked here, the draws it makes stay the same.
        state = rater.rng.getstate()
        careless = rater.rng.random() < self.config.noise + self.config.position_bias
        rater.rng.setstate(state)
        choice, strength = simulated_choice(
            margin, strength=self.config.strength, noise=self.config.noise,
            position_bias=self.config.position_bias, rng=rater.rng,
        )
        written = None if careless else self._writes(prompt, held)
        if written is not None:
            choice, strength = "both_bad", None
        payload = {
            "comparison": comparison,
            "choice": choice,
            "strength": strength,
            "reason": "",
            "time_on_task_ms": int(1000 * (self.clock() - rater.leased_at)),
            "idempotency_key": str(uuid.uuid4()),
        }
        if written is not None:
            # As the rating page sends it (rate.js, rate_demo.js): written
            # from nothing on both bad (origin ''), in the rating's body.
            payload["demonstration"] = {"text": written, "origin": "", "time_on_task_ms": payload["time_on_task_ms"]}
        self._send_rating(rater, held, payload, written=written)

    def _submit_ranking(self, rater: Rater, held: dict, prompt) -> None:
        """A k-set's ranking by the preference (simulated_ranking); a
        ranking comes with no demonstration (the rating API refuses one)."""
        texts = [a["text"] for a in held["answers"]]
        try:
            scores = self.judge.scores([prompt] * len(texts), texts)
        except Exception as exc:  # as _submit: give it back, say why
            reason = f"simulated rater could not judge it: {exc}"[:500]
            self._call(lambda: rater.client.skip(held["comparison"], reason))
            rater.skips += 1
            self.result.skips += 1
            return
        ranking = simulated_ranking(scores, strength=self.config.strength, noise=self.config.noise, rng=rater.rng)
        payload = {
            "comparison": held["comparison"],
            "ranking": ranking,
            "reason": "",
            "time_on_task_ms": int(1000 * (self.clock() - rater.leased_at)),
            "idempotency_key": str(uuid.uuid4()),
        }
        self._send_rating(rater, held, payload, written=None)

    def _send_rating(self, rater: Rater, held: dict, payload: dict, *, written: str | None) -> None:
        choice = payload.get("choice", "ranking")
        status, body = self._call(lambda: rater.client.rate(payload))
        if status in (200, 201):
            rater.ratings += 1
            rater.choices[choice] += 1
            self.result.ratings += 1
            if written is not None and status == 201:
                rater.demonstrations += 1
                self.result.demonstrations += 1
                if self.review is not None:
                    self.review(body["id"], written)
                    self.result.reviewed += 1
            if held["round"] not in self.result.rounds:
                self.result.rounds.append(held["round"])
            self.on_event("rating", self.result)
        elif status == 409:
            # The lease ran out and someone else filled the comparison, or the
            # round closed: the server said so and stored nothing.
            rater.lost += 1
            self.result.lost += 1
        else:
            rater.stopped = f"rating answered {status}: {body}"
            self.on_event(f"{rater.username} stopped: {rater.stopped}", self.result)

    def _writes(self, prompt, held: dict) -> str | None:
        """The reference this rater writes for the comparison (and so calls
        both bad), or None: when the question has one and it beats the better
        answer by both_bad_margin or more. Asked only on a careful look: a
        careless click (noise, position bias) reads neither answer."""
        if not (self.config.write and self.judge.references):
            return None
        found = self.judge.reference_margin(prompt, held["response_a"], held["response_b"])
        if found is None or not found[1] >= self.both_bad_margin:
            return None
        return found[0]

    # -- the event loop -----------------------------------------------------------------
    def _round_now(self) -> dict | None:
        for rater in self.raters:
            if not rater.stopped:
                status, body = self._call(lambda: rater.client.progress(self.campaign_id))
                if status == 200 and isinstance(body, dict):
                    return body.get("round")
        return None

    def run(self, *, until_round: int | None, rated_before: int = 0, time_budget_s: float | None = None,
            deadline: float | None = None, wait: bool = True, poll_s: float = 2.0) -> SimulationResult:
        """Rate until nothing is left for these raters in round `until_round`
        (None: in the round open now), waiting for training to open each
        round up to it. `rated_before`: ratings of earlier steps of the same
        simulation (counted against max_ratings). `time_budget_s`: stop
        taking new leases after this long (what is held is still rated).
        `deadline` (time.time()): give up waiting for a round after it.
        `wait=False`: instead of sleeping until the next round opens, return
        with result.waiting_for_round set (the Celery task re-queues itself)."""
        started = self.clock()
        cap = None if self.config.max_ratings is None else self.config.max_ratings - rated_before

        def out_of_time() -> bool:
            return time_budget_s is not None and self.clock() - started >= time_budget_s

        while True:
            queue = [(self.clock(), i) for i, r in enumerate(self.raters) if not r.stopped]
            heapq.heapify(queue)
            for rater in self.raters:
                rater.idle = False
            while queue:
                ready_at, i = heapq.heappop(queue)
                rater = self.raters[i]
                delay = ready_at - self.clock()
                if delay > 0:
                    self.sleep(delay)
                if rater.held is not None:
                    self._submit(rater)
                    if not rater.stopped:
                        heapq.heappush(queue, (self.clock(), i))
                    continue
                held = sum(r.held is not None for r in self.raters)
                if (cap is not None and self.result.ratings + held >= cap) or out_of_time():
                    continue  # takes no new lease; the others finish what they hold
                if self._lease(rater):
                    think = rater.seconds_per_rating * (0.8 + 0.4 * rater.rng.random())
                    heapq.heappush(queue, (self.clock() + think, i))
            # Every rater is idle, stopped or out of turns.
            if cap is not None and self.result.ratings >= cap:
                return self._end("max_ratings reached")
            if all(r.stopped for r in self.raters):
                return self._end("every rater stopped")
            if out_of_time():
                return self._end("time budget of this step used")
            if until_round is None:
                return self._end("nothing left to rate in the round open now")
            now = self._round_now()
            if now is not None and now["round"] >= until_round:
                return self._end(f"nothing left to rate in round {now['round']}")
            if now is not None and now["status"] == "failed":
                return self._end(f"training after round {now['round']} failed; no next round to rate")
            # Wait for training to open the next round (or for leases others hold to run out).
            waiting = 0 if now is None else now["round"] + 1
            if deadline is not None and time.time() > deadline:
                return self._end(f"gave up waiting for round {waiting} to open")
            if not wait:
                self.result.waiting_for_round = waiting
                return self._end(f"waiting for round {waiting} to open")
            self.on_event(f"waiting for round {waiting} to open", self.result)
            while True:
                self.sleep(poll_s)
                later = self._round_now()
                if later is not None and (now is None or later["round"] != now["round"] or later["status"] == "failed"):
                    break
                if (later is not None and later["status"] == "collecting"
                        and later["complete_comparisons"] < later["comparisons"]):
                    break  # work may have come back (someone's lease ran out): ask again
                if deadline is not None and time.time() > deadline:
                    return self._end(f"gave up waiting for round {waiting} to open")

    def _end(self, why: str) -> SimulationResult:
        result = self.result
        result.ended = why
        result.seconds = round(self.clock() - self.started, 3)
        result.raters = {
            r.username: {"ratings": r.ratings, "skips": r.skips, "lost": r.lost, "choices": dict(r.choices),
                         "demonstrations": r.demonstrations,
                         "seconds_per_rating": round(r.seconds_per_rating, 3), "stopped": r.stopped}
            for r in self.raters
        }
        return result
