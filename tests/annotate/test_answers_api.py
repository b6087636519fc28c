"""Imported answers through the API (its access, the answer per model, the
error shape), the models list without keys, and the console's answers
page. The service's rules are in test_answer_imports.py."""
import pytest

from annotate.models import Answer, ExternalModel
from annotate.services.answers import answers_import
from tests.annotate.test_answer_imports import TWO_MODELS, jsonl, written
from tests.factories import CampaignFactory, PromptFactory

pytestmark = pytest.mark.django_db


# --- the API -------------------------------------------------------------------------


def post(client, campaign, body: bytes, content_type="application/x-ndjson", query=""):
    return client.post(f"/api/campaigns/{campaign.pk}/answers/import/{query}", body, content_type=content_type)


def test_api_imports_answers_and_says_what_it_did_per_model(campaign_admin_client):
    campaign = CampaignFactory()
    PromptFactory(campaign=campaign, external_id="q1")
    body = TWO_MODELS.replace(b'"external_id": "q2"', b'"external_id": "q2", "prompt": "New?"')
    answer = post(campaign_admin_client, campaign, body)
    assert answer.status_code == 200, answer.content
    assert answer.json() == {
        "created": 3, "existing": 0, "lines": 3, "prompts_created": 1,
        "models": [
            {"name": "gpt-x", "created": 2, "existing": 0, "new": True},
            {"name": "llama-y", "created": 1, "existing": 0, "new": True},
        ],
    }
    again = post(campaign_admin_client, campaign, body)
    assert (again.data["created"], again.data["existing"], again.data["prompts_created"]) == (0, 3, 0)


def test_api_dry_run_and_csv_by_content_type_write_nothing(campaign_admin_client):
    campaign = CampaignFactory()
    body = b"prompt,model,response\nWhy?,m,Because.\nHow?,m,Like so.\n"
    answer = post(campaign_admin_client, campaign, body, content_type="text/csv", query="?dry_run=1")
    assert answer.status_code == 200, answer.content
    assert (answer.data["created"], answer.data["prompts_created"], answer.data["models"][0]["new"]) == (2, 2, True)
    assert written(campaign) == (0, 0, 0)


