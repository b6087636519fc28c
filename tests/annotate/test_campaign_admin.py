"""Campaign admins run campaigns: edit settings (bad input writes nothing),
pause / resume / archive and what that does to the annotator's next
comparison, the base model locked after start, and the console pages
(campaigns list, new, overview) with pinned query counts."""
import pytest

from annotate.models import Lease, Campaign, Rating, Role, TrainingRun
from tests.factories import CampaignFactory, open_round, ratings_bulk_create

pytestmark = pytest.mark.django_db

# Console campaigns list, whatever the number of campaigns, rounds and ratings:
# session, user, groups (role check), campaigns, rounds, ratings today,
# messages (none).
CONSOLE_LIST_QUERIES = 6
# Overview, whatever the number of runs: session, user, groups, campaign,
# then annotate/selectors/overview.py's reads (rounds, round progress, rating
# tallies and the reference model's, runs, policy and reward versions,
# external models, who is rating: leases and recent ratings);
# tests/annotate/test_overview.py pins it against the number of rounds too.
CONSOLE_OVERVIEW_QUERIES = 14


def next_url(campaign_id):
    return f"/api/campaigns/{campaign_id}/next/"


# --- PATCH /api/campaigns/<id>/ ---------------------------------------------------------


def test_admin_edits_campaign_settings(campaign_admin_client):
    campaign = CampaignFactory(status=Campaign.Status.DRAFT)
    answer = campaign_admin_client.patch(
        f"/api/campaigns/{campaign.pk}/",
        {"instructions": "# New\n\nBe *kind*.", "overlap": 5, "gold_frequency": 0.2, "base_model": "other/model",
         "training_config": {"reward": {"epochs": 2}}},
        format="json",
    )
    assert answer.status_code == 200, answer.data
    campaign.refresh_from_db()
    assert (campaign.instructions, campaign.overlap, campaign.gold_frequency, campaign.base_model) == (
        "# New\n\nBe *kind*.", 5, 0.2, "other/model",
    )
    assert campaign.training_config == {"reward": {"epochs": 2}}
    assert answer.data["gold_frequency"] == 0.2


@pytest.mark.parametrize(
    "body, field",
    [
        ({"overlap": 0}, "overlap"),
        ({"lease_ttl_seconds": 5}, "lease_ttl_seconds"),
        ({"gold_min_accuracy": 1.5}, "gold_min_accuracy"),
        ({"training_config": {"reward": {"epochs": "two"}}}, "training_config"),
        ({"training_config": {"rewrad": {}}}, "training_config"),
        ({"name": ""}, "name"),
        ({"status": "active"}, "status"),
        ({"kl_budget": -1}, "kl_budget"),
        ({"kl_budget": 0}, "kl_budget"),
        ({"kl_budget": 5000}, "kl_budget"),
        ({"training_config": {"dpo": {"kl_budget": -2.0}}}, "training_config"),
    ],
)
def test_campaign_edit_with_bad_input_is_a_400_that_names_the_field_and_writes_nothing(
    campaign_admin_client, body, field
):
    campaign = CampaignFactory(instructions="old")
    before = Campaign.objects.filter(pk=campaign.pk).values().get()
    answer = campaign_admin_client.patch(f"/api/campaigns/{campaign.pk}/", {"instructions": "new", **body}, format="json")
    assert answer.status_code == 400
    assert field in str(answer.data)
    assert Campaign.objects.filter(pk=campaign.pk).values().get() == before


def test_kl_budget_is_set_cleared_and_shown(campaign_admin_client):
    campaign = CampaignFactory()
    answer = campaign_admin_client.patch(f"/api/campaigns/{campaign.pk}/", {"kl_budget": 8.5}, format="json")
    assert answer.status_code == 200 and answer.data["kl_budget"] == 8.5
    campaign.refresh_from_db()
    assert campaign.kl_budget == 8.5
    answer = campaign_admin_client.patch(f"/api/campaigns/{campaign.pk}/", {"kl_budget": None}, format="json")
    assert answer.status_code == 200 and answer.data["kl_budget"] is None
    created = campaign_admin_client.post("/api/campaigns/create/", {"name": "kl", "base_model": "m", "kl_budget": 3},
                                         format="json")
    assert created.status_code == 201 and Campaign.objects.get(pk=created.data["id"]).kl_budget == 3.0


