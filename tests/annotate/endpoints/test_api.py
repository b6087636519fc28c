"""The endpoints API: who may save, change, delete and list endpoints and
start, read and cancel jobs; the key written and never read back; bad input
refused with nothing written. No server is asked here (jobs are queued, not
run: test_generation.py runs them)."""
import pytest

from annotate.models import Answer, Comparison, ExternalModel, GenerationFailure, GenerationJob, Role, Round
from tests.factories import CampaignFactory, PolicyVersionFactory, PromptFactory

pytestmark = pytest.mark.django_db

KEY = "sk-api-test-0123456789abcdef"
VALID = {"name": "vllm-llama", "base_url": "http://127.0.0.1:8000/v1", "model_name": "meta-llama/Llama-3.1-8B",
         "generation": {"max_tokens": 128, "temperature": 0.7}, "max_concurrency": 8, "timeout_s": 30,
         "api_key": KEY}


@pytest.fixture
def campaign():
    campaign = CampaignFactory()
    for i in range(3):
        PromptFactory(campaign=campaign, external_id=f"q{i}")
    return campaign


@pytest.fixture
def engineer(api_client_for, ml_engineer):
    return api_client_for(ml_engineer)


def create(client, campaign, **changes):
    return client.post(f"/api/campaigns/{campaign.pk}/endpoints/", {**VALID, **changes}, format="json")


def test_an_engineer_saves_an_endpoint_and_the_key_is_never_read_back(engineer, campaign, campaign_admin_client):
    # when
    answer = create(engineer, campaign)
    # then
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["has_api_key"] is True and "api_key" not in body and KEY not in answer.content.decode()
    assert (body["name"], body["kind"], body["max_concurrency"], body["answers"]) == ("vllm-llama", "endpoint", 8, 0)
    assert ExternalModel.objects.get(pk=body["id"]).api_key == KEY
    # and every read, by the engineer or the campaign's admin, says only that there is one
    for client in (engineer, campaign_admin_client):
        for url in (f"/api/campaigns/{campaign.pk}/endpoints/", f"/api/endpoints/{body['id']}/"):
            read = client.get(url)
            assert read.status_code == 200 and KEY not in read.content.decode()
            assert "has_api_key" in read.content.decode()


def test_the_key_is_replaced_cleared_or_left_as_it_is(engineer, campaign):
    endpoint_id = create(engineer, campaign).json()["id"]

    def patch(body):
        answer = engineer.patch(f"/api/endpoints/{endpoint_id}/", body, format="json")
        assert answer.status_code == 200, answer.content
        assert "api_key" not in answer.json()
        return answer.json()["has_api_key"], ExternalModel.objects.get(pk=endpoint_id).api_key

    assert patch({"timeout_s": 60}) == (True, KEY)  # left out: stays
    assert patch({"api_key": "sk-new"}) == (True, "sk-new")
    assert patch({"api_key": ""}) == (False, "")
    assert patch({"api_key": "sk-again"}) == (True, "sk-again")
    assert patch({"api_key": None}) == (False, "")


def test_campaign_admins_may_list_endpoints_but_not_save_change_or_run_them(campaign_admin_client, engineer, campaign):
    endpoint_id = create(engineer, campaign).json()["id"]
    assert campaign_admin_client.get(f"/api/campaigns/{campaign.pk}/endpoints/").status_code == 200
    assert create(campaign_admin_client, campaign, name="mine").status_code == 403
    assert campaign_admin_client.patch(f"/api/endpoints/{endpoint_id}/", {"timeout_s": 5},
                                       format="json").status_code == 403
    assert campaign_admin_client.delete(f"/api/endpoints/{endpoint_id}/").status_code == 403
    assert campaign_admin_client.post(f"/api/endpoints/{endpoint_id}/generate/", {}, format="json").status_code == 403
    assert ExternalModel.objects.count() == 1 and not GenerationJob.objects.exists()