def test_api_multipart_upload_takes_the_format_from_the_file_name(campaign_admin_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    campaign = CampaignFactory()
    upload = SimpleUploadedFile("answers.csv", b"prompt,model,response\nWhy?,m,Because.\n", "application/octet-stream")
    answer = campaign_admin_client.post(f"/api/campaigns/{campaign.pk}/answers/import/", {"file": upload})
    assert answer.status_code == 200, answer.content
    assert written(campaign) == (1, 1, 1)


def test_api_names_bad_lines_with_the_error_shape(campaign_admin_client):
    campaign = CampaignFactory()
    body = b'{"prompt": "ok", "model": "m", "response": "r"}\n{"prompt": "ok", "model": "m"}\n'
    answer = post(campaign_admin_client, campaign, body)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid" and "Line 2" in answer.json()["detail"]
    assert [e["line"] for e in answer.json()["errors"]] == [2]
    assert written(campaign) == (0, 0, 0)


@pytest.mark.parametrize(
    "who, status", [("annotator", 403), ("ml_engineer", 403), ("other_campaign_admin", 404), ("campaign_admin", 200)]
)
def test_only_the_campaigns_admins_may_import_answers(request, api_client_for, who, status):
    # given: the campaign administered by campaign_admin (the fixture makes
    # every campaign theirs), and not by other_campaign_admin
    admin = request.getfixturevalue("campaign_admin")
    user = admin if who == "campaign_admin" else request.getfixturevalue(who)
    campaign = CampaignFactory()
    campaign.admins.set([admin])
    answer = post(api_client_for(user), campaign, jsonl({"prompt": "q", "model": "m", "response": "r"}))
    assert answer.status_code == status, answer.content
    assert written(campaign) == ((1, 1, 1) if status == 200 else (0, 0, 0))


def test_models_api_lists_external_models_with_answer_counts_and_never_a_key(ml_engineer_client, campaign_admin_client):
    campaign = CampaignFactory()
    answers_import(campaign=campaign, data=TWO_MODELS.replace(b'"external_id": "q1"', b'"prompt": "a"').replace(
        b'"external_id": "q2"', b'"prompt": "b"'))
    ExternalModel.objects.create(
        campaign=campaign, name="served", kind=ExternalModel.Kind.ENDPOINT, base_url="http://llm:8000/v1",
        api_key="sk-never-shown",
    )
    ExternalModel.objects.create(campaign=campaign, name="keyless", kind=ExternalModel.Kind.ENDPOINT)
    for client in (ml_engineer_client, campaign_admin_client):
        answer = client.get(f"/api/campaigns/{campaign.pk}/models/")
        assert answer.status_code == 200
        assert "sk-never-shown" not in answer.content.decode()
        listed = {m["name"]: (m["kind"], m["answers"], m["has_api_key"]) for m in answer.json()["external_models"]}
        assert listed == {
            "gpt-x": ("imported", 2, False), "llama-y": ("imported", 1, False),
            "served": ("endpoint", 0, True), "keyless": ("endpoint", 0, False),
        }
        assert set(answer.json()["external_models"][0]) == {"id", "name", "kind", "answers", "has_api_key", "created_at"}


# --- the console page ----------------------------------------------------------------


def test_console_answers_page_checks_then_imports_and_lists_models(client, campaign_admin):
    from django.core.files.uploadedfile import SimpleUploadedFile

    campaign = CampaignFactory()
    client.force_login(campaign_admin)
    url = f"/console/campaigns/{campaign.pk}/answers/"
    assert b'href="/console/campaigns/%d/answers/"' % campaign.pk in client.get(url).content
    bad = SimpleUploadedFile("a.csv", b"prompt,model,response\nWhy?,m,Because.\nHow?,m,\n")
    checked = client.post(url, {"file": bad, "action": "check"})
    assert checked.status_code == 400
    assert b"<td>3</td>" in checked.content and written(campaign) == (0, 0, 0)
    good = SimpleUploadedFile("a.csv", b"prompt,model,response\nWhy?,m,Because.\nHow?,m,Like so.\n")
    dry = client.post(url, {"file": good, "action": "check"})
    assert dry.status_code == 200 and written(campaign) == (0, 0, 0)
    good.seek(0)
    imported = client.post(url, {"file": good, "action": "import"})
    assert imported.status_code == 200
    assert written(campaign) == (2, 1, 2)
    assert ExternalModel.objects.get(campaign=campaign).created_by == campaign_admin
    page = imported.content.decode()
    assert '<tr data-model="m"><td>m</td><td>2</td><td>0</td><td>yes</td></tr>' in page  # the report
    assert '<td>Imported</td>\n    <td>2</td>' in page  # the models list


def test_console_answers_page_query_count_is_pinned(client, campaign_admin, django_assert_max_num_queries):
    campaign = CampaignFactory()
    prompt = PromptFactory(campaign=campaign)
    for i in range(30):
        model = ExternalModel.objects.create(campaign=campaign, name=f"m{i}", kind=ExternalModel.Kind.IMPORTED)
        Answer.objects.create(prompt=prompt, external_model=model, text="r")
    client.force_login(campaign_admin)
    with django_assert_max_num_queries(8):
        answer = client.get(f"/console/campaigns/{campaign.pk}/answers/")
    assert answer.status_code == 200 and b'data-model="m29"' in answer.content


def test_engineer_sees_the_answers_page_but_cannot_import(client, ml_engineer):
    from django.core.files.uploadedfile import SimpleUploadedFile

    campaign = CampaignFactory()
    client.force_login(ml_engineer)
    url = f"/console/campaigns/{campaign.pk}/answers/"
    page = client.get(url)
    assert page.status_code == 200 and b'name="action"' not in page.content
    upload = SimpleUploadedFile("a.csv", b"prompt,model,response\nWhy?,m,Because.\n")
    assert client.post(url, {"file": upload, "action": "import"}).status_code == 403
    assert written(campaign) == (0, 0, 0)


def test_console_answers_page_counts_the_answers_cut_at_the_token_limit(client, campaign_admin):
    campaign = CampaignFactory()
    prompt = PromptFactory(campaign=campaign)
    model = ExternalModel.objects.create(campaign=campaign, name="cutter", kind=ExternalModel.Kind.ENDPOINT)
    for i, metadata in enumerate([{"truncated": True}, {"truncated": False}, {}, {"truncated": True}]):
        Answer.objects.create(prompt=prompt, external_model=model, sample_index=i, text="r", metadata=metadata)
    client.force_login(campaign_admin)
    page = client.get(f"/console/campaigns/{campaign.pk}/answers/").content.decode()
    assert "<th scope=\"col\">Cut at the token limit</th>" in page
    row = page.split('<tr data-model="cutter">')[1].split("</tr>")[0]
    assert "<td>4</td>" in row and '<td class="truncated-count">2</td>' in row
