"""One endpoint's chat-completions client (aiohttp), and what each way a
request can go wrong means for the loop that retries (runner.py):

- KeyRefused (401, 403) and Misconfigured (404, a host the policy refuses):
  the endpoint is unusable as configured; the job stops at once with the
  error, no retries;
- Unavailable (no connection could be made; 429, 502, 503, 504): the
  server is down, restarting, overloaded or rate-limiting, whatever the
  prompt; every request waits (Retry-After when given, else a growing
  back-off) and tries again without spending the prompts' attempts, until
  the endpoint has been unavailable for too long;
- Retryable (500 and other 5xx, 408, a timeout, the connection lost
  mid-answer) and Garbage (an answer that is not JSON, has the wrong schema
  or empty content): this request went wrong; spend one of the prompt's
  attempts, back off, try again;
- Rejected (another 4xx: the prompt is too long for the context, a
  setting the server refuses): this prompt fails now, retrying won't help.

Every message is redacted (`redact`): a server that echoes the request's
Authorization header back in its error never puts the key in a job's error.

    async with ChatClient(config, policy=policy) as client:
        completion = await client.complete([{"role": "user", "content": "Hi"}])
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import math
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from annotate.endpoints.hosts import HostPolicy, HostRefused, addresses_check, url_check

# The longest answer body read (bytes): a server streaming without end must
# not fill the worker's memory.
MAX_BODY_BYTES = 8 * 1024 * 1024
# How much of a server's error text is kept (characters).
ERROR_CHARS = 500


def redact(text: str, secrets: list[str] | tuple[str, ...]) -> str:
    """`text` with every secret (and its JSON- and URL-escaped forms) replaced
    by [redacted]."""
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, json.dumps(secret)[1:-1], quote(secret, safe="")}:
            text = text.replace(form, "[redacted]")
    return text


@dataclass(frozen=True)
class EndpointConfig:
    base_url: str  # e.g. http://host:8000/v1
    model_name: str  # the `model` asked for
    api_key: str = field(default="", repr=False)  # never in a repr, a log line or a message
    generation: dict = field(default_factory=dict)  # max_tokens, temperature, top_p, seed, stop, ...
    timeout_s: float = 120.0  # one request, connection to the last byte
    max_concurrency: int = 4  # requests in flight at once


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    model: str  # as the server names it


class EndpointError(Exception):
    """A request that went wrong; `message` is safe to show and store."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class KeyRefused(EndpointError):
    pass


class Misconfigured(EndpointError):
    pass


class Unavailable(EndpointError):
    """`sent`: False when no connection was made (the request never left)."""

    def __init__(self, message: str, *, retry_after: float | None = None, sent: bool = True):
        super().__init__(message)
        self.retry_after = retry_after
        self.sent = sent


class Retryable(EndpointError):
    pass


class Garbage(Retryable):
    pass


class Rejected(EndpointError):
    pass


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """A Retry-After header in seconds: a number of seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def completion_parse(body: bytes) -> Completion:
    """The first choice of a chat-completions answer; Garbage saying what is
    wrong with it otherwise."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        shown = body[:200].decode("utf-8", errors="replace")
        raise Garbage(f"the endpoint's answer is not JSON: {shown!r}") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        shown = json.dumps(data)[:200]
        raise Garbage(f"the endpoint's answer is not a chat completion (no choices[0].message.content): {shown}")
    if not content.strip():
        reason = first.get("finish_reason")
        raise Garbage(f"the endpoint answered with empty content (finish_reason {reason!r})")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}

    def count(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) and value >= 0 else 0

    return Completion(text=content, prompt_tokens=count("prompt_tokens"), completion_tokens=count("completion_tokens"),
                      finish_reason=str(first.get("finish_reason") or ""), model=str(data.get("model") or ""))


def _server_error(status: int, reason: str, body: bytes) -> str:
    """`HTTP 503 Service Unavailable: <the server's message>`."""
    text = body[:4000].decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            text = error["message"]
        elif isinstance(error, str):
            text = error
        elif isinstance(data.get("detail"), str):
            text = data["detail"]
    text = " ".join(text.split())
    return f"HTTP {status} {reason}" + (f": {text[:ERROR_CHARS]}" if text else "")


class CheckedResolver(AbstractResolver):
    """The system resolver, then the host policy on every address found: a
    connection only ever goes to an address that passed the check now, not
    only when the endpoint was saved (DNS may have changed since)."""

    def __init__(self, policy: HostPolicy):
        self.policy = policy
        self.inner = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        addresses_check(host.rstrip("."), [r["host"] for r in found], policy=self.policy)
        return found

    async def close(self) -> None:
        await self.inner.close()