def test_campaign_edit_reports_every_bad_field_at_once(campaign_admin_client):
    campaign = CampaignFactory()
    answer = campaign_admin_client.patch(
        f"/api/campaigns/{campaign.pk}/", {"overlap": 99, "gold_frequency": -1}, format="json"
    )
    assert answer.status_code == 400
    assert set(answer.data["errors"]) == {"overlap", "gold_frequency"}


def test_campaign_name_must_stay_unique(campaign_admin_client):
    CampaignFactory(name="taken")
    campaign = CampaignFactory()
    answer = campaign_admin_client.patch(f"/api/campaigns/{campaign.pk}/", {"name": "taken"}, format="json")
    assert answer.status_code == 400 and "already exists" in answer.data["errors"]["name"]


def test_base_model_is_locked_once_the_campaign_has_started(campaign_admin_client):
    campaign = CampaignFactory(status=Campaign.Status.ACTIVE, base_model="first/model")
    answer = campaign_admin_client.patch(f"/api/campaigns/{campaign.pk}/", {"base_model": "second/model"}, format="json")
    assert answer.status_code == 400 and "base_model" in answer.data["errors"]
    campaign.refresh_from_db()
    assert campaign.base_model == "first/model"
    # the same value again is not a change
    same = campaign_admin_client.patch(f"/api/campaigns/{campaign.pk}/", {"base_model": "first/model"}, format="json")
    assert same.status_code == 200


def test_base_model_is_locked_by_a_queued_bootstrap_run_even_in_draft(campaign_admin_client):
    campaign = CampaignFactory(status=Campaign.Status.DRAFT)
    TrainingRun.objects.create(campaign=campaign, kind=TrainingRun.Kind.BOOTSTRAP)
    answer = campaign_admin_client.patch(f"/api/campaigns/{campaign.pk}/", {"base_model": "x/y"}, format="json")
    assert answer.status_code == 400


def test_engineer_and_annotator_cannot_edit(ml_engineer_client, annotator_client):
    campaign = CampaignFactory(instructions="old")
    for client in (ml_engineer_client, annotator_client):
        assert client.patch(f"/api/campaigns/{campaign.pk}/", {"instructions": "x"}, format="json").status_code == 403
        assert client.post(f"/api/campaigns/{campaign.pk}/pause/").status_code == 403
    campaign.refresh_from_db()
    assert (campaign.instructions, campaign.status) == ("old", Campaign.Status.ACTIVE)


def test_create_api_takes_gold_settings(campaign_admin_client):
    answer = campaign_admin_client.post(
        "/api/campaigns/create/", {"name": "g", "base_model": "m", "gold_frequency": 0.25, "gold_min_count": 8},
        format="json",
    )
    assert answer.status_code == 201
    assert (answer.data["gold_frequency"], answer.data["gold_min_count"]) == (0.25, 8)


# --- pause, resume, archive -------------------------------------------------------------


def test_a_paused_campaign_gives_no_work_and_says_so_until_resumed(annotator, campaign_admin_client, api_client_for):
    round_ = open_round(prompts=2, annotators=[annotator])
    me = api_client_for(annotator)
    assert campaign_admin_client.post(f"/api/campaigns/{round_.campaign_id}/pause/").data["status"] == "paused"
    answer = me.post(next_url(round_.campaign_id))
    assert answer.status_code == 409
    assert answer.data["error"] == "campaign_paused" and "paused" in answer.data["detail"]
    assert not Lease.objects.exists()
    assert campaign_admin_client.post(f"/api/campaigns/{round_.campaign_id}/resume/").data["status"] == "active"
    assert me.post(next_url(round_.campaign_id)).status_code == 200


def test_a_lease_held_when_the_campaign_is_paused_can_still_be_rated(annotator, campaign_admin_client, api_client_for):
    import uuid

    round_ = open_round(prompts=2, annotators=[annotator])
    me = api_client_for(annotator)
    comparison = me.post(next_url(round_.campaign_id)).data["comparison"]
    campaign_admin_client.post(f"/api/campaigns/{round_.campaign_id}/pause/")
    rated = me.post("/api/ratings/", {"comparison": comparison, "choice": "tie", "idempotency_key": str(uuid.uuid4())},
                    format="json")
    assert rated.status_code == 201


