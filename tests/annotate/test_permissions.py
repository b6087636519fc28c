"""Who may call what (docs/architecture.md: three kinds of user; invariant 7), and
which campaigns a campaign admin manages: only those they administer.
tests/annotate/test_access_walk.py walks every operation of the schema.
One file, past 450 lines, because its list of every API route (EVERY_API)
and the refusals checked against it read best side by side."""
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from annotate.models import Campaign, Prompt, Role, TrainingRun
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
    ("post", "/api/campaigns/1/comparisons/"),
    ("patch", "/api/campaigns/1/"),
    ("post", "/api/campaigns/1/pause/"),
    ("post", "/api/campaigns/1/resume/"),
    ("post", "/api/campaigns/1/archive/"),
    ("get", "/api/campaigns/1/members/"),
    ("post", "/api/campaigns/1/members/"),
    ("patch", "/api/campaigns/1/members/ann/"),
    ("post", "/api/users/"),
    ("get", "/api/campaigns/1/admins/"),
    ("post", "/api/campaigns/1/admins/"),
    ("delete", "/api/campaigns/1/admins/admin/"),
    ("post", "/api/campaigns/1/train/"),
    ("get", "/api/campaigns/1/models/"),
    ("get", "/api/training-runs/"),
    ("get", "/api/training-runs/1/"),
    ("post", "/api/training-runs/1/cancel/"),
    ("get", "/api/training-runs/1/dataset/"),
    ("get", "/api/policy-versions/1/download/"),
    ("get", "/api/reward-versions/1/download/"),
    ("get", "/api/sft-versions/1/download/"),
    ("get", "/api/training-runs/1/sft-dataset/"),
    ("get", "/api/campaigns/1/demonstrations/"),
    ("post", "/api/campaigns/1/demonstrations/1/review/"),
    ("get", "/api/campaigns/1/quality/"),
    ("get", "/api/campaigns/1/rounds/"),
    ("get", "/api/campaigns/1/rounds/0/comparisons/"),
    ("get", "/api/campaigns/1/leaderboard/"),
    ("post", "/api/campaigns/1/exports/"),
    ("get", "/api/exports/1/download/"),
    ("get", "/api/campaigns/1/exports/"),
    ("post", "/api/campaigns/1/gold/import/"),
    ("post", "/api/campaigns/1/answers/import/"),
    ("get", "/api/campaigns/1/gold/"),
    ("post", "/api/campaigns/1/simulate/"),
    ("get", "/api/campaigns/1/endpoints/"),
    ("post", "/api/campaigns/1/endpoints/"),
    ("get", "/api/endpoints/1/"),
    ("patch", "/api/endpoints/1/"),
    ("delete", "/api/endpoints/1/"),
    ("post", "/api/endpoints/1/generate/"),
    ("get", "/api/campaigns/1/generation-jobs/"),
    ("get", "/api/generation-jobs/1/"),
    ("get", "/api/generation-jobs/1/failures/"),
    ("post", "/api/generation-jobs/1/cancel/"),
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
        ("post", "/api/campaigns/{id}/answers/import/", None),
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


def test_engineer_and_staff_see_every_campaign(open_round, make_user, api_client_for, ml_engineer_client):
    # given: two campaigns nobody here administers
    CampaignFactory()
    staff = api_client_for(make_user(username="root", is_staff=True))
    # then: ML engineers work across campaigns; staff see everything
    for client in (ml_engineer_client, staff):
        assert len(client.get("/api/campaigns/").data) == 2
        assert client.get(f"/api/campaigns/{open_round.campaign_id}/").status_code == 200


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


# --- campaign admins manage only the campaigns they administer -----------------------


@pytest.fixture
def theirs(other_campaign_admin):
    """A campaign administered by other_campaign_admin only."""
    campaign = CampaignFactory(name="theirs")
    campaign.admins.add(other_campaign_admin)
    return campaign