class ChatClient:
    """POST {base_url}/chat/completions for one endpoint, through one
    connection pool of max_concurrency connections."""

    def __init__(self, config: EndpointConfig, *, policy: HostPolicy):
        self.config = config
        self.policy = policy
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "ChatClient":
        # The URL as a whole (scheme, credentials, IP literals, which the
        # resolver never sees) is checked when the job starts; names again
        # on each connection by CheckedResolver.
        try:
            await asyncio.to_thread(url_check, self.config.base_url, policy=self.policy)
        except HostRefused as exc:
            raise Misconfigured(self._safe(str(exc))) from None
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        connector = aiohttp.TCPConnector(limit=max(1, self.config.max_concurrency), resolver=CheckedResolver(self.policy),
                                         ttl_dns_cache=10)
        self.session = aiohttp.ClientSession(
            connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            trust_env=False,  # no proxy from the environment: the policy checks where requests really go
        )
        return self

    async def __aexit__(self, *exc) -> None:
        if self.session is not None:
            await self.session.close()

    def _safe(self, text: str) -> str:
        return redact(text, [self.config.api_key])

    def payload(self, messages: list[dict], *, sample_index: int = 0) -> dict:
        body = {**self.config.generation, "model": self.config.model_name, "messages": messages}
        # Samples of one prompt with a fixed seed would all be the same answer.
        if isinstance(body.get("seed"), int):
            body["seed"] += sample_index
        return body

    async def complete(self, messages: list[dict], *, sample_index: int = 0) -> Completion:
        assert self.session is not None, "use `async with ChatClient(...)`"
        timeout = self.config.timeout_s
        try:
            async with self.session.post(self.url, json=self.payload(messages, sample_index=sample_index),
                                         allow_redirects=False) as answer:
                body = await answer.content.read(MAX_BODY_BYTES + 1)
                status, reason, headers = answer.status, answer.reason or "", answer.headers
        except HostRefused as exc:
            raise Misconfigured(self._safe(str(exc))) from None
        except asyncio.TimeoutError:
            raise Retryable(f"no answer within {timeout:g} s (the endpoint's timeout_s)") from None
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, HostRefused):
                raise Misconfigured(self._safe(str(exc.os_error))) from None
            raise Unavailable(self._safe(f"{self.url}: the host does not resolve ({exc.os_error})"), sent=False) from None
        except aiohttp.ClientConnectorError as exc:
            raise Unavailable(self._safe(f"{self.url}: could not connect ({exc.os_error})"), sent=False) from None
        except (aiohttp.ClientError, OSError) as exc:
            # Disconnected, reset or a truncated body: the server went away mid-answer.
            raise Retryable(self._safe(f"the connection was lost mid-answer ({type(exc).__name__}: {exc})")) from None
        if len(body) > MAX_BODY_BYTES:
            raise Garbage(f"the endpoint's answer is larger than {MAX_BODY_BYTES} bytes")
        if status == 200:
            try:
                return completion_parse(body)
            except Garbage as exc:
                raise Garbage(self._safe(exc.message)) from None
        error = self._safe(_server_error(status, reason, body))
        if status in (401, 403):
            raise KeyRefused(f"the endpoint refused the API key ({error}); set the right key on the endpoint")
        if status == 404:
            raise Misconfigured(f"{self.url} does not exist ({error}); base_url usually ends in /v1")
        if status in (429, 502, 503, 504):
            raise Unavailable(error, retry_after=retry_after_seconds(headers.get("Retry-After")))
        if status >= 500 or status == 408:
            raise Retryable(error)
        if 300 <= status < 400:
            raise Misconfigured(f"the endpoint redirects ({error}); use the URL it redirects to as base_url")
        if 400 <= status < 500:
            raise Rejected(error)
        raise Garbage(f"the endpoint answered an unexpected status ({error})")


# --- generation settings ----------------------------------------------------------------

# What an endpoint's `generation` may set, sent as they are in every request:
# name -> (type, lowest, highest). `stop` is a string or up to 4 strings.
# top_k, min_p and repetition_penalty are vLLM / llama.cpp / TGI extensions.
GENERATION_FIELDS: dict[str, tuple[type, float | None, float | None]] = {
    "max_tokens": (int, 1, 1_000_000),
    "temperature": (float, 0.0, 2.0),
    "top_p": (float, 0.0, 1.0),
    "seed": (int, None, None),
    "presence_penalty": (float, -2.0, 2.0),
    "frequency_penalty": (float, -2.0, 2.0),
    "top_k": (int, -1, 100_000),
    "min_p": (float, 0.0, 1.0),
    "repetition_penalty": (float, 0.0, 10.0),
}


def generation_errors(values: object) -> dict[str, str]:
    """{field: what is wrong} for a `generation` object; empty when it is fine."""
    if not isinstance(values, dict):
        return {"generation": "must be an object, e.g. {\"max_tokens\": 256, \"temperature\": 0.7}"}
    errors = {}
    for name, value in values.items():
        if name == "stop":
            stops = [value] if isinstance(value, str) else value
            if not (isinstance(stops, list) and 1 <= len(stops) <= 4 and all(isinstance(s, str) and s for s in stops)):
                errors[name] = "a non-empty string or a list of 1 to 4 non-empty strings"
            continue
        if name not in GENERATION_FIELDS:
            errors[name] = f"not a generation setting; these are: {', '.join([*GENERATION_FIELDS, 'stop'])}"
            continue
        kind, low, high = GENERATION_FIELDS[name]
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not numeric or (kind is int and not isinstance(value, int)):
            errors[name] = "an integer" if kind is int else "a number"
        elif (low is not None and value < low) or (high is not None and value > high):
            errors[name] = f"between {low:g} and {high:g}"
    return errors
