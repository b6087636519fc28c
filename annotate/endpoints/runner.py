"""The loop that asks an endpoint for every (prompt, sample) it is fed: an
asyncio event loop on a thread of its own, `max_concurrency` requests in
flight, retries with back-off (client.py says which errors spend a prompt's
attempts), and events on a thread-safe queue for the caller to store.

The caller (annotate/services/generation.py, in a Celery worker; the bench)
stays on its own thread, where Django may use the database: Django refuses
ORM calls on a thread that runs an event loop. It feeds items in chunks
(memory stays bounded whatever the number of prompts), reads `events`, and
may `stop()` at any time (a cancel): requests in flight are abandoned and
their answers, if any come, are not reported.

    runner = Runner(config, policy=policy, retry=RetryPolicy())
    runner.start()
    runner.feed([Item(prompt_id=1, sample_index=0, messages=[...])]); runner.close()
    while not runner.finished: event = runner.events.get()   # Answered, GaveUp, Requested, Stopped (last)
"""
from __future__ import annotations

import asyncio
import queue
import random
import threading
import time
from dataclasses import dataclass

from annotate.endpoints.client import (
    ChatClient,
    Completion,
    EndpointConfig,
    KeyRefused,
    Misconfigured,
    Rejected,
    Retryable,
    Unavailable,
    redact,
)
from annotate.endpoints.hosts import HostPolicy


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5  # requests one (prompt, sample) may spend on errors that are its own
    backoff_s: float = 1.0  # the first wait after an error, doubled after each further one (seconds)
    backoff_max_s: float = 30.0  # the longest back-off (seconds)
    retry_after_max_s: float = 600.0  # a longer Retry-After is held to this (seconds)
    unavailable_give_up_s: float = 600.0  # the job stops once the endpoint was unavailable this long (seconds)
    give_up_streak: int = 10  # the job stops after this many prompts in a row failed with none answered between

    def backoff(self, tries: int, rng: random.Random) -> float:
        """The wait after `tries` errors in a row: exponential, half of it
        jittered so that concurrent requests do not retry in lockstep."""
        ceiling = min(self.backoff_max_s, self.backoff_s * 2 ** max(0, tries - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class Item:
    prompt_id: int
    sample_index: int
    messages: list


# --- what the runner reports (Runner.events) ------------------------------------------


@dataclass(frozen=True)
class Answered:
    item: Item
    completion: Completion
    attempts: int
    seconds: float  # the successful request's time


@dataclass(frozen=True)
class GaveUp:
    item: Item
    attempts: int
    error: str


@dataclass(frozen=True)
class Requested:
    """One HTTP request sent (a connection refused sends none)."""


@dataclass(frozen=True)
class Stopped:
    """The last event: `fatal` says why the endpoint is unusable, or is empty
    (every item fed was answered or given up on, or stop() was called)."""

    fatal: str = ""


class Runner:
    def __init__(self, config: EndpointConfig, *, policy: HostPolicy, retry: RetryPolicy, seed: int | None = None):
        self.config = config
        self.policy = policy
        self.retry = retry
        self.events: queue.Queue = queue.Queue()
        self.finished = False  # set after Stopped was put on events
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._backlog = 0
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue | None = None
        self._stop: asyncio.Event | None = None
        self._fatal = ""
        self._not_before = 0.0  # monotonic time before which no request is sent (Retry-After, an outage)
        self._unavailable_since: float | None = None
        self._unavailable_tries = 0
        self._streak = 0

    # -- the caller's side (any thread) ----------------------------------------------------
    def start(self) -> "Runner":
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="endpoint-runner", daemon=True)
        self._thread.start()
        self._ready.wait()
        return self

    @property
    def backlog(self) -> int:
        """Items fed and not yet answered or given up on."""
        with self._lock:
            return self._backlog

    def feed(self, items: list[Item]) -> None:
        with self._lock:
            self._backlog += len(items)
        self._call(lambda: [self._inbox.put_nowait(item) for item in items])

    def close(self) -> None:
        """No more items: the runner stops once those fed are done."""
        self._call(lambda: self._inbox.put_nowait(None))

    def stop(self) -> None:
        self._call(lambda: self._stop.set())

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _call(self, fn) -> None:
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(fn)
            except RuntimeError:  # the loop closed in between: nothing left to tell it
                pass

    # -- the event loop's side ---------------------------------------------------------
    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._inbox = asyncio.Queue()
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            async with ChatClient(self.config, policy=self.policy) as client:
                workers = [asyncio.create_task(self._worker(client)) for _ in range(max(1, self.config.max_concurrency))]
                everyone = asyncio.gather(*workers, return_exceptions=True)
                stopping = asyncio.create_task(self._stop.wait())
                await asyncio.wait([everyone, stopping], return_when=asyncio.FIRST_COMPLETED)
                for task in [*workers, stopping]:
                    task.cancel()  # a stop: requests in flight are abandoned
                results = await everyone
                crashed = [r for r in results if isinstance(r, Exception)]
                if crashed and not self._fatal:
                    self._fatal = f"internal error: {type(crashed[0]).__name__}: {crashed[0]}"
        except Misconfigured as exc:
            self._fatal = exc.message
        except Exception as exc:  # a bug must end the job with its name, not hang it
            self._fatal = redact(f"internal error: {type(exc).__name__}: {exc}", [self.config.api_key])
        finally:
            self.events.put(Stopped(fatal=self._fatal))
            self.finished = True

    def _fail(self, message: str) -> None:
        """The endpoint is unusable: stop everything, say why."""
        if not self._fatal:
            self._fatal = message
        self._stop.set()

    async def _worker(self, client: ChatClient) -> None:
        while not self._stop.is_set():
            item = await self._inbox.get()
            if item is None:
                self._inbox.put_nowait(None)  # for the next worker
                return
            try:
                await self._ask(client, item)
            finally:
                with self._lock:
                    self._backlog -= 1

    async def _wait(self, seconds: float) -> None:
        """Sleep, or return early when the runner stops."""
        if seconds > 0:
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=seconds)
            except asyncio.TimeoutError:
                pass

    async def _ask(self, client: ChatClient, item: Item) -> None:
        attempts = 0
        while not self._stop.is_set():
            await self._wait(self._not_before - time.monotonic())
            if self._stop.is_set():
                return
            attempts += 1
            started = time.monotonic()
            try:
                completion = await client.complete(item.messages, sample_index=item.sample_index)
            except asyncio.CancelledError:
                self.events.put(Requested())  # a stop cut it off; the server may have got it
                raise
            except (KeyRefused, Misconfigured) as exc:
                self.events.put(Requested())
                self._fail(exc.message)
                return
            except Unavailable as exc:
                attempts -= 1  # the endpoint's trouble, not this prompt's
                if exc.sent:
                    self.events.put(Requested())
                if self._outage(exc):
                    return
                continue
            except Rejected as exc:
                self.events.put(Requested())
                self._available()
                self._give_up(item, attempts, exc.message)
                return
            except Retryable as exc:
                self.events.put(Requested())
                self._available()
                if attempts >= self.retry.max_attempts:
                    self._give_up(item, attempts, f"{exc.message} (after {attempts} attempts)")
                    return
                await self._wait(self.retry.backoff(attempts, self._rng))
                continue
            self.events.put(Requested())
            self._available()
            self._streak = 0
            self.events.put(Answered(item=item, completion=completion, attempts=attempts,
                                     seconds=time.monotonic() - started))
            return

    def _available(self) -> None:
        self._unavailable_since = None
        self._unavailable_tries = 0

    def _outage(self, exc: Unavailable) -> bool:
        """Hold every request back (Retry-After, else a back-off growing with
        the outage); True when the endpoint has been unavailable too long
        and the job stops."""
        now = time.monotonic()
        if self._unavailable_since is None:
            self._unavailable_since = now
        if now - self._unavailable_since > self.retry.unavailable_give_up_s:
            self._fail(f"the endpoint has been unavailable for {now - self._unavailable_since:.0f} s: {exc.message}")
            return True
        self._unavailable_tries += 1
        wait = self.retry.backoff(self._unavailable_tries, self._rng)
        if exc.retry_after is not None:
            wait = max(wait, min(exc.retry_after, self.retry.retry_after_max_s))
        self._not_before = max(self._not_before, now + wait)
        return False

    def _give_up(self, item: Item, attempts: int, error: str) -> None:
        self.events.put(GaveUp(item=item, attempts=attempts, error=error))
        self._streak += 1
        if self._streak >= self.retry.give_up_streak:
            self._fail(f"stopped after {self._streak} prompts in a row failed with none answered between; "
                       f"the last: {error}")
