"""Rubric aspects through the API: a campaign's aspects set and checked,
ratings that judge them stored with their sides, and every bad input a 400
in the {"error", "detail"} shape that writes nothing."""
import uuid

import pytest

from annotate.models import Campaign, Comparison, Lease, Rating
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db

ASPECTS = [
    {"name": "correctness", "question": "Which answer is more correct?", "key": "c"},
    {"name": "safety", "question": "Which answer is safer?", "key": "f"},
]


@pytest.fixture
def aspect_round(make_open_round, annotator, other_annotator):
    return make_open_round(prompts=3, overlap=2, annotators=[annotator, other_annotator], aspects=ASPECTS)


def lease(client, campaign_id: int) -> int:
    answer = client.post(f"/api/campaigns/{campaign_id}/next/")
    assert answer.status_code == 200, answer.content
    return answer.data["comparison"]


def rate(client, comparison_id: int, aspects, choice="A", strength=2):
    body = {"comparison": comparison_id, "choice": choice, "strength": strength,
            "idempotency_key": str(uuid.uuid4())}
    if aspects is not ...:
        body["aspects"] = aspects
    return client.post("/api/ratings/", body, format="json")


def snapshot() -> tuple:
    return (
        list(Rating.objects.order_by("pk").values_list("pk", "aspects")),
        list(Comparison.objects.order_by("pk").values_list("rating_count", flat=True)),
        list(Lease.objects.order_by("pk").values_list("status", flat=True)),
    )


# --- ratings ----------------------------------------------------------------


def test_rating_with_aspects_stores_each_judgment_by_display_side(aspect_round, annotator_client):
    # given
    comparison = lease(annotator_client, aspect_round.campaign_id)
    # when
    answer = rate(annotator_client, comparison, {"safety": "same", "correctness": "B"})
    # then
    assert answer.status_code == 201, answer.content
    rating = Rating.objects.get(pk=answer.data["id"])
    assert rating.aspects == {"correctness": "B", "safety": "same"}
    assert answer.data["aspects"] == {"correctness": "B", "safety": "same"}
    assert Comparison.objects.get(pk=comparison).rating_count == 1


def test_optional_aspects_may_be_left_out(aspect_round, annotator_client):
    comparison = lease(annotator_client, aspect_round.campaign_id)
    answer = rate(annotator_client, comparison, ...)
    assert answer.status_code == 201, answer.content
    assert Rating.objects.get(pk=answer.data["id"]).aspects == {}


@pytest.mark.parametrize(
    "aspects, required, where, words",
    [
        ({"helpfulness": "A"}, False, "aspects.helpfulness", "no aspect 'helpfulness'"),
        ({"correctness": "C"}, False, "aspects.correctness", "use one of A, B, same"),
        ({"correctness": "tie"}, False, "aspects.correctness", "use one of A, B, same"),
        ({"correctness": 1}, False, "aspects.correctness", "use one of A, B, same"),
        (["correctness"], False, "aspects", "must be an object"),
        ({"correctness": "A"}, True, "aspects.safety", "requires every aspect; missing: safety"),
        (..., True, "aspects.correctness", "missing: correctness, safety"),
    ],
    ids=["unknown-aspect", "bad-value", "tie-is-not-same", "number", "not-an-object", "required-missing",
         "required-all-missing"],
)
def test_bad_aspects_are_a_400_naming_the_problem_and_write_nothing(
    aspect_round, annotator_client, aspects, required, where, words
):
    # given
    Campaign.objects.filter(pk=aspect_round.campaign_id).update(aspects_required=required)
    comparison = lease(annotator_client, aspect_round.campaign_id)
    before = snapshot()
    # when
    answer = rate(annotator_client, comparison, aspects)
    # then
    assert answer.status_code == 400, answer.content
    assert answer.data["error"] == "invalid"
    assert words in answer.data["detail"]
    assert where in answer.data["errors"] or where == "aspects"
    assert snapshot() == before


def test_a_campaign_without_aspects_refuses_any(make_open_round, annotator, annotator_client):
    round_ = make_open_round(prompts=2, overlap=1, annotators=[annotator])
    comparison = lease(annotator_client, round_.campaign_id)
    before = snapshot()
    answer = rate(annotator_client, comparison, {"correctness": "A"})
    assert answer.status_code == 400
    assert "its aspects: none" in answer.data["detail"]
    assert snapshot() == before


def test_required_aspects_all_given_are_stored(aspect_round, annotator_client):
    Campaign.objects.filter(pk=aspect_round.campaign_id).update(aspects_required=True)
    comparison = lease(annotator_client, aspect_round.campaign_id)
    answer = rate(annotator_client, comparison, {"correctness": "A", "safety": "B"}, choice="tie", strength=None)
    assert answer.status_code == 201, answer.content


def test_the_annotator_campaign_list_carries_the_aspects(aspect_round, annotator_client):
    answer = annotator_client.get("/api/campaigns/")
    row = next(c for c in answer.data if c["id"] == aspect_round.campaign_id)
    assert row["aspects"] == ASPECTS and row["aspects_required"] is False


# --- campaign settings --------------------------------------------------------


def create(client, **fields):
    return client.post("/api/campaigns/create/", {"name": "rubric", "base_model": "m", **fields}, format="json")


