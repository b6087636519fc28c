"""Simulated raters: annotator accounts that rate through the same HTTP API
people use, with a chosen preference, noise, position bias and speed.

For dry-running a campaign before paying annotators, for load, and to show
that the loop moves the model (bench/simulated_campaign.py). A simulated
rater is an ordinary user in the `annotator` group and the `simulated`
group, named `sim-c<campaign>-<label><i>`, added to the campaign's pool like
anyone else: the quality pages, gold pairs and auto-pause treat it as they
treat a person. It asks `POST /api/campaigns/<id>/next/`, judges the two
answers and `POST /api/ratings/` with a fresh idempotency key (the same key
again when a send fails), and skips what it cannot judge.

    python manage.py simulate_raters --campaign 1 --raters 3 --preference shorter --noise 0.1
    POST /api/campaigns/1/simulate/ {"raters": 3, "preference": "shorter", "noise": 0.1}   (staff)

Three parts, top to bottom:
1. the preference and the rater's decision: pure functions, no Django and no
   torch at import, so bench/ judges win rates with the very same code;
2. clients: real HTTP against a base URL, or in-process through Django's
   full middleware / URL / view stack (the Celery task behind the staff API);
3. the services: validate a config, create the raters, run them.

Django models are imported inside the functions that need them (part 3), so
that importing this module needs no configured Django (part 1 for bench/).
"""
from __future__ import annotations

import heapq
import json
import math
import random
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Protocol

# --- 1. the preference: pure functions -----------------------------------------------

PREFERENCE_KINDS = ("shorter", "longer", "keyword", "reward")
# |strength x margin| under this is "no visible difference": the rater says tie.
TIE_Z = 0.25
# |strength x margin| at which a pick becomes "clearly" (2) and "much" (3) better.
STRENGTH_Z = (1.5, 3.0)
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Preference:
    """What a simulated rater wants. `arg`: the keyword, or the reward model
    (a folder, or a RewardModelVersion id resolved to its folder)."""

    kind: str
    arg: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind


def preference_parse(spec: str) -> Preference:
    """'shorter' | 'longer' | 'keyword:<word>' | 'reward:<folder or id>'; ValueError says what is wrong."""
    spec = (spec or "").strip()
    kind, _, arg = spec.partition(":")
    kind, arg = kind.strip().lower(), arg.strip()
    if kind not in PREFERENCE_KINDS:
        raise ValueError(
            f"unknown preference {spec!r}; use shorter, longer, keyword:<word> or reward:<reward model folder or version id>"
        )
    if kind in ("shorter", "longer") and arg:
        raise ValueError(f"'{kind}' takes no argument; got {spec!r}")
    if kind == "keyword" and not _WORD.fullmatch(arg):
        raise ValueError(f"keyword:<word> needs one word of letters or digits, e.g. keyword:because; got {spec!r}")
    if kind == "reward" and not arg:
        raise ValueError("reward:<…> needs a reward model folder or a RewardModelVersion id, e.g. reward:3")
    return Preference(kind, arg.lower() if kind == "keyword" else arg)


def answer_words(text: str) -> int:
    return len(_WORD.findall(text))


# A scorer maps (prompts, answers) to one float each (rlhf.reward.RewardScorer).
Scorer = Callable[[list, list[str]], list[float]]


def preference_scores(preference: Preference, prompts: list, answers: list[str], *, scorer: Scorer | None = None) -> list[float]:
    """How much the preference likes each answer (higher is better), on a
    log scale so that differences read as log-odds. An answer with no word
    in it answers nothing: -inf under every preference, so that "shorter"
    can never be won by saying nothing."""
    if preference.kind == "reward":
        if scorer is None:
            raise ValueError("a reward preference needs its scorer (rlhf.reward.RewardScorer)")
        raw = scorer(list(prompts), list(answers))
    else:
        raw = []
        for text in answers:
            if preference.kind == "keyword":
                raw.append(math.log1p(len(re.findall(rf"\b{re.escape(preference.arg)}\b", text, flags=re.I))))
            else:
                n = answer_words(text)
                raw.append(math.log1p(n) * (-1.0 if preference.kind == "shorter" else 1.0))
    return [(-math.inf if answer_words(text) == 0 else float(s)) for s, text in zip(raw, answers)]


def preference_margin(score_a: float, score_b: float) -> float:
    """How much better A is than B (log-odds units); NaN when both answer nothing."""
    if score_a == score_b:
        return 0.0 if not math.isinf(score_a) else math.nan
    return score_a - score_b


def preference_outcome(margin: float) -> float:
    """The preference's own verdict for A: 1 win, 0.5 tie, 0 loss (no noise, no bias)."""
    if math.isnan(margin) or margin == 0:
        return 0.5
    return 1.0 if margin > 0 else 0.0


