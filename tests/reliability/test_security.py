"""Security settings and guards: deploy checks with production settings,
CSRF on session-authenticated API writes, throttled logins."""
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client

from annotate.models import Lease, Rating

ROOT = Path(__file__).resolve().parents[2]


def _production_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update({
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(45)[:60],
        "DJANGO_ALLOWED_HOSTS": "ratchet.example.com",
        **extra,
    })
    return env


def _manage(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


# --- deploy checks -----------------------------------------------------------


def test_deploy_check_passes_with_production_settings():
    env = _production_env()
    assert len(env["DJANGO_SECRET_KEY"]) == 60
    out = _manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert out.returncode == 0, out.stdout + out.stderr


def test_debug_off_refuses_to_start_without_a_real_secret_key():
    env = _production_env(DJANGO_SECRET_KEY="too-short")
    out = _manage("check", env=env)
    assert out.returncode != 0
    assert "DJANGO_SECRET_KEY" in out.stderr and "50 or more characters" in out.stderr


# --- CSRF on session auth -------------------------------------------------------


@pytest.mark.django_db
def test_session_authenticated_rating_needs_the_csrf_token(open_round, annotator):
    client = Client(enforce_csrf_checks=True)
    client.force_login(annotator)
    assert client.get("/login/").status_code == 200  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value

    leased = client.post(f"/api/campaigns/{open_round.campaign_id}/next/", HTTP_X_CSRFTOKEN=token)
    assert leased.status_code == 200, leased.content
    body = {"comparison": leased.json()["comparison"], "choice": "A", "strength": 2,
            "idempotency_key": str(uuid.uuid4())}

    refused = client.post("/api/ratings/", body, content_type="application/json")
    assert refused.status_code == 403, refused.content
    assert "CSRF" in refused.content.decode()
    assert Rating.objects.count() == 0
    assert not Lease.objects.filter(status=Lease.Status.DONE).exists()

    accepted = client.post("/api/ratings/", body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 201, accepted.content
    assert Rating.objects.filter(annotator=annotator).count() == 1


# --- login throttling --------------------------------------------------------------


@pytest.fixture
def clean_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.mark.django_db
def test_the_11th_token_request_in_a_minute_gets_429(clean_cache, anonymous_client):
    from annotate.services.users import user_create_or_update

    user_create_or_update(username="ann", password="correct horse", roles=["annotator"])
    for _ in range(10):
        answer = anonymous_client.post("/api/auth/token/", {"username": "ann", "password": "wrong"})
        assert answer.status_code == 400, answer.content
    answer = anonymous_client.post("/api/auth/token/", {"username": "ann", "password": "correct horse"})
    assert answer.status_code == 429, answer.content
    assert "throttled" in str(answer.data).lower() or "request was throttled" in answer.content.decode().lower()
    assert "Retry-After" in answer


@pytest.mark.django_db
def test_the_11th_bad_login_form_post_gets_429_with_a_clear_message(clean_cache, annotator):
    annotator.set_password("correct horse")
    annotator.save()
    client = Client()
    assert client.post("/login/", {"username": annotator.username, "password": "correct horse"}).status_code == 302
    client.logout()
    for _ in range(10):
        answer = client.post("/login/", {"username": annotator.username, "password": "wrong"})
        assert answer.status_code == 200 and "didn't match" in answer.content.decode()
    answer = client.post("/login/", {"username": annotator.username, "password": "correct horse"})
    assert answer.status_code == 429
    assert "Too many failed logins" in answer.content.decode()
    # the page in the site's look, saying when to try again (the window: 5 minutes by default)
    assert [t.name for t in answer.templates][:2] == ["frontend/login_locked.html", "frontend/base.html"]
    minutes = settings.LOGIN_FAILURE_WINDOW_S // 60
    assert f"Try again in {minutes} minutes" in answer.content.decode()
    assert 0 < int(answer["Retry-After"]) <= settings.LOGIN_FAILURE_WINDOW_S
    assert not client.session.get("_auth_user_id")
    # Another username from the same address is not locked out by these failures.
    assert client.post("/login/", {"username": "someone-else", "password": "x"}).status_code == 200