def test_campaign_create_with_aspects_stores_them(campaign_admin_client):
    answer = create(campaign_admin_client, aspects=ASPECTS, aspects_required=True, aspect_training="heads",
                    aspect_weights={"overall": 1, "correctness": 0.5})
    assert answer.status_code == 201, answer.content
    campaign = Campaign.objects.get(name="rubric")
    assert campaign.aspects == ASPECTS and campaign.aspects_required
    assert campaign.aspect_training == "heads" and campaign.aspect_weights == {"overall": 1.0, "correctness": 0.5}
    assert answer.data["aspects"] == ASPECTS


@pytest.mark.parametrize(
    "fields, field, words",
    [
        ({"aspects": [ASPECTS[0], {**ASPECTS[1], "name": "correctness"}]}, "aspects", "share this name"),
        ({"aspects": [ASPECTS[0], {**ASPECTS[1], "key": "c"}]}, "aspects", "already another aspect's"),
        ({"aspects": [{**ASPECTS[0], "key": "q"}]}, "aspects", "taken by the rating page"),
        ({"aspects": [{**ASPECTS[0], "key": "1"}]}, "aspects", "one lowercase letter"),
        ({"aspects": [{**ASPECTS[0], "key": "s"}]}, "aspects", "taken by the rating page"),
        ({"aspects": [{**ASPECTS[0], "name": "Correct ness"}]}, "aspects", "lowercase identifier"),
        ({"aspects": [{**ASPECTS[0], "name": "overall"}]}, "aspects", "reserved"),
        ({"aspects": [{**ASPECTS[0], "question": ""}]}, "aspects", "one line"),
        ({"aspects": {"correctness": "c"}}, "aspects", "a list"),
        ({"aspect_training": "both"}, "aspect_training", "one of overall, heads"),
        ({"aspect_training": "heads"}, "aspect_training", "heads needs aspects"),
        ({"aspects": ASPECTS, "aspect_weights": {"helpfulness": 1}}, "aspect_weights", "neither 'overall'"),
        ({"aspects": ASPECTS, "aspect_weights": {"overall": -1}}, "aspect_weights", "0 or more"),
        ({"aspects": ASPECTS, "aspect_weights": {"overall": 0}}, "aspect_weights", "every weight is 0"),
    ],
)
def test_campaign_create_refuses_bad_aspect_settings(campaign_admin_client, fields, field, words):
    answer = create(campaign_admin_client, **fields)
    assert answer.status_code == 400, answer.content
    assert words in answer.data["detail"]
    assert field in answer.data["errors"]
    assert not Campaign.objects.filter(name="rubric").exists()


def test_campaign_patch_sets_aspects_and_refuses_weights_naming_a_removed_aspect(campaign_admin_client, campaign_admin):
    campaign = CampaignFactory(aspects=ASPECTS, aspect_weights={"safety": 2.0})
    url = f"/api/campaigns/{campaign.pk}/"
    # when: the weighted aspect goes
    answer = campaign_admin_client.patch(url, {"aspects": ASPECTS[:1]}, format="json")
    # then
    assert answer.status_code == 400
    assert "'safety' is neither 'overall'" in answer.data["detail"]
    campaign.refresh_from_db()
    assert campaign.aspects == ASPECTS
    # when: a new aspect and its weight together
    new = [*ASPECTS, {"name": "style", "question": "Which reads better?", "key": "y"}]
    answer = campaign_admin_client.patch(url, {"aspects": new, "aspect_weights": {"style": 1}}, format="json")
    assert answer.status_code == 200, answer.content
    campaign.refresh_from_db()
    assert campaign.aspects == new and campaign.aspect_weights == {"style": 1.0}


# --- the console's campaign form ------------------------------------------------


@pytest.fixture
def admin_browser_client(client, campaign_admin):
    client.force_login(campaign_admin)
    return client


FORM = {"name": "Rubric", "overlap": "3", "comparisons_per_round": "32", "lease_ttl_seconds": "600",
        "gold_frequency": "0.1", "gold_min_accuracy": "0.7", "gold_min_count": "5", "base_model": "m",
        "training_config": "{}", "auto_train": "on"}


def test_console_form_sets_aspects_one_a_line_and_shows_them_back(admin_browser_client):
    answer = admin_browser_client.post("/console/campaigns/new/", {
        **FORM, "aspects": "correctness | c | Which answer is more correct?\n\nsafety | f | Which answer is safer?\n",
        "aspects_required": "on", "aspect_training": "heads", "aspect_weights": '{"overall": 1, "safety": 2}'})
    assert answer.status_code == 302, answer.content.decode()[-2000:]
    campaign = Campaign.objects.get(name="Rubric")
    assert campaign.aspects == ASPECTS and campaign.aspects_required and campaign.aspect_training == "heads"
    assert campaign.aspect_weights == {"overall": 1.0, "safety": 2.0}
    page = admin_browser_client.get(f"/console/campaigns/{campaign.pk}/").content.decode()
    assert "correctness | c | Which answer is more correct?" in page


@pytest.mark.parametrize(
    "fields, field, words",
    [({"aspects": "correctness c Which?"}, "aspects", "write name | key | question"),
     ({"aspects": "correctness | q | Which?"}, "aspects", "taken by the rating page"),
     ({"aspects": "correctness | c | Which?", "aspect_weights": "{overall: 1"}, "aspect_weights", "not valid JSON")],
)
def test_console_form_refuses_bad_aspects_next_to_the_field(admin_browser_client, fields, field, words):
    answer = admin_browser_client.post("/console/campaigns/new/", {**FORM, **fields})
    assert answer.status_code == 400
    html = answer.content.decode()
    assert f'id="err-{field}"' in html and words in html
    assert not Campaign.objects.filter(name="Rubric").exists()
