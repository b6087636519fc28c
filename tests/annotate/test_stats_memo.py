"""Memoized statistics (annotate/selectors/memo.py): the leaderboard, quality,
reward weights and pool rating counts come from the cache while nothing they
read changed, equal to a fresh computation, and are computed again right
after any input changes: a new rating (through the API, as annotators add
them), a gold pair, a policy version, an external model, the reference
model, the request's parameters, a username."""
import uuid

import pytest
from django.contrib.auth import get_user_model

from annotate.models import Comparison, PolicyVersion, Role
from annotate.selectors import leaderboard as leaderboard_module
from annotate.selectors import memberships as memberships_module
from annotate.selectors import quality as quality_module
from annotate.selectors.leaderboard import campaign_leaderboard
from annotate.selectors.memberships import campaign_members
from annotate.selectors.quality import annotator_weights, campaign_quality
from tests.factories import ExternalModelFactory, external_answers, ratings_bulk_create, version_chain_rounds

pytestmark = pytest.mark.django_db

User = get_user_model()


@pytest.fixture
def rated(make_user):
    """Three versions, three annotators who rated every comparison but the
    last one of the last round (left for a rating through the API)."""
    annotators = [make_user(Role.ANNOTATOR) for _ in range(3)]
    rounds = version_chain_rounds(versions=3, prompts=6, annotators=annotators, overlap=3)
    comparisons = [c for r in rounds for c in r.comparisons.order_by("pk")]
    ratings_bulk_create(
        {"comparison": c, "annotator": a, "choice": "AB"[(c.pk + n) % 2], "strength": 2, "time_on_task_ms": 3000}
        for c in comparisons[:-1] for n, a in enumerate(annotators)
    )
    return rounds, annotators, comparisons[-1]


def _rate_through_api(api_client_for, annotator, round_, comparison, choice="A") -> None:
    client = api_client_for(annotator)
    leased = client.post(f"/api/campaigns/{round_.campaign_id}/next/").data["comparison"]
    assert leased == comparison.pk
    answer = client.post("/api/ratings/", {"comparison": leased, "choice": choice, "strength": 3,
                                           "idempotency_key": str(uuid.uuid4())}, format="json")
    assert answer.status_code == 201


def _computes(monkeypatch, module, name) -> list:
    """Count calls of module.name (the computation behind the memo)."""
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def _fresh(settings):
    """A cache with nothing in it (another key prefix), for a fresh result."""
    settings.CACHES = {name: {**conf, "KEY_PREFIX": f"fresh-{uuid.uuid4().hex}"}
                       for name, conf in settings.CACHES.items()}


def test_leaderboard_is_served_from_the_cache_equal_to_a_fresh_one(rated, monkeypatch, settings):
    campaign = rated[0][0].campaign
    computes = _computes(monkeypatch, leaderboard_module, "_leaderboard")
    first = campaign_leaderboard(campaign=campaign, by_round=True)
    again = campaign_leaderboard(campaign=campaign, by_round=True)
    assert len(computes) == 1 and again == first
    _fresh(settings)
    assert campaign_leaderboard(campaign=campaign, by_round=True) == first
    assert len(computes) == 2


def test_a_new_rating_moves_every_memoized_figure_at_once(rated, api_client_for, monkeypatch):
    rounds, annotators, last = rated
    campaign = rounds[0].campaign
    board = campaign_leaderboard(campaign=campaign)
    quality = campaign_quality(campaign=campaign)
    weights = annotator_weights(campaign=campaign)
    counts = {row["username"]: row["ratings_total"] for row in campaign_members(campaign=campaign)}
    assert campaign_leaderboard(campaign=campaign) == board  # from the cache

    _rate_through_api(api_client_for, annotators[0], rounds[-1], last)

    assert campaign_leaderboard(campaign=campaign)["n_ratings"] == board["n_ratings"] + 1
    assert campaign_quality(campaign=campaign)["n_ratings"] == quality["n_ratings"] + 1
    after = {row["username"]: row["ratings_total"] for row in campaign_members(campaign=campaign)}
    assert after[annotators[0].username] == counts[annotators[0].username] + 1
    # the weights read the same ratings: recomputed, not served
    computes = _computes(monkeypatch, quality_module, "_reliability")
    annotator_weights(campaign=campaign)
    assert len(computes) == 1 and weights  # and served again now
    annotator_weights(campaign=campaign)
    assert len(computes) == 1


