"""Every operation of the OpenAPI schema, called by five principals on two
campaigns, against a table of the status each must get (issue 6, "Access";
docs/architecture.md, invariant 7).

Principals: anonymous; annotators A and B, both in campaign X's pool (A
holds a live lease there and rated one comparison); an admin of another
campaign (Y); staff. Each operation that names an object is called twice:
with X's ids and with Y's (tests/annotate/access_world.py). Every call runs
in a savepoint that is rolled back, so each one meets the same world.

What the table says, in short:
- no credentials: 401 everywhere but the token endpoint;
- the wrong role: 403, whatever the id (annotators on admin APIs, admins on
  engineer and staff APIs, staff on annotator APIs: staff rate only with the
  annotator role);
- the right role, someone else's object: 404, as for an id that does not
  exist (an annotator outside the pool, an admin of another campaign), so
  that ids reveal nothing;
- an annotator on a comparison of their campaign leased to someone else:
  409 ("you hold no lease"), which says nothing of who holds it.
And no answer to B carries A's rating, and no answer outside a campaign
carries anything of it (the secrets of access_world)."""
import json
import uuid
from http import HTTPStatus

import pytest
from django.core.cache import cache
from django.db import transaction
from rest_framework.test import APIClient

from tests.annotate.access_world import PASSWORD_A, PRINCIPALS, build_world

pytestmark = pytest.mark.django_db

NDJSON = "application/x-ndjson"

