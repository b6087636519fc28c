"""The OpenAPI schema and its docs page, and the web process staying torch-free."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_openapi_schema_is_served(client):
    # when
    answer = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    # then
    assert answer.status_code == 200
    schema = answer.json()
    assert "/api/ratings/" in schema["paths"]
    assert "/api/campaigns/{campaign_id}/next/" in schema["paths"]
    # Nested serializers are named after their view, so none collide.
    assert "RatingCreateInputRequest" in schema["components"]["schemas"]


def test_openapi_schema_builds_without_warnings_and_validates():
    # A name collision or an unannotated view is a warning here, and a wrong
    # schema for every client generated from it.
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", os.devnull)


@pytest.mark.django_db
def test_api_docs_page_is_served(client):
    answer = client.get("/api/docs/")
    assert answer.status_code == 200
    assert b"swagger" in answer.content.lower()


def test_web_process_never_imports_torch():
    # given: a fresh interpreter, so torch imported by other tests can't hide
    # (or fake) an import here
    script = textwrap.dedent(
        """
        import pkgutil, sys, importlib
        import django
        django.setup()
        import config.urls, config.wsgi, annotate
        worker_only = ("annotate.training.steps", "annotate.training.executor")
        for module in pkgutil.walk_packages(annotate.__path__, "annotate."):
            if module.name not in worker_only:
                importlib.import_module(module.name)
        from django.test import Client
        from django.test.utils import setup_test_environment
        setup_test_environment()
        answer = Client().get("/api/schema/", HTTP_ACCEPT="application/json")
        assert answer.status_code == 200, answer.status_code
        heavy = sorted(m for m in ("torch", "transformers", "safetensors.torch", *worker_only) if m in sys.modules)
        print("HEAVY", heavy)
        sys.exit(1 if heavy else 0)
        """
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    # when
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    # then
    assert done.returncode == 0, done.stdout + done.stderr
    assert "HEAVY []" in done.stdout
