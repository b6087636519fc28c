"""The endpoints console in real Chromium, against a real llama.cpp server
(through the fault proxy, which slows answers so progress is seen moving):
an engineer adds an endpoint with its key, generates, watches the job
live; replaces the key with a wrong one and sees the job fail with the
server's refusal. No page ever holds either key. The job runs on a thread
of the test process standing in for the `endpoints` worker (it calls
generation_job_run, as the worker's task does).
Screenshot: tests/artifacts/screenshots/console-endpoints.png."""
import threading

import pytest
from django.db import connection

from annotate.models import ExternalModel, GenerationJob, Role
from tests.annotate.endpoints.proxy import Fault
from tests.annotate.endpoints.servers import (  # noqa: F401  (fixtures)
    SERVER_KEY,
    fault_proxy,
    live_llama,
    llama_server,
)
from tests.browser.conftest import SCREENSHOTS

WRONG_KEY = "sk-browser-wrong-0123456789abcdef"


@pytest.fixture
def worker_thread(monkeypatch):
    """Jobs sent to the queue run on a thread here instead."""
    threads = []

    def send(*, job_id, task_id):
        from annotate.services.generation import generation_job_run

        def run():
            try:
                generation_job_run(job_id=job_id, task_id=task_id)
            finally:
                connection.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)

    monkeypatch.setattr("annotate.services.endpoints._send", send)
    yield threads
    for thread in threads:
        thread.join(timeout=60)


@pytest.fixture
def engineer_page(page, live_server, transactional_db):
    from django.test import Client

    from tests.factories import CampaignFactory, PromptFactory, UserFactory

    engineer = UserFactory(username="browser-engineer", roles=[Role.ML_ENGINEER])
    campaign = CampaignFactory(name="Endpoints console campaign")
    for i in range(6):
        PromptFactory(campaign=campaign, external_id=f"q{i}", text=f"Name an animal ({i}).")
    client = Client()
    client.force_login(engineer)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return campaign


def no_key_on(page):
    html = page.content()
    assert SERVER_KEY not in html and WRONG_KEY not in html


def test_engineer_adds_an_endpoint_generates_and_watches_the_job_live(page, live_server, engineer_page, fault_proxy,
                                                                       worker_thread, settings):
    settings.ENDPOINT_BACKOFF_S = 0.05
    campaign = engineer_page
    fault_proxy.fault = lambda seen: Fault(delay=0.6)
    # given: the endpoints page, empty
    page.goto(f"{live_server.url}/console/campaigns/{campaign.pk}/endpoints/")
    assert "No endpoints yet." in page.text_content("#endpoint-list")
    # when: the engineer adds one with its key
    page.fill("#ep-name", "smollm2")
    page.fill("#ep-base-url", fault_proxy.base_url)
    page.fill("#ep-model", "smollm2-135m")
    page.fill("#ep-generation", '{"max_tokens": 8, "seed": 3}')
    page.fill("#ep-concurrency", "1")
    page.fill("#ep-key", SERVER_KEY)
    page.click("#endpoint-form button[type=submit]")
    # then: listed, its key "set", and the key nowhere on the page
    page.wait_for_selector("#endpoint-list tr[data-endpoint]")
    assert page.text_content("#endpoint-list .key-state").strip() == "set"
    assert page.input_value("#ep-key") == ""
    no_key_on(page)
    # when: they generate one answer per prompt
    page.click("#endpoint-list .generate-form button[type=submit]")
    # then: the job's page moves while the job runs, and ends succeeded
    page.wait_for_selector("#job[data-live='1']")
    page.wait_for_function("() => Number(document.querySelector('#job [data-field=answered]').textContent) >= 1")
    page.wait_for_selector("#job-status.status-succeeded", timeout=60_000)
    assert page.text_content('#job [data-field="answered"]').strip() == "6"
    assert int(page.text_content('#job [data-field="completion_tokens"]')) > 0
    assert page.locator("#cancel-job").count() == 0
    no_key_on(page)
    page.screenshot(path=str(SCREENSHOTS / "console-endpoints.png"), full_page=True)

    # when: the key is replaced with a wrong one and a new prompt is generated for
    endpoint = ExternalModel.objects.get(name="smollm2")
    page.goto(f"{live_server.url}/console/endpoints/{endpoint.pk}/")
    assert page.input_value("#ep-key") == ""
    page.check("input[name=key_action][value=replace]")
    page.fill("#ep-key", WRONG_KEY)
    page.click("#endpoint-form button[type=submit]")
    page.wait_for_selector(".message.success")
    assert page.text_content("#key-state") == "set"
    no_key_on(page)
    endpoint.refresh_from_db()
    assert endpoint.api_key == WRONG_KEY
    from tests.factories import PromptFactory

    PromptFactory(campaign=campaign, external_id="q-new", text="Name a tree.")
    page.goto(f"{live_server.url}/console/campaigns/{campaign.pk}/endpoints/")
    page.click("#endpoint-list .generate-form button[type=submit]")
    # then: the job fails with the server's refusal, shown on its page
    page.wait_for_selector("#job-status.status-failed", timeout=60_000)
    assert "refused the API key" in page.text_content("#job-error")
    no_key_on(page)
    assert GenerationJob.objects.filter(status="failed").count() == 1
