"""Fixtures shared by the Django-side tests: users per role, API clients
authenticated by token per role, and collecting rounds built without any ML.

The one autouse fixture (own_stats_cache) needs no database, so the rlhf
tests (which have none) run as before."""
import uuid

import pytest

from annotate.models import Role


@pytest.fixture
def make_user(db):
    """make_user(Role.ANNOTATOR, Role.ML_ENGINEER, username="x") -> User."""
    from tests.factories import UserFactory

    def make(*roles: str, **fields):
        return UserFactory(roles=list(roles), **fields)

    return make


@pytest.fixture
def annotator(make_user):
    return make_user(Role.ANNOTATOR, username="ann")


@pytest.fixture
def other_annotator(make_user):
    return make_user(Role.ANNOTATOR, username="ann-other")


@pytest.fixture
def campaign_admin(make_user):
    """A campaign admin who administers every campaign of the test: those
    that exist when the fixture is made and those made after it (factories
    and fixtures don't name admins). Campaign admins manage only the
    campaigns they administer; `other_campaign_admin` administers none of
    these, for the tests of that scoping."""
    from django.db.models.signals import post_save

    from annotate.models import Campaign

    admin = make_user(Role.CAMPAIGN_ADMIN, username="admin")
    admin.administered_campaigns.add(*Campaign.objects.all())

    def administer(sender, instance, created, **kwargs):
        if created:
            instance.admins.add(admin)

    post_save.connect(administer, sender=Campaign, weak=False, dispatch_uid="tests-campaign-admin")
    yield admin
    post_save.disconnect(sender=Campaign, dispatch_uid="tests-campaign-admin")


@pytest.fixture
def other_campaign_admin(make_user):
    """A campaign admin of no campaign the test makes unless it says so."""
    return make_user(Role.CAMPAIGN_ADMIN, username="admin-other")


@pytest.fixture
def ml_engineer(make_user):
    return make_user(Role.ML_ENGINEER, username="engineer")


@pytest.fixture
def api_client_for():
    """api_client_for(user) -> an APIClient sending that user's token."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    def make(user):
        client = APIClient()
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        client.user = user
        return client

    return make


@pytest.fixture
def anonymous_client():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def annotator_client(api_client_for, annotator):
    return api_client_for(annotator)


@pytest.fixture
def campaign_admin_client(api_client_for, campaign_admin):
    return api_client_for(campaign_admin)


@pytest.fixture
def ml_engineer_client(api_client_for, ml_engineer):
    return api_client_for(ml_engineer)


@pytest.fixture
def make_open_round(db):
    """make_open_round(prompts=4, overlap=2, annotators=[...]) -> a collecting
    round 0 of a fresh active campaign: policy v0 with fake files, two answers
    per prompt, comparisons opened by annotate.services.rounds.round_open."""
    from tests.factories import open_round

    return open_round


@pytest.fixture
def open_round(make_open_round, annotator, other_annotator):
    """Round 0 with 3 comparisons, overlap k=2, `annotator` and
    `other_annotator` in the campaign's pool."""
    return make_open_round(prompts=3, overlap=2, annotators=[annotator, other_annotator])


@pytest.fixture
def celery_eager():
    """Run tasks in-process instead of sending them to Redis, for tests whose
    on_commit callbacks do run (transactional_db). The Celery app read its
    settings at import, so override_settings would not reach it."""
    from config.celery import app

    before = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield app
    app.conf.task_always_eager, app.conf.task_eager_propagates = before


@pytest.fixture
def enqueued(monkeypatch):
    """Stages sent to the gpu queue, as (run_id, stage), instead of a broker."""
    from annotate import tasks

    sent = []
    monkeypatch.setattr(
        tasks.training_stage_task, "apply_async", lambda kwargs, **options: sent.append((kwargs["run_id"], kwargs["stage"]))
    )
    return sent


@pytest.fixture(autouse=True)
def own_stats_cache(settings):
    """Each test its own keys in the shared cache (annotate/selectors/memo.py):
    the tests' Redis database and file cache outlive a test, and on SQLite a
    rolled-back test's ids come back in the next one. A new KEY_PREFIX (not a
    clear(): on Redis that would flush the broker's database too)."""
    settings.CACHES = {
        name: {**conf, "KEY_PREFIX": f"test-{uuid.uuid4().hex}"} for name, conf in settings.CACHES.items()
    }