def simulated_choice(
    margin: float, *, strength: float, noise: float, position_bias: float, rng: random.Random
) -> tuple[str, int | None]:
    """One rater's answer for a comparison whose margin (A over B) is given.

    With probability `noise` a random pick of A or B with a random strength
    (a careless click); with probability `position_bias` A, the left answer,
    whatever it says; otherwise the Bradley-Terry rater: A with probability
    sigmoid(strength x margin), a tie when the difference is too small to see,
    and a rating strength that grows with how clear the difference is."""
    u = rng.random()
    if u < noise:
        return rng.choice("AB"), rng.randint(1, 3)
    if u < noise + position_bias:
        return "A", rng.randint(1, 3)
    if math.isnan(margin):
        return "both_bad", None
    z = strength * margin
    if abs(z) < TIE_Z:
        return "tie", None
    p_a = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
    choice = "A" if rng.random() < p_a else "B"
    return choice, 1 + sum(abs(z) >= cut for cut in STRENGTH_Z)


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (ties may count as halves)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


class Judge:
    """A preference ready to score answers; a reward model is loaded (torch,
    lazily) the first time it is needed, once, and shared by every rater."""

    def __init__(self, preference: Preference, reward_path: str | None = None):
        self.preference, self.reward_path = preference, reward_path
        self._scorer = None
        self._lock = threading.Lock()

    def scorer(self) -> Scorer | None:
        if self.preference.kind != "reward":
            return None
        with self._lock:
            if self._scorer is None:
                from rlhf.reward import RewardScorer  # torch: only where a reward preference is judged

                self._scorer = RewardScorer(self.reward_path)
            return self._scorer

    def scores(self, prompts: list, answers: list[str]) -> list[float]:
        return preference_scores(self.preference, prompts, answers, scorer=self.scorer())

    def margin(self, prompt, answer_a: str, answer_b: str) -> float:
        a, b = self.scores([prompt, prompt], [answer_a, answer_b])
        return preference_margin(a, b)


# --- 2. clients -----------------------------------------------------------------------


class TransportError(Exception):
    """The request may not have reached the server (connection refused, reset, timeout)."""


class ApiClient(Protocol):
    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]: ...