# (method, schema path) -> one status per principal, in PRINCIPALS order:
# anonymous, annotator A, annotator B, admin of campaign Y, staff.
# A pair is (with campaign X's ids, with campaign Y's ids); a single number
# is the answer to both, or, where the operation names no object, to its one call.
EXPECTED = {
    ("POST", "/api/auth/token/"): [200, 200, 200, 200, 200],  # A's username and password in the body
    ("GET", "/api/campaigns/"): [401, 200, 200, 200, 200],
    ("POST", "/api/campaigns/create/"): [401, 403, 403, 201, 201],
    ("POST", "/api/users/"): [401, 403, 403, 201, 201],
    ("GET", "/api/training-runs/"): [401, 403, 403, 200, 200],
    # annotators: their pool's campaigns only; staff need the annotator role to rate
    ("POST", "/api/campaigns/{campaign_id}/next/"): [401, (200, 404), (200, 404), (403, 403), (403, 403)],
    ("GET", "/api/campaigns/{campaign_id}/progress/"): [401, (200, 404), (200, 404), (404, 200), (200, 200)],
    ("POST", "/api/comparisons/{comparison_id}/renew/"): [401, (200, 404), (409, 404), (403, 403), (403, 403)],
    ("POST", "/api/comparisons/{comparison_id}/skip/"): [401, (200, 404), (409, 404), (403, 403), (403, 403)],
    ("POST", "/api/ratings/"): [401, (201, 404), (409, 404), (403, 403), (403, 403)],  # comparison in the body
    # campaign admins: the campaigns they administer
    ("GET", "/api/campaigns/{campaign_id}/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("PATCH", "/api/campaigns/{campaign_id}/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("POST", "/api/campaigns/{campaign_id}/prompts/import/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("POST", "/api/campaigns/{campaign_id}/answers/import/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("POST", "/api/campaigns/{campaign_id}/annotators/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("POST", "/api/campaigns/{campaign_id}/start/"): [401, (403, 403), (403, 403), (404, 202), (202, 202)],
    # evaluation campaigns only: X and Y are loop campaigns, so those who may ask hear 409
    ("POST", "/api/campaigns/{campaign_id}/comparisons/"): [401, (403, 403), (403, 403), (404, 409), (409, 409)],
    ("POST", "/api/campaigns/{campaign_id}/pause/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    # the campaigns are active, so resuming one is a 409, for whoever may try
    ("POST", "/api/campaigns/{campaign_id}/resume/"): [401, (403, 403), (403, 403), (404, 409), (409, 409)],
    ("POST", "/api/campaigns/{campaign_id}/archive/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("GET", "/api/campaigns/{campaign_id}/members/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("POST", "/api/campaigns/{campaign_id}/members/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("PATCH", "/api/campaigns/{campaign_id}/members/{username}/"): [
        401, (403, 403), (403, 403), (404, 200), (200, 200),
    ],
    ("POST", "/api/campaigns/{campaign_id}/gold/import/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("GET", "/api/campaigns/{campaign_id}/gold/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("GET", "/api/campaigns/{campaign_id}/rounds/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("GET", "/api/campaigns/{campaign_id}/rounds/{index}/comparisons/"): [
        401, (403, 403), (403, 403), (404, 200), (200, 200),
    ],
    ("GET", "/api/campaigns/{campaign_id}/quality/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("GET", "/api/campaigns/{campaign_id}/leaderboard/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("GET", "/api/campaigns/{campaign_id}/exports/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("POST", "/api/campaigns/{campaign_id}/exports/"): [401, (403, 403), (403, 403), (404, 201), (201, 201)],
    ("GET", "/api/exports/{export_id}/download/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    # staff choose each campaign's admins; its admins may see who they are
    ("GET", "/api/campaigns/{campaign_id}/admins/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("POST", "/api/campaigns/{campaign_id}/admins/"): [401, (403, 403), (403, 403), (403, 403), (200, 200)],
    ("DELETE", "/api/campaigns/{campaign_id}/admins/{username}/"): [
        401, (403, 403), (403, 403), (403, 403), (204, 204),
    ],
    # staff: simulated raters
    ("POST", "/api/campaigns/{campaign_id}/simulate/"): [401, (403, 403), (403, 403), (403, 403), (202, 202)],
    # ML engineers train (admins of Y are no engineers); admins read their campaigns' runs and models
    ("POST", "/api/campaigns/{campaign_id}/train/"): [401, (403, 403), (403, 403), (403, 403), (202, 202)],
    ("GET", "/api/campaigns/{campaign_id}/models/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("GET", "/api/training-runs/{run_id}/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("POST", "/api/training-runs/{run_id}/cancel/"): [401, (403, 403), (403, 403), (403, 403), (200, 200)],
    ("GET", "/api/training-runs/{run_id}/dataset/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("GET", "/api/policy-versions/{version_id}/download/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("GET", "/api/reward-versions/{version_id}/download/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("GET", "/api/sft-versions/{version_id}/download/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("GET", "/api/training-runs/{run_id}/sft-dataset/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    # demonstrations: admins and engineers read them; a campaign's admins (and staff) review them
    ("GET", "/api/campaigns/{campaign_id}/demonstrations/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("POST", "/api/campaigns/{campaign_id}/demonstrations/{demonstration_id}/review/"): [
        401, (403, 403), (403, 403), (404, 200), (200, 200),
    ],
    # endpoints: engineers and staff save, change, run and cancel; admins read their campaigns'
    ("GET", "/api/campaigns/{campaign_id}/endpoints/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("POST", "/api/campaigns/{campaign_id}/endpoints/"): [401, (403, 403), (403, 403), (403, 403), (201, 201)],
    ("GET", "/api/endpoints/{endpoint_id}/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("PATCH", "/api/endpoints/{endpoint_id}/"): [401, (403, 403), (403, 403), (403, 403), (200, 200)],
    ("DELETE", "/api/endpoints/{endpoint_id}/"): [401, (403, 403), (403, 403), (403, 403), (204, 204)],
    ("POST", "/api/endpoints/{endpoint_id}/generate/"): [401, (403, 403), (403, 403), (403, 403), (202, 202)],
    ("GET", "/api/campaigns/{campaign_id}/generation-jobs/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("GET", "/api/generation-jobs/{job_id}/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("GET", "/api/generation-jobs/{job_id}/failures/"): [401, (403, 403), (403, 403), (404, 200), (200, 200)],
    ("POST", "/api/generation-jobs/{job_id}/cancel/"): [401, (403, 403), (403, 403), (403, 403), (200, 200)],
}

# Operations whose object is named in the body, not the path.
TARGETED_BY_BODY = {("POST", "/api/ratings/")}


def body_for(method: str, path: str, ids: dict) -> tuple[object, str | None]:
    """(body, content type) of a request that is valid for the operation, so
    that its answer is about access, not about the input."""
    unique = uuid.uuid4().hex[:8]
    bodies = {
        ("POST", "/api/auth/token/"): {"username": "ann-a", "password": PASSWORD_A},
        ("POST", "/api/campaigns/create/"): {"name": f"new {unique}", "base_model": "fake/base"},
        ("POST", "/api/users/"): {"username": f"new-{unique}"},
        ("POST", "/api/campaigns/{campaign_id}/next/"): {},
        ("POST", "/api/comparisons/{comparison_id}/skip/"): {"reason": "unclear question"},
        ("POST", "/api/ratings/"): {
            "comparison": ids["comparison_id"], "choice": "A", "strength": 2, "idempotency_key": str(uuid.uuid4()),
        },
        ("PATCH", "/api/campaigns/{campaign_id}/"): {"instructions": "changed"},
        ("POST", "/api/campaigns/{campaign_id}/annotators/"): {"usernames": ["ann-b"]},
        ("POST", "/api/campaigns/{campaign_id}/members/"): {"usernames": ["ann-b"], "daily_limit": 10},
        ("PATCH", "/api/campaigns/{campaign_id}/members/{username}/"): {"daily_limit": 5},
        ("POST", "/api/campaigns/{campaign_id}/exports/"): {"kind": "ratings"},
        ("POST", "/api/campaigns/{campaign_id}/admins/"): {"usernames": ["admin-x"]},
        ("POST", "/api/campaigns/{campaign_id}/train/"): {},
        ("POST", "/api/campaigns/{campaign_id}/comparisons/"): {"count": 3},
        ("POST", "/api/campaigns/{campaign_id}/simulate/"): {"raters": 1, "max_ratings": 1},
        ("POST", "/api/campaigns/{campaign_id}/endpoints/"): {
            "name": f"walk {unique}", "base_url": "http://127.0.0.1:8000/v1", "model_name": "m", "api_key": "sk-w",
        },
        ("PATCH", "/api/endpoints/{endpoint_id}/"): {"timeout_s": 30},
        ("POST", "/api/endpoints/{endpoint_id}/generate/"): {},
        ("POST", "/api/campaigns/{campaign_id}/demonstrations/{demonstration_id}/review/"): {"verdict": "accept"},
    }
    raw = {
        ("POST", "/api/campaigns/{campaign_id}/prompts/import/"): b'{"external_id": "walk-1", "prompt": "New?"}\n',
        ("POST", "/api/campaigns/{campaign_id}/answers/import/"): b'{"prompt": "New?", "model": "walk", "response": "Yes."}\n',
        ("POST", "/api/campaigns/{campaign_id}/gold/import/"): b'{"prompt": "p?", "chosen": "good", "rejected": "bad"}\n',
    }
    if (method, path) in raw:
        return raw[(method, path)], NDJSON
    return bodies.get((method, path)), "application/json"


def url_for(path: str, ids: dict) -> str:
    values = dict(ids)
    values["version_id"] = (
        ids["reward_version_id"] if path.startswith("/api/reward-versions/")
        else ids["sft_version_id"] if path.startswith("/api/sft-versions/")
        else ids["policy_version_id"]
    )
    values["username"] = ids["admin"] if "/admins/" in path else ids["member"]
    values["index"] = 0  # each campaign's round 0
    return path.format(**values)


def schema_operations() -> set[tuple[str, str]]:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        from rest_framework.authtoken.models import Token

        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def call(client: APIClient, method: str, url: str, body, content_type) -> tuple[int, str]:
    """One request in a savepoint that is rolled back: (status, body text)."""
    with transaction.atomic():
        if body is None:
            answer = getattr(client, method.lower())(url)
        elif content_type == NDJSON:
            answer = getattr(client, method.lower())(url, body, content_type=content_type)
        else:
            answer = getattr(client, method.lower())(url, body, format="json")
        content = b"".join(answer.streaming_content) if answer.streaming else answer.content
        transaction.set_rollback(True)
    return answer.status_code, content.decode("utf-8", errors="replace")


@pytest.fixture
def world(tmp_path, settings):
    from rlhf.store import ModelStore

    settings.MODEL_STORE = str(tmp_path / "store")
    settings.EXPORT_DIR = str(tmp_path / "exports")
    cache.clear()  # the token endpoint's throttle counts per client address
    return build_world(store=ModelStore(settings.MODEL_STORE), tmp=tmp_path)


def test_every_operation_of_the_schema_has_an_expected_status():
    # A new API must say who may call it before it ships.
    operations = schema_operations()
    assert operations - set(EXPECTED) == set(), "operations with no entry in EXPECTED: add a row for each"
    assert set(EXPECTED) - operations == set(), "EXPECTED names operations the schema no longer has"


def test_every_operation_answers_each_principal_as_the_table_says(world):
    clients = {name: client_for(user) for name, user in world.users.items()}
    mismatches, leaks, seen = [], [], {}
    for (method, path), row in EXPECTED.items():
        targeted = "{" in path or (method, path) in TARGETED_BY_BODY
        for principal, expected in zip(PRINCIPALS, row):
            if not isinstance(expected, tuple):
                expected = (expected, expected) if targeted else (expected,)
            for target, want in zip(("X", "Y"), expected):
                ids = world.ids[target]
                url = url_for(path, ids)
                body, content_type = body_for(method, path, ids)
                status, text = call(clients[principal], method, url, body, content_type)
                seen[(method, path, principal, target)] = text
                if status != want:
                    mismatches.append(
                        f"{principal:>15} {method:6} {url:50} expected {want}, got {status} "
                        f"({HTTPStatus(status).phrase}): {text[:160]}"
                    )
                # Nothing of a campaign reaches anyone outside it, and nothing of
                # A's rating reaches another annotator.
                forbidden = {
                    "anonymous": ["X", "Y"],
                    "annotator_a": ["Y"],
                    "annotator_b": ["Y"],
                    "admin_of_other": ["X"],
                    "staff": [],
                }[principal]
                secrets = [s for t in forbidden for kind in ("rating", "campaign") for s in world.secrets[t][kind]]
                if principal == "annotator_b":
                    secrets += world.secrets["X"]["rating"]
                # An endpoint's key reaches nobody, staff included.
                secrets += [s for t in ("X", "Y") for s in world.secrets[t]["api_key"]]
                leaks += [f"{principal} {method} {url} shows {s!r}" for s in secrets if s in text]
    assert not mismatches, "answers not as the table says:\n" + "\n".join(mismatches)
    assert not leaks, "\n".join(leaks)
    # Lists show only one's own campaigns and runs.
    campaigns = {p: {c["id"] for c in json.loads(seen[("GET", "/api/campaigns/", p, "X")])} for p in PRINCIPALS[1:]}
    x, y = world.ids["X"]["campaign_id"], world.ids["Y"]["campaign_id"]
    assert campaigns == {"annotator_a": {x}, "annotator_b": {x}, "admin_of_other": {y}, "staff": {x, y}}
    runs = json.loads(seen[("GET", "/api/training-runs/", "admin_of_other", "X")])
    assert {r["campaign"] for r in runs} == {y}


def test_annotator_b_cannot_use_or_see_a_lease_of_annotator_a(world):
    # given: A holds a live lease on comparison c of campaign X, whose overlap is 1
    a, b = client_for(world.users["annotator_a"]), client_for(world.users["annotator_b"])
    c = world.ids["X"]["comparison_id"]
    campaign = world.ids["X"]["campaign_id"]
    # when: B asks for work, renews, skips and rates c
    nexts = [b.post(f"/api/campaigns/{campaign}/next/", {"exclude": []}, format="json") for _ in range(2)]
    renew = b.post(f"/api/comparisons/{c}/renew/")
    skip = b.post(f"/api/comparisons/{c}/skip/", {"reason": "mine now"}, format="json")
    rate = b.post("/api/ratings/", {"comparison": c, "choice": "B", "strength": 3, "idempotency_key": str(uuid.uuid4())},
                  format="json")
    # then: B never gets c, and every attempt on it is refused without saying who holds it
    assert all(n.status_code in (200, 204) for n in nexts)
    assert c not in {n.data["comparison"] for n in nexts if n.status_code == 200}
    assert (renew.status_code, skip.status_code, rate.status_code) == (409, 409, 409)
    for answer in (renew, skip, rate):
        assert "ann-a" not in answer.content.decode()
    # and A still holds it and may rate it
    assert a.post(f"/api/comparisons/{c}/renew/").status_code == 200
    rated = a.post("/api/ratings/", {"comparison": c, "choice": "A", "strength": 1, "idempotency_key": str(uuid.uuid4())},
                   format="json")
    assert rated.status_code == 201


def test_annotator_b_replaying_a_key_of_annotator_a_gets_nothing_of_a(world):
    # given: the idempotency key of A's rating (keys are per annotator)
    key = world.secrets["X"]["rating"][1]
    b = client_for(world.users["annotator_b"])
    c = world.ids["X"]["comparison_id"]
    # when
    answer = b.post("/api/ratings/", {"comparison": c, "choice": "A", "strength": 2, "idempotency_key": key}, format="json")
    # then: B's own (refused) attempt, not A's stored rating
    assert answer.status_code == 409
    assert world.secrets["X"]["rating"][0] not in answer.content.decode()


def test_a_campaign_with_no_model_version_has_an_empty_leaderboard(make_user, api_client_for):
    # Found by walking the console: the Bradley-Terry fit of zero versions was a 500.
    from tests.factories import CampaignFactory

    campaign = CampaignFactory()
    staff = api_client_for(make_user(username="root", is_staff=True))
    answer = staff.get(f"/api/campaigns/{campaign.pk}/leaderboard/")
    assert answer.status_code == 200 and answer.data["versions"] == []


def test_a_path_under_api_that_names_nothing_answers_a_json_404(make_user, api_client_for):
    # Found by schemathesis: a non-numeric id matched no route and got Django's HTML page.
    client = api_client_for(make_user(username="root", is_staff=True))
    answer = client.get("/api/campaigns/not-a-number/")
    assert answer.status_code == 404 and answer["Content-Type"] == "application/json"
    assert answer.json()["error"] == "not_found"
    page = client.get("/no-such-page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")