def test_the_creator_of_a_campaign_administers_it_and_no_other_admin_sees_it(
    make_user, api_client_for, other_campaign_admin
):
    # given
    creator = api_client_for(make_user(Role.CAMPAIGN_ADMIN, username="creator"))
    other = api_client_for(other_campaign_admin)
    # when
    created = creator.post("/api/campaigns/create/", {"name": "mine", "base_model": "m"}, format="json")
    # then
    campaign = Campaign.objects.get(pk=created.data["id"])
    assert list(campaign.admins.values_list("username", flat=True)) == ["creator"]
    assert [c["id"] for c in creator.get("/api/campaigns/").data] == [campaign.pk]
    assert other.get("/api/campaigns/").data == []
    assert other.get(f"/api/campaigns/{campaign.pk}/").status_code == 404


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("get", "/api/campaigns/{id}/", None),
        ("patch", "/api/campaigns/{id}/", {"instructions": "mine now"}),
        ("post", "/api/campaigns/{id}/pause/", None),
        ("post", "/api/campaigns/{id}/archive/", None),
        ("post", "/api/campaigns/{id}/annotators/", {"usernames": ["ann"]}),
        ("get", "/api/campaigns/{id}/members/", None),
        ("get", "/api/campaigns/{id}/quality/", None),
        ("get", "/api/campaigns/{id}/rounds/", None),
        ("get", "/api/campaigns/{id}/rounds/0/comparisons/", None),
        ("get", "/api/campaigns/{id}/exports/", None),
        ("post", "/api/campaigns/{id}/exports/", {"kind": "ratings"}),
        ("post", "/api/campaigns/{id}/start/", None),
        ("get", "/api/campaigns/{id}/models/", None),
        ("get", "/api/campaigns/{id}/admins/", None),
    ],
)
def test_an_admin_gets_404_for_a_campaign_they_do_not_administer(
    theirs, annotator, campaign_admin_client, method, path, body
):
    # given: campaign_admin administers every campaign but `theirs`
    theirs.admins.remove(campaign_admin_client.user)
    before = (theirs.status, theirs.instructions, theirs.memberships.count(), theirs.exports.count())
    # when
    answer = getattr(campaign_admin_client, method)(path.format(id=theirs.pk), body, format="json")
    # then: as for a campaign that does not exist, and nothing changed
    assert answer.status_code == 404
    theirs.refresh_from_db()
    assert (theirs.status, theirs.instructions, theirs.memberships.count(), theirs.exports.count()) == before


def test_an_admin_lists_only_their_campaigns_and_their_runs(open_round, theirs, other_campaign_admin, api_client_for):
    # given: a run in each campaign
    mine = TrainingRun.objects.create(campaign=theirs, kind=TrainingRun.Kind.BOOTSTRAP)
    TrainingRun.objects.create(campaign=open_round.campaign, kind=TrainingRun.Kind.BOOTSTRAP)
    client = api_client_for(other_campaign_admin)
    # then
    assert [c["id"] for c in client.get("/api/campaigns/").data] == [theirs.pk]
    assert [r["id"] for r in client.get("/api/training-runs/").data] == [mine.pk]
    assert client.get(f"/api/training-runs/?campaign={open_round.campaign_id}").data == []


def test_staff_add_and_remove_campaign_admins(theirs, make_user, api_client_for, other_campaign_admin):
    # given
    staff = api_client_for(make_user(username="root", is_staff=True))
    newcomer = make_user(username="newcomer")  # no role yet
    newcomer_client = api_client_for(newcomer)
    # when: staff make them an admin of `theirs`
    added = staff.post(f"/api/campaigns/{theirs.pk}/admins/", {"usernames": ["newcomer"]}, format="json")
    # then: they have the role and the campaign
    assert added.status_code == 200
    assert [a["username"] for a in added.data] == ["admin-other", "newcomer"]
    assert Role.CAMPAIGN_ADMIN in set(newcomer.groups.values_list("name", flat=True))
    assert newcomer_client.get(f"/api/campaigns/{theirs.pk}/").status_code == 200
    # when: staff take them off again
    removed = staff.delete(f"/api/campaigns/{theirs.pk}/admins/newcomer/")
    # then: the campaign is a 404 to them, as if it did not exist
    assert removed.status_code == 204
    assert newcomer_client.get(f"/api/campaigns/{theirs.pk}/").status_code == 404
    assert staff.delete(f"/api/campaigns/{theirs.pk}/admins/newcomer/").status_code == 404