def test_leaderboard_follows_versions_external_models_reference_gold_and_parameters(rated):
    rounds, annotators, _ = rated
    campaign = rounds[0].campaign
    board = campaign_leaderboard(campaign=campaign)
    names = [m["name"] for m in board["models"]]

    PolicyVersion.objects.create(campaign=campaign, version=3, parent=PolicyVersion.objects.get(campaign=campaign,
                                                                                                version=2))
    assert [m["name"] for m in campaign_leaderboard(campaign=campaign)["models"]] == [*names, "v3"]

    model = ExternalModelFactory(campaign=campaign, name="frontier")
    assert "frontier" in [m["name"] for m in campaign_leaderboard(campaign=campaign)["models"]]
    model.name = "frontier-2"
    model.save(update_fields=["name"])
    assert "frontier-2" in [m["name"] for m in campaign_leaderboard(campaign=campaign)["models"]]
    campaign.reference_model = model
    campaign.save(update_fields=["reference_model"])
    assert campaign_leaderboard(campaign=campaign)["reference_model"] == "frontier-2"

    # A gold pair added to a round, rated: gold pairs are left out of the scores,
    # so the count of rated pairs stays; the key moved all the same (a new comparison).
    prompt = rounds[-1].comparisons.first().prompt
    answer = external_answers(model, [prompt], text=lambda m, p: "gold answer")[0]
    gold = Comparison.objects.create(round=rounds[-1], prompt=prompt, response_a=answer,
                                     response_b=rounds[-1].comparisons.first().response_a, gold_choice="A")
    before, quality = campaign_leaderboard(campaign=campaign), campaign_quality(campaign=campaign)
    ratings_bulk_create([{"comparison": gold, "annotator": annotators[0], "choice": "A", "strength": 1}])
    assert campaign_leaderboard(campaign=campaign)["n_ratings"] == before["n_ratings"]
    assert campaign_quality(campaign=campaign)["n_ratings"] == quality["n_ratings"] + 1

    assert "7 resamples" in campaign_leaderboard(campaign=campaign, resamples=7)["interval"]
    assert "seed 3" in campaign_leaderboard(campaign=campaign, seed=3)["interval"]
    assert "by_round" in campaign_leaderboard(campaign=campaign, by_round=True)
    assert "by_round" not in campaign_leaderboard(campaign=campaign)


def test_quality_follows_gold_round_and_usernames(rated, api_client_for):
    rounds, annotators, last = rated
    campaign = rounds[0].campaign
    report = campaign_quality(campaign=campaign)
    assert all(row["gold_n"] == 0 for row in report["annotators"])

    # a gold pair rated (the rating through the API, so counted as annotators' are)
    Comparison.objects.filter(pk=last.pk).update(gold_choice="A")
    _rate_through_api(api_client_for, annotators[1], rounds[-1], last, choice="A")
    gold = {row["username"]: row["gold_n"] for row in campaign_quality(campaign=campaign)["annotators"]}
    assert gold[annotators[1].username] == 1

    one_round = campaign_quality(campaign=campaign, round_=rounds[0])
    assert one_round["round"] == 0 and one_round["n_ratings"] < campaign_quality(campaign=campaign)["n_ratings"]

    User.objects.filter(pk=annotators[2].pk).update(username="renamed")
    assert "renamed" in [row["username"] for row in campaign_quality(campaign=campaign)["annotators"]]


def test_members_counts_of_a_page_equal_the_memoized_ones(rated, monkeypatch):
    campaign = rated[0][0].campaign
    computes = _computes(monkeypatch, memberships_module, "_counted")
    whole = campaign_members(campaign=campaign)
    campaign_members(campaign=campaign)
    assert len(computes) == 1  # the second from the cache
    page = memberships_module.pool_memberships(campaign=campaign)[:2]
    paged = campaign_members(campaign=campaign, memberships=page)
    assert len(computes) == 1  # a page reads the same memo
    assert [(r["username"], r["ratings_total"], r["ratings_today"]) for r in paged] == [
        (r["username"], r["ratings_total"], r["ratings_today"]) for r in whole[:2]
    ]


def test_the_redis_cache_serves_the_memo_as_web_and_workers_share_it(rated, settings, monkeypatch):
    """The production cache where the broker is Redis: a result kept there is
    served (by any process that asks with the same key)."""
    from django.conf import settings as django_settings

    broker = django_settings.CELERY_BROKER_URL
    if not broker.startswith("redis://"):
        pytest.skip("no Redis broker in this run")
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": broker,
                                   "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}}
    campaign = rated[0][0].campaign
    computes = _computes(monkeypatch, quality_module, "_quality")
    first = campaign_quality(campaign=campaign)
    assert campaign_quality(campaign=campaign) == first and len(computes) == 1


def test_a_slow_compute_of_an_older_state_does_not_replace_a_newer_latest(settings):
    # given: the latest of a campaign's figure was computed at 110 ratings
    from annotate.selectors.memo import memoized_latest

    _fresh(settings)
    newer_state = (987654, "db", 0, 0, 0, 110)
    older_state = (987654, "db", 0, 0, 0, 100)
    memoized_latest("figure", state=newer_state, params={}, key=("newer",), compute=lambda: {"at": 110},
                    stale_ok=False)
    # when: a compute that started at 100 ratings finishes after it
    assert memoized_latest("figure", state=older_state, params={}, key=("older",), compute=lambda: {"at": 100},
                           stale_ok=False) == {"at": 100}
    # then: a visitor at a third, unseen state is shown the newer result while a refresh runs
    shown = memoized_latest("figure", state=(987654, "db", 0, 0, 0, 120), params={}, key=("unseen",),
                            compute=lambda: {"at": 120}, stale_ok=True)
    assert (shown["at"], shown["stale"], shown["as_of"]["ratings"]) in [(110, True, 110), (120, False, 120)]
    # and the older state's own key still answers from its entry
    assert memoized_latest("figure", state=older_state, params={}, key=("older",), compute=lambda: {"at": -1},
                           stale_ok=False) == {"at": 100}