class HttpClient:
    """The API over real HTTP (urllib), with an annotator's token."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 60.0):
        self.base, self.token, self.timeout_s = base_url.rstrip("/"), token, timeout_s

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Token {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as answer:
                return answer.status, _parsed(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _parsed(exc.read())
        except (urllib.error.URLError, OSError) as exc:
            raise TransportError(f"{method} {self.base}{path}: {exc}") from exc


class InProcessClient:
    """The API through Django's whole request stack (middleware, URLs,
    authentication, views) in this process, without a socket: what the
    Celery task behind the staff API uses, and the tests."""

    def __init__(self, token: str):
        from django.conf import settings
        from django.test import Client

        self.token = token
        self.client = Client(raise_request_exception=False)
        hosts = [h.lstrip(".") for h in settings.ALLOWED_HOSTS if h not in ("*", "")]
        self.host = "testserver" if ("*" in settings.ALLOWED_HOSTS or "testserver" in hosts or not hosts) else hosts[0]
        # With SECURE_SSL_REDIRECT on, a plain-http request is answered 301.
        self.secure = bool(getattr(settings, "SECURE_SSL_REDIRECT", False))

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        kwargs = dict(secure=self.secure, HTTP_HOST=self.host, HTTP_AUTHORIZATION=f"Token {self.token}",
                      HTTP_ACCEPT="application/json")
        if body is not None:
            kwargs.update(data=json.dumps(body), content_type="application/json")
        answer = getattr(self.client, method.lower())(path, **kwargs)
        return answer.status_code, _parsed(answer.content)


def _parsed(payload: bytes):
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace")[:500]


def client_factory(url: str | None) -> Callable[[str], ApiClient]:
    """token -> client: HTTP against `url`, or in-process when url is None."""
    if url:
        return lambda token: HttpClient(url, token)
    return InProcessClient


# --- the run ---------------------------------------------------------------------------


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
    for name in ("strength", "noise", "position_bias", "seconds_per_rating", "wait_timeout_s"):
        value = values.get(name, getattr(defaults, name))
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
    return errors


@dataclass
class Rater:
    username: str
    client: ApiClient
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


@dataclass
class SimulationResult:
    ratings: int = 0
    skips: int = 0
    lost: int = 0
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
                 make_client: Callable[[str], ApiClient], judge: Judge, step: int = 0,
                 on_event: Callable[[str, "SimulationResult"], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.campaign_id, self.config, self.judge = campaign_id, config, judge
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
    def _call(self, rater: Rater, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        """A request, sent again (same body, so the same idempotency key) when
        the connection failed: at most one rating results (invariant 3)."""
        for attempt in range(4):
            try:
                return rater.client.request(method, path, body)
            except TransportError:
                if attempt == 3:
                    raise
                self.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def _lease(self, rater: Rater) -> bool:
        """Ask for the next comparison; True when one was leased."""
        status, body = self._call(rater, "POST", f"/api/campaigns/{self.campaign_id}/next/")
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
        try:
            margin = self.judge.margin(prompt, held["response_a"], held["response_b"])
        except Exception as exc:  # a judge that cannot judge this one: give it back, say why
            status, body = self._call(rater, "POST", f"/api/comparisons/{comparison}/skip/",
                                      {"reason": f"simulated rater could not judge it: {exc}"[:500]})
            rater.skips += 1
            self.result.skips += 1
            return
        choice, strength = simulated_choice(
            margin, strength=self.config.strength, noise=self.config.noise,
            position_bias=self.config.position_bias, rng=rater.rng,
        )
        payload = {
            "comparison": comparison,
            "choice": choice,
            "strength": strength,
            "reason": "",
            "time_on_task_ms": int(1000 * (self.clock() - rater.leased_at)),
            "idempotency_key": str(uuid.uuid4()),
        }
        status, body = self._call(rater, "POST", "/api/ratings/", payload)
        if status in (200, 201):
            rater.ratings += 1
            rater.choices[choice] += 1
            self.result.ratings += 1
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

    # -- the event loop -----------------------------------------------------------------
    def _round_now(self) -> dict | None:
        for rater in self.raters:
            if not rater.stopped:
                status, body = self._call(rater, "GET", f"/api/campaigns/{self.campaign_id}/progress/")
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
                         "seconds_per_rating": round(r.seconds_per_rating, 3), "stopped": r.stopped}
            for r in self.raters
        }
        return result


# --- 3. services ------------------------------------------------------------------------

SIMULATED_GROUP = "simulated"
USERNAME_PREFIX = "sim-"


def simulated_username(*, campaign_id: int, label: str, index: int) -> str:
    return f"{USERNAME_PREFIX}c{campaign_id}-{label}{index}"


def simulation_config_build(*, campaign, values: dict) -> tuple[SimulationConfig, str | None]:
    """A checked config and the reward model folder its preference needs (if
    any); ValidationFailed naming every bad field otherwise. Reads only."""
    from annotate.errors import ValidationFailed
    from annotate.models import RewardModelVersion

    errors = simulation_config_errors(values)
    if errors:
        raise ValidationFailed(
            "Bad simulation settings: " + "; ".join(f"{k} {v}" for k, v in errors.items()), details=errors
        )
    config = SimulationConfig(**values)
    preference = preference_parse(config.preference)
    reward_path = None
    if preference.kind == "reward":
        if preference.arg.isdigit():
            version = RewardModelVersion.objects.filter(pk=int(preference.arg), campaign=campaign).first()
            if version is None:
                raise ValidationFailed(
                    f"preference: no reward model version with id {preference.arg} in campaign '{campaign.name}'.",
                    details={"preference": f"no reward model version {preference.arg} in this campaign"},
                )
            reward_path = version.path
        else:
            folder = Path(preference.arg)
            if not (folder / "config.json").is_file():
                raise ValidationFailed(
                    f"preference: {preference.arg} is not a reward model folder (no config.json in it).",
                    details={"preference": "not a reward model folder (no config.json)"},
                )
            reward_path = str(folder)
    return config, reward_path


def simulated_raters_ensure(*, campaign, config: SimulationConfig) -> list[tuple[str, str]]:
    """The pool's accounts, (username, API token) each: created when missing
    (annotator role, `simulated` group, an unusable password: they
    authenticate by token) and added to the campaign's pool through the pool
    service. A rater paused earlier stays paused. A username taken by someone
    who is not simulated is a Conflict: this never touches a person's account."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import transaction
    from rest_framework.authtoken.models import Token

    from annotate.errors import Conflict
    from annotate.models import Role
    from annotate.services.memberships import memberships_add
    from annotate.services.users import user_create_or_update

    User = get_user_model()
    names = [simulated_username(campaign_id=campaign.pk, label=config.label, index=i) for i in range(config.raters)]
    with transaction.atomic():
        group, _ = Group.objects.get_or_create(name=SIMULATED_GROUP)
        existing = {u.username: u for u in User.objects.filter(username__in=names).prefetch_related("groups")}
        people = sorted(n for n, u in existing.items() if SIMULATED_GROUP not in {g.name for g in u.groups.all()})
        if people:
            raise Conflict(f"Usernames {', '.join(people)} belong to people, not simulated raters; use another label.",
                           details={"label": "taken by real accounts; use another label"})
        for name in names:
            if name not in existing:
                # password None: an unusable one (no hashing, nobody can log in
                # with it); simulated raters authenticate with their token.
                user, _ = user_create_or_update(username=name, password=None, roles=[Role.ANNOTATOR])
                user.groups.add(group)
        memberships_add(campaign=campaign, usernames=names)
        tokens = dict(Token.objects.filter(user__username__in=names).values_list("user__username", "key"))
        for name in names:
            if name not in tokens:
                tokens[name] = Token.objects.create(user=User.objects.get(username=name)).key
    return [(name, tokens[name]) for name in names]