def test_archive_gives_no_work_releases_leases_and_keeps_the_data(annotator, other_annotator, campaign_admin_client,
                                                                   api_client_for):
    round_ = open_round(prompts=3, annotators=[annotator, other_annotator])
    ratings_bulk_create([{"comparison_id": round_.comparisons.first().pk, "annotator": other_annotator, "choice": "tie"}])
    me = api_client_for(annotator)
    assert me.post(next_url(round_.campaign_id)).status_code == 200
    answer = campaign_admin_client.post(f"/api/campaigns/{round_.campaign_id}/archive/")
    assert answer.status_code == 200 and answer.data["status"] == "archived"
    assert not Lease.objects.filter(status=Lease.Status.LEASED).exists()
    refused = me.post(next_url(round_.campaign_id))
    assert (refused.status_code, refused.data["error"]) == (409, "campaign_archived")
    assert Rating.objects.count() == 1
    # archived for good: no resume, no edits
    assert campaign_admin_client.post(f"/api/campaigns/{round_.campaign_id}/resume/").status_code == 409
    assert campaign_admin_client.patch(f"/api/campaigns/{round_.campaign_id}/", {"overlap": 3}, format="json").status_code == 409


def test_only_an_active_campaign_pauses_and_only_a_paused_one_resumes(campaign_admin_client):
    draft = CampaignFactory(status=Campaign.Status.DRAFT)
    assert campaign_admin_client.post(f"/api/campaigns/{draft.pk}/pause/").status_code == 409
    assert campaign_admin_client.post(f"/api/campaigns/{draft.pk}/resume/").status_code == 409
    draft.refresh_from_db()
    assert draft.status == Campaign.Status.DRAFT


# --- console pages --------------------------------------------------------------------------


@pytest.fixture
def admin_browser_client(client, campaign_admin):
    client.force_login(campaign_admin)
    return client


def test_console_needs_an_admin_or_engineer(client, annotator, ml_engineer):
    assert client.get("/console/").status_code == 302  # to the login page
    client.force_login(annotator)
    assert client.get("/console/").status_code == 403
    client.force_login(ml_engineer)
    page = client.get("/console/")
    assert page.status_code == 200 and b"New campaign" not in page.content  # engineers look
    assert client.post("/console/campaigns/new/", {"name": "x", "base_model": "m"}).status_code == 403
    assert not Campaign.objects.exists()


def test_console_creates_a_campaign_from_the_form(admin_browser_client, campaign_admin):
    answer = admin_browser_client.post(
        "/console/campaigns/new/",
        {"name": "Helpfulness", "instructions": "# Rate\n", "overlap": "3", "comparisons_per_round": "32",
         "lease_ttl_seconds": "600", "gold_frequency": "0.1", "gold_min_accuracy": "0.7", "gold_min_count": "5",
         "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "training_config": '{"reward": {"epochs": 1}}',
         "auto_train": "on", "kl_budget": "12"},
    )
    campaign = Campaign.objects.get()
    assert campaign.kl_budget == 12.0
    # the form shows it back, and an empty field clears it
    assert 'name="kl_budget" type="number" step="any" min="0" value="12.0"' in admin_browser_client.get(
        f"/console/campaigns/{campaign.pk}/").content.decode()
    cleared = admin_browser_client.post(
        f"/console/campaigns/{campaign.pk}/",
        {"name": "Helpfulness", "overlap": "3", "comparisons_per_round": "32", "lease_ttl_seconds": "600",
         "gold_frequency": "0.1", "gold_min_accuracy": "0.7", "gold_min_count": "5", "training_config": "{}",
         "base_model": campaign.base_model, "auto_train": "on", "kl_budget": ""},
    )
    assert cleared.status_code == 302, [line for line in cleared.content.decode().splitlines() if 'class="error"' in line]
    campaign.refresh_from_db()
    assert campaign.kl_budget is None
    assert answer.status_code == 302 and answer["Location"] == f"/console/campaigns/{campaign.pk}/"
    assert (campaign.comparisons_per_round, campaign.gold_min_accuracy, campaign.created_by) == (32, 0.7, campaign_admin)
    assert campaign.status == Campaign.Status.DRAFT and campaign.auto_train


