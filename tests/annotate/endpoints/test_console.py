"""The console's endpoint pages through Django's test client: who sees what,
the key written through the forms and never on a page. The live parts run
in Chromium (tests/browser/test_console_endpoints.py)."""
import pytest
from django.test import Client

from annotate.models import ExternalModel, GenerationFailure, GenerationJob
from annotate.services.endpoints import endpoint_create
from tests.factories import CampaignFactory, PromptFactory

pytestmark = pytest.mark.django_db

KEY = "sk-console-test-9f8e7d6c5b4a"


@pytest.fixture
def campaign():
    campaign = CampaignFactory(name="Console endpoints")
    for i in range(2):
        PromptFactory(campaign=campaign, external_id=f"q{i}")
    return campaign


@pytest.fixture
def endpoint(campaign):
    return endpoint_create(campaign=campaign, user=None, name="vllm", base_url="http://127.0.0.1:8000/v1",
                           model_name="m", api_key=KEY)


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


FORM = {"name": "tgi", "base_url": "http://10.0.0.8:8080/v1", "model_name": "mistral", "generation": '{"max_tokens": 64}',
        "max_concurrency": "2", "timeout_s": "30", "api_key": KEY}


def test_an_engineer_adds_an_endpoint_and_no_page_shows_its_key(ml_engineer, campaign):
    client = logged_in(ml_engineer)
    answer = client.post(f"/console/campaigns/{campaign.pk}/endpoints/", FORM)
    assert answer.status_code == 302
    endpoint = ExternalModel.objects.get(name="tgi")
    assert (endpoint.api_key, endpoint.generation, endpoint.max_concurrency) == (KEY, {"max_tokens": 64}, 2)
    for url in (f"/console/campaigns/{campaign.pk}/endpoints/", f"/console/endpoints/{endpoint.pk}/"):
        page = client.get(url).content.decode()
        assert "tgi" in page and KEY not in page
    assert 'class="key-state">set<' in client.get(f"/console/campaigns/{campaign.pk}/endpoints/").content.decode()


def test_the_edit_form_keeps_replaces_or_clears_the_key(ml_engineer, endpoint):
    client = logged_in(ml_engineer)
    url = f"/console/endpoints/{endpoint.pk}/"
    fields = {**FORM, "name": "vllm", "base_url": endpoint.base_url, "api_key": ""}

    def save(**extra):
        answer = client.post(url, {**fields, **extra})
        assert answer.status_code == 302, answer.content.decode()[:500]
        endpoint.refresh_from_db()
        return endpoint.api_key

    assert save(key_action="keep", timeout_s="45") == KEY and endpoint.timeout_s == 45
    assert save(key_action="replace", api_key="sk-replaced") == "sk-replaced"
    assert save(key_action="clear") == ""
    # replace with nothing typed is refused, and the key stays as it was
    answer = client.post(url, {**fields, "key_action": "replace"})
    assert answer.status_code == 400 and "Type the new key" in answer.content.decode()


def test_bad_input_is_shown_on_the_form_and_nothing_is_saved(ml_engineer, campaign):
    client = logged_in(ml_engineer)
    answer = client.post(f"/console/campaigns/{campaign.pk}/endpoints/",
                         {**FORM, "base_url": "http://169.254.169.254/latest/"})
    assert answer.status_code == 400 and "cloud metadata address" in answer.content.decode()
    assert KEY not in answer.content.decode()  # not even the typed key is sent back
    bad_json = client.post(f"/console/campaigns/{campaign.pk}/endpoints/", {**FORM, "generation": "{max"})
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.content.decode()
    assert not ExternalModel.objects.exists()


def test_a_campaign_admin_sees_endpoints_and_jobs_but_no_controls(campaign_admin, endpoint):
    job = GenerationJob.objects.create(model=endpoint, status=GenerationJob.Status.FAILED, prompts_total=2, answered=1,
                                       failed=1, error="1 of 2 prompts got no answer")
    GenerationFailure.objects.create(job=job, prompt=endpoint.campaign.prompts.first(), attempts=5,
                                     error="HTTP 500 Internal Server Error: out of memory")
    client = logged_in(campaign_admin)
    listing = client.get(f"/console/campaigns/{endpoint.campaign_id}/endpoints/").content.decode()
    assert "vllm" in listing and f"Job {job.pk}" in listing and 'id="endpoint-form"' not in listing
    assert "Generate</button>" not in listing
    detail = client.get(f"/console/generation-jobs/{job.pk}/").content.decode()
    assert "HTTP 500 Internal Server Error: out of memory" in detail and "q0" in detail
    assert client.post(f"/console/endpoints/{endpoint.pk}/generate/").status_code == 403
    assert client.post(f"/console/campaigns/{endpoint.campaign_id}/endpoints/", FORM).status_code == 403
    assert KEY not in listing + detail


def test_generate_queues_a_job_and_shows_it(ml_engineer, endpoint, monkeypatch):
    monkeypatch.setattr("annotate.services.endpoints._send", lambda **kwargs: None)
    client = logged_in(ml_engineer)
    answer = client.post(f"/console/endpoints/{endpoint.pk}/generate/", {"samples": "2", "external_ids": "q1"})
    job = GenerationJob.objects.get()
    assert answer.status_code == 302 and answer["Location"] == f"/console/generation-jobs/{job.pk}/"
    assert (job.samples, job.prompts_total) == (2, 1)
    page = client.get(answer["Location"]).content.decode()
    assert "Cancel job" in page and 'data-live="1"' in page
    again = client.post(f"/console/endpoints/{endpoint.pk}/generate/", {"samples": "1"}, follow=True)
    assert f"Job {job.pk} is queued" in again.content.decode()