@pytest.mark.parametrize("changes, field, says", [
    ({"base_url": "ftp://127.0.0.1/v1"}, "base_url", "http:// or https://"),
    ({"base_url": "http://169.254.169.254/latest"}, "base_url", "cloud metadata address"),
    ({"base_url": "http://[fe80::1]:8000/v1"}, "base_url", "link-local"),
    ({"base_url": "http://no-such-host.invalid/v1"}, "base_url", "does not resolve"),
    ({"base_url": "http://user:pw@127.0.0.1/v1"}, "base_url", "credentials"),
    ({"generation": {"max_tokens": -1, "n": 3}}, "generation.n", "not a generation setting"),
    ({"max_concurrency": 0}, "max_concurrency", "greater than or equal to 1"),
    ({"api_key": "sk-has a space"}, "api_key", "printable ASCII"),
    ({"name": "  "}, "name", "blank"),
])
def test_bad_input_is_refused_naming_the_field_and_nothing_is_saved(engineer, campaign, changes, field, says):
    answer = create(engineer, campaign, **changes)
    assert answer.status_code == 400
    text = answer.content.decode()
    assert field.split(".")[0] in text and says in text
    assert "sk-has a space" not in text and KEY not in text
    assert not ExternalModel.objects.exists()


def test_a_narrowed_host_setting_refuses_loopback(engineer, campaign, settings):
    settings.ENDPOINT_ALLOWED_HOSTS = "*"
    answer = create(engineer, campaign)
    assert answer.status_code == 400 and "127.0.0.1 is a loopback address" in answer.json()["detail"]
    assert "RATCHET_ENDPOINT_ALLOWED_HOSTS" in answer.json()["detail"]


def test_a_name_taken_in_the_campaign_is_a_conflict(engineer, campaign):
    assert create(engineer, campaign).status_code == 201
    answer = create(engineer, campaign)
    assert answer.status_code == 409 and answer.json()["errors"] == {"name": "taken in this campaign"}


def test_starting_a_job_queues_it_once_per_endpoint(engineer, campaign, django_capture_on_commit_callbacks,
                                                    monkeypatch):
    endpoint_id = create(engineer, campaign).json()["id"]
    sent = []
    monkeypatch.setattr("annotate.services.endpoints._send", lambda **kwargs: sent.append(kwargs))
    # when
    with django_capture_on_commit_callbacks(execute=True):
        answer = engineer.post(f"/api/endpoints/{endpoint_id}/generate/", {"samples": 2}, format="json")
    # then: queued, its message sent after the commit under the id it records
    assert answer.status_code == 202, answer.content
    job = GenerationJob.objects.get(pk=answer.json()["id"])
    assert (job.status, job.samples, job.prompts_total, job.prompt_ids) == ("queued", 2, 3, None)
    assert sent == [{"job_id": job.pk, "task_id": job.celery_task_id}]
    # a second start while it is under way is refused
    again = engineer.post(f"/api/endpoints/{endpoint_id}/generate/", {}, format="json")
    assert again.status_code == 409 and f"Job {job.pk} is queued" in again.json()["detail"]


def test_a_subset_names_unknown_prompts(engineer, campaign):
    endpoint_id = create(engineer, campaign).json()["id"]
    answer = engineer.post(f"/api/endpoints/{endpoint_id}/generate/", {"external_ids": ["q0", "nope"]}, format="json")
    assert answer.status_code == 400 and "'nope'" in answer.json()["detail"]
    assert not GenerationJob.objects.exists()