def test_only_staff_choose_campaign_admins(theirs, other_campaign_admin, make_user, api_client_for):
    make_user(username="friend")
    client = api_client_for(other_campaign_admin)
    # an admin of the campaign may see who administers it, not change it
    assert [a["username"] for a in client.get(f"/api/campaigns/{theirs.pk}/admins/").data] == ["admin-other"]
    assert client.post(f"/api/campaigns/{theirs.pk}/admins/", {"usernames": ["friend"]}, format="json").status_code == 403
    assert client.delete(f"/api/campaigns/{theirs.pk}/admins/admin-other/").status_code == 403
    assert list(theirs.admins.values_list("username", flat=True)) == ["admin-other"]


def test_adding_an_unknown_admin_names_them_and_adds_nobody(theirs, make_user, api_client_for):
    make_user(username="known")
    staff = api_client_for(make_user(username="root", is_staff=True))
    answer = staff.post(f"/api/campaigns/{theirs.pk}/admins/", {"usernames": ["known", "ghost"]}, format="json")
    assert answer.status_code == 400 and "'ghost'" in answer.data["detail"]
    assert theirs.admins.count() == 1


def test_console_hides_other_campaigns_from_an_admin(client, theirs, open_round, other_campaign_admin):
    # given: other_campaign_admin administers `theirs` only
    client.force_login(other_campaign_admin)
    mine = open_round.campaign
    # then: the list shows theirs only; every page of the other campaign is a 404
    listing = client.get("/console/").content.decode()
    assert "theirs" in listing and mine.name not in listing
    for page in ("", "pool/", "prompts/", "gold/", "quality/", "models/", "exports/", "runs/", "lineage/", "compare/"):
        assert client.get(f"/console/campaigns/{mine.pk}/{page}").status_code == 404, page
        assert client.get(f"/console/campaigns/{theirs.pk}/{page}").status_code == 200, page
    run = TrainingRun.objects.create(campaign=mine, kind=TrainingRun.Kind.BOOTSTRAP)
    assert client.get(f"/console/runs/{run.pk}/").status_code == 404
    assert client.post(f"/console/campaigns/{mine.pk}/pause/").status_code == 404
    mine.refresh_from_db()
    assert mine.status == Campaign.Status.ACTIVE


def test_console_an_admin_who_is_an_engineer_reads_every_campaign_but_edits_their_own(client, theirs, open_round, make_user):
    # given: an admin and engineer who administers `theirs` only
    user = make_user(Role.CAMPAIGN_ADMIN, Role.ML_ENGINEER, username="both")
    theirs.admins.add(user)
    client.force_login(user)
    mine = open_round.campaign
    # then: they read the other campaign, without the controls, and may not change it
    page = client.get(f"/console/campaigns/{mine.pk}/pool/")
    assert page.status_code == 200 and "Add to the pool" not in page.content.decode()
    assert "Add to the pool" in client.get(f"/console/campaigns/{theirs.pk}/pool/").content.decode()
    assert client.post(f"/console/campaigns/{mine.pk}/pause/").status_code == 403
    assert client.post(f"/console/campaigns/{theirs.pk}/pause/").status_code == 302


def test_console_staff_choose_admins_on_the_pool_page(client, theirs, make_user, other_campaign_admin):
    # given
    staff = make_user(username="root", is_staff=True)
    make_user(username="newcomer")
    client.force_login(staff)
    # when: the staff member adds an admin, then removes the old one
    page = client.get(f"/console/campaigns/{theirs.pk}/pool/").content.decode()
    assert "Add admins" in page and 'data-admin="admin-other"' in page
    added = client.post(f"/console/campaigns/{theirs.pk}/admins/add/", {"usernames": "newcomer"})
    removed = client.post(f"/console/campaigns/{theirs.pk}/admins/admin-other/remove/")
    # then
    assert added.status_code == removed.status_code == 302
    assert list(theirs.admins.values_list("username", flat=True)) == ["newcomer"]
    # an unknown name is shown next to the field, nothing added
    bad = client.post(f"/console/campaigns/{theirs.pk}/admins/add/", {"usernames": "ghost"})
    assert bad.status_code == 400 and "unknown: ghost" in bad.content.decode()


