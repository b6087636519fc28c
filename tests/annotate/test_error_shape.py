"""Every error of the API has one shape, {"error": code, "detail": message}
(docs/api.md#errors): DRF's own answers (401, 403, 404, 405, 415, 429, a body
of the wrong type) as well as the services' errors, and a path under /api/
that names nothing, with DEBUG on as well as off."""
import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from annotate.models import Role
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db


def _anonymous(make_user, api_client_for):
    return APIClient()


def _bad_token(make_user, api_client_for):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    return client


def _inactive(make_user, api_client_for):
    user = make_user(Role.ANNOTATOR, username="gone")
    client = api_client_for(user)
    user.is_active = False
    user.save()
    return client


def _annotator(make_user, api_client_for):
    return api_client_for(make_user(Role.ANNOTATOR, username="ann"))


def _staff(make_user, api_client_for):
    return api_client_for(make_user(username="root", is_staff=True))


CASES = [
    # (who, method, path, kwargs, status, error)
    (_anonymous, "get", "/api/campaigns/", {}, 401, "not_authenticated"),
    (_bad_token, "get", "/api/campaigns/", {}, 401, "authentication_failed"),
    (_inactive, "get", "/api/campaigns/", {}, 401, "authentication_failed"),
    (_annotator, "post", "/api/campaigns/create/", {"data": {}, "format": "json"}, 403, "permission_denied"),
    (_staff, "get", "/api/campaigns/999999/", {}, 404, "not_found"),
    (_staff, "delete", "/api/campaigns/", {}, 405, "method_not_allowed"),
    (_staff, "post", "/api/campaigns/create/", {"data": "x", "content_type": "text/plain"}, 415,
     "unsupported_media_type"),
    (_staff, "post", "/api/campaigns/create/", {"data": "{not json", "content_type": "application/json"}, 400,
     "parse_error"),
    (_staff, "get", "/api/no-such-thing/", {}, 404, "not_found"),
    (_staff, "post", "/api/no-such-thing/", {}, 404, "not_found"),
    (_anonymous, "get", "/api/campaigns/not-a-number/", {}, 404, "not_found"),
]


@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
@pytest.mark.parametrize(
    "who,method,path,kwargs,status,error", CASES,
    ids=[f"{c[4]}-{c[5]}-{c[1]}-{c[2]}-{c[0].__name__[1:]}" for c in CASES],
)
def test_every_error_answers_error_and_detail(settings, make_user, api_client_for, debug,
                                              who, method, path, kwargs, status, error):
    settings.DEBUG = debug
    client = who(make_user, api_client_for)
    answer = getattr(client, method)(path, **kwargs)
    assert answer.status_code == status
    assert answer["Content-Type"].startswith("application/json")
    body = answer.json()
    assert body["error"] == error
    assert isinstance(body["detail"], str) and body["detail"]


def test_the_login_throttle_answers_throttled_with_retry_after(monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    cache.clear()
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"login": "2/min"})
    client = APIClient()
    answers = [client.post("/api/auth/token/", {"username": "x", "password": "y"}, format="json") for _ in range(3)]
    assert [a.status_code for a in answers] == [400, 400, 429]
    assert answers[0].json()["error"] == "invalid" and answers[0].json()["errors"]["non_field_errors"]
    throttled = answers[2]
    assert throttled.json()["error"] == "throttled" and "seconds" in throttled.json()["detail"]
    assert int(throttled["Retry-After"]) > 0
    cache.clear()


def test_field_errors_go_under_errors_and_detail_names_them(make_user, api_client_for):
    client = api_client_for(make_user(username="root", is_staff=True))
    answer = client.post("/api/campaigns/create/", {}, format="json")
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "invalid" and "name" in body["errors"]
    assert "name: " in body["detail"]


def test_a_path_missing_its_slash_says_which_path_was_meant(make_user, api_client_for):
    client = api_client_for(make_user(username="root", is_staff=True))
    campaign = CampaignFactory()
    answer = client.get(f"/api/campaigns/{campaign.pk}")
    assert answer.status_code == 404
    assert answer.json()["detail"].endswith(f"did you mean /api/campaigns/{campaign.pk}/ ?")


def test_the_schema_and_its_docs_still_answer_under_api(make_user, api_client_for):
    # The catch-all route comes after them.
    client = api_client_for(make_user(username="root", is_staff=True))
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200