def simulation_until_round(*, campaign, config: SimulationConfig) -> int | None:
    """The last round index to rate: rounds counted from the round open now
    (from round 0 when none is open yet); None when rounds is None."""
    from annotate.selectors.rounds import campaign_current_round

    if config.rounds is None:
        return None
    current = campaign_current_round(campaign=campaign)
    return (current.index if current is not None else 0) + config.rounds - 1


def simulation_run(*, campaign, config: SimulationConfig, reward_path: str | None = None, url: str | None = None,
                   until_round: int | None = None, on_event=None, step: int = 0, rated_before: int = 0,
                   time_budget_s: float | None = None, deadline: float | None = None,
                   wait: bool = True) -> SimulationResult:
    """Create (or find) the raters and let them rate through the API: over
    HTTP at `url`, or in-process when url is None. See Simulation.run."""
    accounts = simulated_raters_ensure(campaign=campaign, config=config)
    judge = Judge(preference_parse(config.preference), reward_path)
    simulation = Simulation(campaign_id=campaign.pk, config=config, accounts=accounts,
                            make_client=client_factory(url), judge=judge, step=step, on_event=on_event)
    return simulation.run(until_round=until_round, rated_before=rated_before, time_budget_s=time_budget_s,
                          deadline=deadline, wait=wait)


# One Celery task call rates for about this long, then hands the worker back
# (the task queues itself again), so a long simulation never holds up the
# round-complete checks and exports that share the default queue.
STEP_SECONDS = 60.0


@dataclass
class SimulationStart:
    campaign: int
    usernames: list[str]
    config: dict
    until_round: int | None
    task_id: str


def simulation_start(*, campaign, values: dict) -> SimulationStart:
    """Check the config, create the raters and put them in the pool, and
    queue the task that runs them (after the commit). Nothing is written
    when the config is bad or the campaign takes no ratings."""
    from django.db import transaction

    from annotate.errors import Conflict
    from annotate.models import Campaign

    config, _ = simulation_config_build(campaign=campaign, values=values)
    if campaign.status in (Campaign.Status.PAUSED, Campaign.Status.ARCHIVED):
        raise Conflict(f"Campaign '{campaign.name}' is {campaign.status}; simulated raters would get no work.")
    with transaction.atomic():
        accounts = simulated_raters_ensure(campaign=campaign, config=config)
        until_round = simulation_until_round(campaign=campaign, config=config)
        task_id = str(uuid.uuid4())
        kwargs = dict(campaign_id=campaign.pk, config=asdict(config), until_round=until_round,
                      started_at=time.time(), deadline=time.time() + config.wait_timeout_s)

        def enqueue() -> None:
            from annotate.tasks import simulate_raters_task

            simulate_raters_task.apply_async(kwargs=kwargs, task_id=task_id)

        transaction.on_commit(enqueue)
    return SimulationStart(campaign=campaign.pk, usernames=[a[0] for a in accounts], config=asdict(config),
                           until_round=until_round, task_id=task_id)


def simulation_step(*, campaign_id: int, config: dict, until_round: int | None, started_at: float, deadline: float,
                    step: int = 0) -> float | None:
    """One Celery task's share of a simulation: rate in-process for up to
    STEP_SECONDS; returns the delay before the next share, or None when the
    simulation is over. Ratings since `started_at` by this pool count
    against max_ratings, so a redelivered step never rates past the cap."""
    import datetime as dt

    from annotate.models import Campaign, Rating

    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        return None
    checked, reward_path = simulation_config_build(campaign=campaign, values=config)
    names = [simulated_username(campaign_id=campaign_id, label=checked.label, index=i) for i in range(checked.raters)]
    rated_before = Rating.objects.filter(
        annotator__username__in=names, comparison__round__campaign=campaign,
        created_at__gte=dt.datetime.fromtimestamp(started_at, tz=dt.timezone.utc),
    ).count()
    if checked.max_ratings is not None and rated_before >= checked.max_ratings:
        return None
    result = simulation_run(campaign=campaign, config=checked, reward_path=reward_path, until_round=until_round,
                            step=step, rated_before=rated_before, time_budget_s=STEP_SECONDS, deadline=deadline,
                            wait=False)
    if result.ended == "time budget of this step used":
        return 0.0
    if result.waiting_for_round is not None:
        return 5.0
    return None
