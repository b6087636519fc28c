"""Who may call what (DESIGN.md: three kinds of user; invariant 7)."""
import pytest

from annotate.models import Campaign, Prompt, TrainingRun
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db

# Every API of annotate/urls.py except the token endpoint (which is how an
# anonymous user logs in). The ids need not exist: authentication comes first.
EVERY_API = [
    ("get", "/api/campaigns/"),
    ("post", "/api/campaigns/1/next/"),
    ("get", "/api/campaigns/1/progress/"),
    ("post", "/api/comparisons/1/renew/"),
    ("post", "/api/comparisons/1/skip/"),
    ("post", "/api/ratings/"),
    ("post", "/api/campaigns/create/"),
    ("get", "/api/campaigns/1/"),
    ("post", "/api/campaigns/1/prompts/import/"),
    ("post", "/api/campaigns/1/annotators/"),
    ("post", "/api/campaigns/1/start/"),
    ("patch", "/api/campaigns/1/"),
    ("post", "/api/campaigns/1/pause/"),
    ("post", "/api/campaigns/1/resume/"),
    ("post", "/api/campaigns/1/archive/"),
    ("get", "/api/campaigns/1/members/"),
    ("post", "/api/campaigns/1/members/"),
    ("patch", "/api/campaigns/1/members/ann/"),
    ("post", "/api/users/"),
    ("post", "/api/campaigns/1/train/"),
    ("get", "/api/campaigns/1/models/"),
    ("get", "/api/training-runs/"),
    ("get", "/api/training-runs/1/"),
    ("post", "/api/training-runs/1/cancel/"),
    ("get", "/api/training-runs/1/dataset/"),
    ("get", "/api/policy-versions/1/download/"),
    ("get", "/api/reward-versions/1/download/"),
    ("get", "/api/campaigns/1/quality/"),
    ("get", "/api/campaigns/1/leaderboard/"),
    ("post", "/api/campaigns/1/exports/"),
    ("get", "/api/exports/1/download/"),
    ("get", "/api/campaigns/1/exports/"),
    ("post", "/api/campaigns/1/gold/import/"),
    ("get", "/api/campaigns/1/gold/"),
]


def test_every_api_route_is_in_the_anonymous_list():
    from django.urls import get_resolver

    from annotate import urls

    names = {p.name for p in urls.urlpatterns} - {"api-token"}
    resolved = {get_resolver().resolve(path).url_name for _, path in EVERY_API}
    assert resolved == names, "a new API route: add it to EVERY_API so anonymous access is checked"


@pytest.mark.parametrize("method, path", EVERY_API)
def test_anonymous_user_is_refused_by_every_api(anonymous_client, method, path):
    # when
    answer = getattr(anonymous_client, method)(path)
    # then
    assert answer.status_code == 401
    assert answer["WWW-Authenticate"].startswith("Token")


def test_anonymous_user_can_obtain_a_token_with_a_password(anonymous_client, db):
    # given
    from annotate.services.users import user_create_or_update

    _, token = user_create_or_update(username="ann", password="correct horse", roles=["annotator"])
    # when
    answer = anonymous_client.post("/api/auth/token/", {"username": "ann", "password": "correct horse"})
    # then
    assert answer.status_code == 200
    assert answer.data["token"] == token


def test_user_create_or_update_refuses_an_unknown_role(db):
    from annotate.errors import ValidationFailed
    from annotate.services.users import user_create_or_update

    with pytest.raises(ValidationFailed, match="superuser"):
        user_create_or_update(username="x", password="pw", roles=["superuser"])


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("post", "/api/campaigns/create/", {"name": "mine", "base_model": "m"}),
        ("post", "/api/campaigns/{id}/prompts/import/", None),
        ("post", "/api/campaigns/{id}/annotators/", {"usernames": ["ann"]}),
        ("post", "/api/campaigns/{id}/start/", None),
        ("post", "/api/campaigns/{id}/train/", {}),
        ("get", "/api/campaigns/{id}/", None),
        ("get", "/api/campaigns/{id}/models/", None),
        ("get", "/api/training-runs/", None),
    ],
)
def test_annotator_cannot_use_admin_or_engineer_apis(open_round, annotator_client, method, path, body):
    # given: the annotator is in the campaign's pool, and still may not manage it
    campaign = open_round.campaign
    before = (Campaign.objects.count(), Prompt.objects.count(), TrainingRun.objects.count(), campaign.status)
    # when
    url = path.format(id=campaign.pk)
    if body is None and "import" in url:
        answer = annotator_client.post(url, b'{"prompt": "x"}\n', content_type="application/x-ndjson")
    else:
        answer = getattr(annotator_client, method)(url, body, format="json")
    # then
    assert answer.status_code == 403
    campaign.refresh_from_db()
    assert (Campaign.objects.count(), Prompt.objects.count(), TrainingRun.objects.count(), campaign.status) == before


