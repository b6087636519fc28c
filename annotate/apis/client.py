"""A JSON client of Ratchet's own API over urllib: no dependency and no
Django, so that simulated raters rating over HTTP
(annotate/simulation/clients.py), the platform started for a test or a
benchmark (config/platform.py) and bench/ all speak to the API one way.

    client = ApiClient("http://127.0.0.1:8000", token)
    status, body = client.post("/api/campaigns/3/next/")   # (204, None) when nothing is left

Every answer the server gives comes back as (status, body), 4xx and 5xx
included: the body parsed as JSON, or its text when it is not JSON, or None
when empty. Only a request that may not have reached the server raises
(TransportError)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request


class TransportError(ConnectionError):
    """The request may not have reached the server (connection refused or
    reset, timeout): send it again, with the same idempotency key, and at
    most one rating results."""


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None, *, timeout_s: float = 60.0):
        """`token`: an API token (sent as `Authorization: Token …`); None for anonymous calls."""
        self.base, self.token, self.timeout_s = base_url.rstrip("/"), token, timeout_s

    def request(self, method: str, path: str, body=None, *, raw: bytes | None = None,
                content_type: str = "application/json") -> tuple[int, object]:
        """`body` is sent as JSON; `raw` as it is, with `content_type` (a JSONL import)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Token {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as answer:
                return answer.status, parsed(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, parsed(exc.read())
        except OSError as exc:  # URLError, a reset, a timeout
            raise TransportError(f"{method} {self.base}{path}: {exc}") from exc

    def get(self, path: str) -> tuple[int, object]:
        return self.request("GET", path)

    def post(self, path: str, body=None, **kwargs) -> tuple[int, object]:
        return self.request("POST", path, body, **kwargs)


def parsed(payload: bytes):
    """A body as JSON, or as text when it is not JSON (an HTML error page), or None when empty."""
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace")