def test_console_an_admin_cannot_choose_admins(client, theirs, other_campaign_admin, make_user):
    make_user(username="friend")
    client.force_login(other_campaign_admin)
    page = client.get(f"/console/campaigns/{theirs.pk}/pool/").content.decode()
    assert 'data-admin="admin-other"' in page and "Add admins" not in page
    assert client.post(f"/console/campaigns/{theirs.pk}/admins/add/", {"usernames": "friend"}).status_code == 403
    assert list(theirs.admins.values_list("username", flat=True)) == ["admin-other"]


def test_ratchet_user_makes_a_campaign_admin(theirs, capsys):
    # when
    call_command("ratchet_user", "carol", "--password", "pw-carol-123", "--campaign-admin", "theirs")
    # then: the role and the campaign, by name or id
    assert list(theirs.admins.order_by("username").values_list("username", flat=True)) == ["admin-other", "carol"]
    carol = theirs.admins.get(username="carol")
    assert set(carol.groups.values_list("name", flat=True)) == {Role.CAMPAIGN_ADMIN}
    other = CampaignFactory(name="second")
    call_command("ratchet_user", "carol", "--password", "pw-carol-123", "--campaign-admin", str(other.pk))
    assert other.admins.filter(username="carol").exists()


def test_ratchet_user_refuses_an_unknown_campaign(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No campaign 'nope'"):
        call_command("ratchet_user", "carol", "--password", "pw", "--campaign-admin", "nope")
    assert not Campaign.objects.exists()


def test_ratchet_user_staff_can_log_in_to_the_django_admin(db):
    from django.test import Client

    # when: a new staff user
    call_command("ratchet_user", "root", "--password", "pw-root-123", "--staff")
    # then: the admin's login form lets them in and its index lists the models
    client = Client()
    answer = client.post("/admin/login/?next=/admin/", {"username": "root", "password": "pw-root-123"}, follow=True)
    assert answer.status_code == 200 and answer.redirect_chain[-1][0] == "/admin/"
    assert "Campaigns" in answer.content.decode()
    # an update without the flag keeps it; --no-staff takes it away and the admin refuses them
    call_command("ratchet_user", "root", "--password", "pw-root-456", "--role", "annotator")
    assert get_user_model().objects.get(username="root").is_staff
    call_command("ratchet_user", "root", "--password", "pw-root-456", "--no-staff")
    root = get_user_model().objects.get(username="root")
    assert not root.is_staff and not root.is_superuser
    refused = Client().post("/admin/login/?next=/admin/", {"username": "root", "password": "pw-root-456"})
    assert refused.status_code == 200 and "staff account" in refused.content.decode()


def test_ratchet_user_without_staff_cannot_use_the_django_admin(db):
    from django.test import Client

    call_command("ratchet_user", "plain", "--password", "pw-plain-123", "--role", "ml_engineer")
    answer = Client().post("/admin/login/?next=/admin/", {"username": "plain", "password": "pw-plain-123"})
    assert answer.status_code == 200 and "staff account" in answer.content.decode()


def test_existing_campaigns_are_administered_by_their_creator_after_the_migration(make_user):
    # given: a campaign from before campaign admins were per campaign
    from importlib import import_module

    from django.apps import apps

    creator = make_user(Role.CAMPAIGN_ADMIN, username="old-creator")
    old = CampaignFactory(created_by=creator)
    orphan = CampaignFactory(created_by=None)
    migration = import_module("annotate.migrations.0009_campaign_admins")
    # when
    migration.creators_become_admins(apps, None)
    # then
    assert list(old.admins.all()) == [creator]
    assert not orphan.admins.exists()


def test_the_demo_admin_administers_the_demo_campaign(db, enqueued):
    from annotate.services.demo import DEMO_USERS, demo_campaign_create, demo_users_create

    demo_users_create()
    campaign = demo_campaign_create(base_model="fake/base", admin_username=DEMO_USERS["admin"][0])
    assert list(campaign.admins.values_list("username", flat=True)) == [DEMO_USERS["admin"][0]]
