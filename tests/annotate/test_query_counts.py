"""Pinned query counts of the annotator's hot path (the list and next-task
APIs). The numbers are what the code does today,
savepoints included; a change that adds queries must raise them on purpose.
Each is checked on a small and a larger round: the count must not grow with it."""
import uuid

import pytest
from django.db import connection

from annotate.models import Lease

pytestmark = pytest.mark.django_db

NEXT_FRESH_LEASE = 7
NEXT_RELOAD = 6
RATING_CREATE = {"postgresql": 6, "sqlite": 8}  # PostgreSQL writes rating, lease and count in one statement
CAMPAIGN_LIST = 3


@pytest.fixture(params=[3, 40], ids=["3-comparisons", "40-comparisons"])
def busy_round(request, make_open_round, annotator, make_user, api_client_for):
    """A round where others already leased and rated, so the queries run
    against real competition, not an empty table."""
    others = [make_user("annotator") for _ in range(2)]
    round_ = make_open_round(prompts=request.param, overlap=3, annotators=[annotator, *others])
    for other in others:
        client = api_client_for(other)
        comparison = client.post(f"/api/campaigns/{round_.campaign_id}/next/").data["comparison"]
        client.post("/api/ratings/", {"comparison": comparison, "choice": "tie", "idempotency_key": str(uuid.uuid4())},
                    format="json")
        client.post(f"/api/campaigns/{round_.campaign_id}/next/")  # and hold a lease
    return round_


def test_comparison_next_query_count_is_pinned(busy_round, annotator_client, django_assert_max_num_queries):
    url = f"/api/campaigns/{busy_round.campaign_id}/next/"
    with django_assert_max_num_queries(NEXT_FRESH_LEASE):
        assert annotator_client.post(url).status_code == 200
    with django_assert_max_num_queries(NEXT_RELOAD):
        assert annotator_client.post(url).status_code == 200


def test_rating_create_query_count_is_pinned(busy_round, annotator_client, annotator, django_assert_max_num_queries):
    comparison = annotator_client.post(f"/api/campaigns/{busy_round.campaign_id}/next/").data["comparison"]
    body = {"comparison": comparison, "choice": "A", "strength": 2, "idempotency_key": str(uuid.uuid4())}
    with django_assert_max_num_queries(RATING_CREATE[connection.vendor]):
        assert annotator_client.post("/api/ratings/", body, format="json").status_code == 201
    assert Lease.objects.get(annotator=annotator, comparison_id=comparison).status == "done"


def test_campaign_list_query_count_is_pinned(busy_round, make_open_round, annotator, annotator_client,
                                             django_assert_max_num_queries):
    make_open_round(prompts=1, annotators=[annotator])
    with django_assert_max_num_queries(CAMPAIGN_LIST):
        answer = annotator_client.get("/api/campaigns/")
    assert len(answer.data) == 2


HOME_PAGE = 8  # session, user, roles, campaigns, rounds, today's ratings, the annotator's counts, + one spare


@pytest.mark.parametrize("campaigns", [1, 6])
def test_home_page_query_count_does_not_grow_with_campaigns(campaigns, make_open_round, annotator,
                                                            django_assert_max_num_queries):
    from django.test import Client

    from tests.factories import ratings_bulk_create

    rounds = [make_open_round(prompts=3, overlap=2, annotators=[annotator]) for _ in range(campaigns)]
    ratings_bulk_create({"comparison": c, "annotator": annotator, "choice": "A", "strength": 1}
                        for c in rounds[0].comparisons.all()[:2])
    client = Client()
    client.force_login(annotator)
    with django_assert_max_num_queries(HOME_PAGE):
        page = client.get("/")
    assert page.status_code == 200
    rows = page.context["rows"]
    assert [r["campaign"].pk for r in rows] == [r.campaign_id for r in rounds]
    assert rows[0]["mine"] == {"mine_today": 2, "mine_in_campaign": 2}
    assert all(r["mine"] == {"mine_today": 2, "mine_in_campaign": 0} for r in rows[1:])
    assert rows[0]["progress"]["ratings"] == 2 and rows[0]["progress"]["target_ratings"] == 6
    assert all(r["can_rate"] for r in rows)
