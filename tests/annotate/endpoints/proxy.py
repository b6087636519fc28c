"""A fault-injecting HTTP proxy in front of a real OpenAI-compatible server
(config/llama_server.py), for the failure tests: it forwards each request
as it is, or answers it with a fault chosen by the test, and records what
it saw and answered.

    proxy = FaultProxy(upstream="http://127.0.0.1:8001").start()
    proxy.fault = lambda seen: Fault(status=429, headers={"Retry-After": "1"}) if seen.attempt == 1 else None
    ... proxy.base_url ...                  # http://127.0.0.1:<port>/v1
    proxy.log                               # [Seen(...)], one per request
    proxy.stop()

`fault` is called with the request's Seen (its prompt, and which request
for that prompt and sample this is) and returns a Fault or None (forward).
An upstream that refuses connections is answered 502, as a gateway does.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from config.platform import free_port


@dataclass
class Fault:
    status: int = 200  # the status answered instead of forwarding (with `body`)
    body: bytes | None = None  # None: forward the request (after `delay`) and pass the answer on
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # seconds slept before answering
    echo_auth: bool = False  # answer `status` with the request's Authorization header in the body


@dataclass
class Seen:
    index: int  # 0, 1, ... across all requests
    prompt: str  # the last message's content
    seed: int | None
    attempt: int  # 1 for the first request with this prompt and seed, 2 for the next, ...
    at: float  # time.monotonic() when it arrived
    authorization: str = ""
    status: int | None = None  # what the proxy answered (None: the client went away first)
    answered_at: float | None = None


class FaultProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.fault: Callable[[Seen], Fault | None] = lambda seen: None
        self.log: list[Seen] = []
        self._attempts: dict[tuple, int] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FaultProxy":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._session.close(), self._loop).result(10)
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def answered(self, status: int = 200) -> list[Seen]:
        with self._lock:
            return [s for s in self.log if s.status == status]

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._session = self._loop.run_until_complete(self._open_session())
        self._ready.set()
        self._loop.run_forever()

    async def _open_session(self) -> ClientSession:
        return ClientSession(timeout=ClientTimeout(total=600))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
            prompt, seed = body["messages"][-1]["content"], body.get("seed")
        except (ValueError, KeyError, IndexError, TypeError):
            prompt, seed = "", None
        with self._lock:
            key = (prompt, seed)
            self._attempts[key] = self._attempts.get(key, 0) + 1
            seen = Seen(index=len(self.log), prompt=prompt, seed=seed, attempt=self._attempts[key],
                        at=time.monotonic(), authorization=request.headers.get("Authorization", ""))
            self.log.append(seen)
        fault = self.fault(seen) or Fault()
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.echo_auth:
            answer = web.Response(status=fault.status, headers=fault.headers, content_type="application/json",
                                  text=json.dumps({"error": {"message": f"bad request with {seen.authorization}"}}))
        elif fault.body is not None:
            answer = web.Response(status=fault.status, headers=fault.headers, body=fault.body,
                                  content_type="application/json")
        else:
            answer = await self._forward(request, raw)
        seen.status, seen.answered_at = answer.status, time.monotonic()
        return answer

    async def _forward(self, request: web.Request, raw: bytes) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        try:
            async with self._session.request(request.method, self.upstream + request.path_qs, data=raw,
                                             headers=headers) as upstream:
                return web.Response(status=upstream.status, body=await upstream.read(),
                                    content_type=upstream.content_type)
        except (ClientError, OSError) as exc:
            return web.Response(status=502, text=json.dumps({"error": {"message": f"upstream: {exc}"}}),
                                content_type="application/json")
