"""What a simulated rater does on the platform, as one small interface with
two implementations:

- HttpRaterClient: the annotator API over HTTP (annotate/apis/client.py),
  for raters started with `simulate_raters --url` and for bench/;
- ServiceRaterClient (annotate/services/simulation.py): the services that
  API calls, in this process, for the Celery task behind the staff API and
  for the management command without --url.

Both answer each call as the API does, (HTTP status, JSON body), so the
raters' loop (annotate/simulation/raters.py) reads one kind of answer."""
from __future__ import annotations

from typing import Protocol

from annotate.apis.client import ApiClient

# What a rater keeps of a body that is not JSON (an HTML error page) for its stop message.
TEXT_BODY_CHARS = 500


class RaterClient(Protocol):
    """The annotator API's four calls a rater makes. Each returns (status,
    body) as the API answers: next 200 (the lease payload) / 204 (nothing
    left) / 403 (paused) / 404 / 409 (campaign not collecting) / 429 (daily
    limit); rate 201 / 200 (the same idempotency key again) / 409 (lease lost,
    round closed); skip 200; progress 200 {"campaign", "status", "round"}.
    Errors have the API's body {"error", "detail"}. An HTTP client may raise
    TransportError when a request may not have reached the server."""

    def next(self, campaign_id: int) -> tuple[int, object]: ...

    def rate(self, rating: dict) -> tuple[int, object]: ...

    def skip(self, comparison_id: int, reason: str) -> tuple[int, object]: ...

    def progress(self, campaign_id: int) -> tuple[int, object]: ...


class HttpRaterClient:
    """The annotator API over real HTTP, with the rater's token."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 60.0):
        self.api = ApiClient(base_url, token, timeout_s=timeout_s)

    def next(self, campaign_id: int) -> tuple[int, object]:
        return self._send("POST", f"/api/campaigns/{campaign_id}/next/")

    def rate(self, rating: dict) -> tuple[int, object]:
        return self._send("POST", "/api/ratings/", rating)

    def skip(self, comparison_id: int, reason: str) -> tuple[int, object]:
        return self._send("POST", f"/api/comparisons/{comparison_id}/skip/", {"reason": reason})

    def progress(self, campaign_id: int) -> tuple[int, object]:
        return self._send("GET", f"/api/campaigns/{campaign_id}/progress/")

    def _send(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        status, answer = self.api.request(method, path, body)
        return status, answer[:TEXT_BODY_CHARS] if isinstance(answer, str) else answer