def test_jobs_and_their_failures_are_listed_and_a_job_is_cancelled(engineer, campaign, campaign_admin_client):
    endpoint_id = create(engineer, campaign).json()["id"]
    job_id = engineer.post(f"/api/endpoints/{endpoint_id}/generate/", {}, format="json").json()["id"]
    job = GenerationJob.objects.get(pk=job_id)
    for i, prompt in enumerate(campaign.prompts.order_by("pk")[:2]):
        GenerationFailure.objects.create(job=job, prompt=prompt, attempts=5, error=f"HTTP 500 boom {i}")
    # admins of the campaign read the jobs and failures
    jobs = campaign_admin_client.get(f"/api/campaigns/{campaign.pk}/generation-jobs/?endpoint={endpoint_id}")
    assert jobs.status_code == 200 and [j["id"] for j in jobs.json()] == [job_id]
    assert jobs.json()[0]["endpoint_name"] == "vllm-llama"
    failures = campaign_admin_client.get(f"/api/generation-jobs/{job_id}/failures/?limit=1&offset=1")
    assert failures.status_code == 200
    assert [(f["external_id"], f["attempts"], f["error"]) for f in failures.json()] == [("q1", 5, "HTTP 500 boom 1")]
    # only engineers cancel; a cancelled job cannot be cancelled again
    assert campaign_admin_client.post(f"/api/generation-jobs/{job_id}/cancel/").status_code == 403
    cancelled = engineer.post(f"/api/generation-jobs/{job_id}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["error"] == "cancelled by engineer"
    assert engineer.post(f"/api/generation-jobs/{job_id}/cancel/").status_code == 409


def test_an_endpoint_whose_answers_were_compared_is_not_deleted(engineer, campaign):
    endpoint_id = create(engineer, campaign).json()["id"]
    endpoint = ExternalModel.objects.get(pk=endpoint_id)
    prompt = campaign.prompts.first()
    mine = Answer.objects.create(prompt=prompt, external_model=endpoint, text="mine")
    other = Answer.objects.create(prompt=prompt, policy_version=PolicyVersionFactory(campaign=campaign), text="other")
    Comparison.objects.create(round=Round.objects.create(campaign=campaign, index=0), prompt=prompt, response_a=other, response_b=mine)
    answer = engineer.delete(f"/api/endpoints/{endpoint_id}/")
    assert answer.status_code == 409 and "1 comparisons" in answer.json()["detail"]
    assert ExternalModel.objects.filter(pk=endpoint_id).exists()
    # and its model_name is fixed once it has answers
    renamed = engineer.patch(f"/api/endpoints/{endpoint_id}/", {"model_name": "other"}, format="json")
    assert renamed.status_code == 409


def test_an_endpoint_without_compared_answers_is_deleted(engineer, campaign):
    endpoint_id = create(engineer, campaign).json()["id"]
    assert engineer.delete(f"/api/endpoints/{endpoint_id}/").status_code == 204
    assert not ExternalModel.objects.exists()


def test_another_campaigns_admin_gets_404s(api_client_for, make_user, engineer, campaign):
    endpoint_id = create(engineer, campaign).json()["id"]
    outsider = api_client_for(make_user(Role.CAMPAIGN_ADMIN, username="elsewhere"))
    assert outsider.get(f"/api/campaigns/{campaign.pk}/endpoints/").status_code == 404
    assert outsider.get(f"/api/endpoints/{endpoint_id}/").status_code == 404


def test_no_export_carries_the_key(engineer, campaign, annotator, tmp_path, settings):
    # given: an endpoint's answer rated against a policy's
    settings.EXPORT_DIR = str(tmp_path / "exports")
    from pathlib import Path

    from annotate.models import Rating
    from annotate.services.exports import export_create

    endpoint = ExternalModel.objects.get(pk=create(engineer, campaign).json()["id"])
    prompt = campaign.prompts.first()
    mine = Answer.objects.create(prompt=prompt, external_model=endpoint, text="mine", sampling=endpoint.generation)
    other = Answer.objects.create(prompt=prompt, policy_version=PolicyVersionFactory(campaign=campaign), text="other")
    comparison = Comparison.objects.create(round=Round.objects.create(campaign=campaign, index=0), prompt=prompt,
                                           response_a=mine, response_b=other, rating_count=1)
    Rating.objects.create(comparison=comparison, annotator=annotator, choice="A", strength=2)
    # when: every kind and format is exported
    exports = [export_create(campaign=campaign, kind=kind, format=fmt)
               for kind, fmt in (("preferences", "jsonl"), ("ratings", "jsonl"), ("ratings", "csv"))]
    # then: the rows are there, the key is not
    for export in exports:
        text = Path(export.path).read_text()
        assert export.rows == 1 and KEY not in text
    assert "mine" in Path(exports[0].path).read_text()  # the preference pair holds the endpoint's answer