def test_annotator_sees_only_campaigns_they_belong_to(make_open_round, annotator, other_annotator, annotator_client):
    # given
    mine = make_open_round(prompts=1, annotators=[annotator]).campaign
    make_open_round(prompts=1, annotators=[other_annotator])
    CampaignFactory()
    # when
    answer = annotator_client.get("/api/campaigns/")
    # then
    assert [c["id"] for c in answer.data] == [mine.pk]


def test_annotator_gets_404_for_another_campaigns_progress(make_open_round, other_annotator, annotator_client):
    theirs = make_open_round(prompts=1, annotators=[other_annotator]).campaign
    assert annotator_client.get(f"/api/campaigns/{theirs.pk}/progress/").status_code == 404


def test_admin_and_engineer_see_every_campaign(open_round, campaign_admin_client, ml_engineer_client):
    CampaignFactory()
    for client in (campaign_admin_client, ml_engineer_client):
        assert len(client.get("/api/campaigns/").data) == 2


def test_engineer_cannot_create_campaigns_or_import(ml_engineer_client):
    campaign = CampaignFactory()
    created = ml_engineer_client.post("/api/campaigns/create/", {"name": "n", "base_model": "m"}, format="json")
    imported = ml_engineer_client.post(
        f"/api/campaigns/{campaign.pk}/prompts/import/", b'{"prompt": "x"}\n', content_type="application/x-ndjson"
    )
    assert (created.status_code, imported.status_code) == (403, 403)
    assert (Campaign.objects.count(), Prompt.objects.count()) == (1, 0)


def test_admin_cannot_trigger_training(open_round, campaign_admin_client):
    answer = campaign_admin_client.post(f"/api/campaigns/{open_round.campaign_id}/train/", {}, format="json")
    assert answer.status_code == 403
    assert TrainingRun.objects.count() == 0


def test_admin_can_create_a_campaign_and_import_prompts(campaign_admin_client):
    created = campaign_admin_client.post("/api/campaigns/create/", {"name": "n", "base_model": "m"}, format="json")
    assert created.status_code == 201
    imported = campaign_admin_client.post(
        f"/api/campaigns/{created.data['id']}/prompts/import/", b'{"prompt": "x"}\n',
        content_type="application/x-ndjson",
    )
    assert imported.status_code == 200
    assert Prompt.objects.filter(campaign_id=created.data["id"]).count() == 1


def test_engineer_can_list_and_read_training_runs_and_models(open_round, ml_engineer_client):
    # given
    run = TrainingRun.objects.create(campaign=open_round.campaign, round=open_round, kind=TrainingRun.Kind.TRAIN)
    # when
    listed = ml_engineer_client.get(f"/api/training-runs/?campaign={open_round.campaign_id}")
    detail = ml_engineer_client.get(f"/api/training-runs/{run.pk}/")
    models = ml_engineer_client.get(f"/api/campaigns/{open_round.campaign_id}/models/")
    # then
    assert listed.status_code == detail.status_code == models.status_code == 200
    assert [r["id"] for r in listed.data] == [run.pk]
    assert detail.data["round"] == 0 and "metrics_history" in detail.data
    assert [p["version"] for p in models.data["policies"]] == [0]


def test_annotator_role_is_needed_to_rate_even_for_staff(open_round, make_user, api_client_for):
    # given: a campaign admin in no annotator group
    admin = api_client_for(make_user("campaign_admin"))
    # when
    answer = admin.post(f"/api/campaigns/{open_round.campaign_id}/next/")
    # then
    assert answer.status_code == 403
    assert "annotator" in answer.data["detail"]
