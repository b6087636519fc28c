"""Schemathesis over the OpenAPI schema (issue 6, "Bad input at scale"): it
generates requests for every operation from the schema (valid ones, and
invalid ones: wrong types, missing fields, out-of-range numbers, odd
strings) and sends them in process to the Django app (WSGI), on the test
database, with a staff token and with an annotator's token. Every answer
must be no 5xx, with a status the schema documents for that operation, a
content type it documents and a body that matches its schema.

Each generated request is sent twice: as generated (its ids mostly name
nothing: 404) and with the ids of real objects of campaign X
(tests/annotate/access_world.py), so that the answers of found objects are
checked too. The examples per operation are few (EXAMPLES) to bound the
time; raise them to look harder:
    RATCHET_FUZZ_EXAMPLES=200 pytest tests/annotate/test_schemathesis.py"""
import os

import pytest
import schemathesis
from django.core.cache import cache
from django.db import transaction
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.annotate.access_world import build_world

EXAMPLES = int(os.environ.get("RATCHET_FUZZ_EXAMPLES", "6"))
# Not negative_data_rejection (invalid input must get a 4xx): unknown query
# parameters are ignored by design, and a malformed multipart body reads as
# an empty form, which is valid where every field is optional (next).
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Path parameter -> the access_world id it takes.
REAL_IDS = {
    "campaign_id": "campaign_id",
    "comparison_id": "comparison_id",
    "run_id": "run_id",
    "export_id": "export_id",
    "endpoint_id": "endpoint_id",
    "job_id": "job_id",
    "demonstration_id": "demonstration_id",
}
# Path prefix -> the version id a version_id under it takes.
VERSION_IDS = {"/api/reward-versions/": "reward_version_id", "/api/sft-versions/": "sft_version_id"}


@pytest.fixture(params=["staff", "annotator_a"])
def principal(request):
    return request.param


@pytest.fixture
def world(db, tmp_path, settings):
    from rlhf.store import ModelStore

    settings.MODEL_STORE = str(tmp_path / "store")
    settings.EXPORT_DIR = str(tmp_path / "exports")
    # Generated requests to the token endpoint would otherwise meet the
    # login throttle (a 429 is documented there, but it would stop the rest).
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"login": "100000/min"}}
    cache.clear()
    return build_world(store=ModelStore(settings.MODEL_STORE), tmp=tmp_path)


@pytest.fixture
def wsgi_app():
    """The project's WSGI application, on the test's database connection:
    as Django's test client does, requests must not close the connection
    (it holds the test's transaction) when they finish."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from config.wsgi import application

    def app(environ, start_response):
        # A request that failed with a 5xx may have aborted the database
        # transaction (as a request does in production, where it has its
        # own): roll its savepoint back, so it is reported alone instead of
        # failing every request after it.
        status = []

        def start(line, headers, exc_info=None):
            status.append(int(line.split()[0]))
            return start_response(line, headers, exc_info)

        with transaction.atomic():
            result = application(environ, start)
            try:
                body = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
            if status and status[0] >= 500:
                transaction.set_rollback(True)
        return [body]

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield app
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(world, principal, wsgi_app):
    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)


@pytest.fixture
def auth_headers(world, principal):
    token, _ = Token.objects.get_or_create(user=world.users[principal])
    return {"Authorization": f"Token {token.key}"}


def _with_real_ids(case, world) -> bool:
    """Point the case's path parameters at campaign X's objects; False if it has none."""
    ids = world.ids["X"]
    params = dict(case.path_parameters or {})
    if not params:
        return False
    for name in params:
        if name in REAL_IDS:
            params[name] = ids[REAL_IDS[name]]
        elif name == "version_id":
            params[name] = ids[next((v for p, v in VERSION_IDS.items() if case.path.startswith(p)), "policy_version_id")]
        elif name == "username":
            params[name] = ids["admin" if "/admins/" in case.path else "member"]
    case.path_parameters = params
    return True


def test_api_answers_every_generated_request_as_its_schema_says(api_schema, world, auth_headers):
    # schemathesis' own pytest plugin (from_fixture / parametrize) does not
    # run under pytest 9, so each operation gets a plain Hypothesis test here,
    # and every operation's failure is reported, not only the first.
    failures = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        strategy = st.one_of(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        )

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,  # the same requests on every run: a failure here is reproducible
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def check(case):
            case.call_and_validate(headers=auth_headers, checks=CHECKS)
            if _with_real_ids(case, world):
                case.call_and_validate(headers=auth_headers, checks=CHECKS)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - reported below, with the operation
            failures.append(f"{operation.label}: {exc}")
    assert not failures, f"{len(failures)} operation(s) answered against their schema:\n\n" + "\n\n".join(failures)