def test_console_form_errors_show_next_to_each_field_and_write_nothing(admin_browser_client):
    campaign = CampaignFactory(name="keep", overlap=2)
    answer = admin_browser_client.post(
        f"/console/campaigns/{campaign.pk}/",
        {"name": "renamed", "overlap": "zero", "comparisons_per_round": "64", "lease_ttl_seconds": "10",
         "gold_frequency": "0.1", "gold_min_accuracy": "0.6", "gold_min_count": "5", "training_config": '{"reward": '},
    )
    assert answer.status_code == 400
    html = answer.content.decode()
    assert 'id="err-overlap"' in html and 'id="err-training_config"' in html and "not valid JSON" in html
    # the JSON error is found before the service runs, the others with it: show them all
    answer = admin_browser_client.post(
        f"/console/campaigns/{campaign.pk}/",
        {"name": "renamed", "overlap": "zero", "comparisons_per_round": "64", "lease_ttl_seconds": "10",
         "gold_frequency": "0.1", "gold_min_accuracy": "0.6", "gold_min_count": "5", "training_config": "{}",
         "kl_budget": "lots"},
    )
    html = answer.content.decode()
    assert 'id="err-overlap"' in html and 'id="err-lease_ttl_seconds"' in html and 'id="err-kl_budget"' in html
    assert 'value="renamed"' in html  # what was typed stays in the form
    campaign.refresh_from_db()
    assert (campaign.name, campaign.overlap) == ("keep", 2)


def test_console_pause_resume_archive_buttons(admin_browser_client):
    campaign = CampaignFactory()
    for action, status in [("pause", "paused"), ("resume", "active"), ("archive", "archived")]:
        assert admin_browser_client.post(f"/console/campaigns/{campaign.pk}/{action}/").status_code == 302
        campaign.refresh_from_db()
        assert campaign.status == status
    page = admin_browser_client.get(f"/console/campaigns/{campaign.pk}/")
    assert b"Campaign archived." in page.content


def test_console_overview_shows_round_progress_and_training_runs(admin_browser_client, annotator):
    round_ = open_round(prompts=4, overlap=2, annotators=[annotator])
    ratings_bulk_create([{"comparison_id": c.pk, "annotator": annotator, "choice": "tie"} for c in round_.comparisons.all()[:3]])
    TrainingRun.objects.create(campaign=round_.campaign, round=round_, kind=TrainingRun.Kind.TRAIN, status="failed",
                               error="CUDA out of memory")
    html = admin_browser_client.get(f"/console/campaigns/{round_.campaign_id}/").content.decode()
    assert "3 of 8 ratings" in html and "CUDA out of memory" in html
    assert 'id="id_base_model"' in html and "readonly" in html.split('id="id_base_model"')[1].split(">")[0]


def _many_campaigns(n_campaigns: int, annotators) -> None:
    for i in range(n_campaigns):
        round_ = open_round(prompts=3, overlap=3, annotators=annotators)
        ratings_bulk_create(
            {"comparison_id": c.pk, "annotator": a, "choice": "tie"} for c in round_.comparisons.all() for a in annotators
        )


@pytest.mark.parametrize("n_campaigns", [1, 12])
def test_console_campaigns_list_query_count_is_pinned(admin_browser_client, make_user, n_campaigns,
                                                     django_assert_max_num_queries):
    annotators = [make_user(Role.ANNOTATOR) for _ in range(3)]
    _many_campaigns(n_campaigns, annotators)
    with django_assert_max_num_queries(CONSOLE_LIST_QUERIES):
        page = admin_browser_client.get("/console/")
    assert page.status_code == 200
    assert page.content.decode().count("/pool/\">3</a>") == n_campaigns


@pytest.mark.parametrize("n_runs", [1, 30])
def test_console_overview_query_count_is_pinned(admin_browser_client, annotator, n_runs, django_assert_max_num_queries):
    round_ = open_round(prompts=3, annotators=[annotator])
    TrainingRun.objects.bulk_create(
        TrainingRun(campaign=round_.campaign, kind=TrainingRun.Kind.BOOTSTRAP, status="failed") for _ in range(n_runs)
    )
    with django_assert_max_num_queries(CONSOLE_OVERVIEW_QUERIES):
        assert admin_browser_client.get(f"/console/campaigns/{round_.campaign_id}/").status_code == 200
