"""Generation jobs against a real llama.cpp server (config/llama_server.py),
through the fault proxy where a failure is needed (proxy.py). The job runs
in this process through generation_job_run, the function the `endpoints`
worker's task calls; tests/reliability/test_endpoint_worker.py runs it in a
real Celery worker."""
import logging
import threading
import time
from collections import Counter

import pytest
from django.db import connection

from annotate.models import Answer, GenerationFailure, GenerationJob
from annotate.services.endpoints import endpoint_create, generation_job_cancel, generation_job_start
from annotate.services.generation import generation_job_run
from tests.annotate.endpoints.proxy import Fault
from tests.annotate.endpoints.servers import GENERATION, SERVER_KEY
from tests.factories import CampaignFactory, PromptFactory

pytestmark = pytest.mark.django_db


def campaign_with_prompts(n: int, texts: list[str] | None = None):
    campaign = CampaignFactory()
    texts = texts or [f"Name a colour, please ({i})." for i in range(n)]
    for i, text in enumerate(texts):
        PromptFactory(campaign=campaign, external_id=f"q{i}", text=text)
    return campaign


def endpoint_on(campaign, url: str, *, key: str = SERVER_KEY, **fields):
    return endpoint_create(campaign=campaign, user=None, name=fields.pop("name", "smollm2"), base_url=url,
                           model_name="smollm2-135m", generation=fields.pop("generation", GENERATION),
                           api_key=key, **fields)


def run(endpoint, **start) -> GenerationJob:
    job = generation_job_start(endpoint=endpoint, user=None, **start)
    generation_job_run(job_id=job.pk, task_id=job.celery_task_id)
    job.refresh_from_db()
    return job


def test_a_job_answers_every_prompt_and_sample_once_and_records_token_usage(fault_proxy, quick_retries):
    # given: 5 prompts, 2 samples each, behind the proxy (no faults)
    campaign = campaign_with_prompts(5)
    endpoint = endpoint_on(campaign, fault_proxy.base_url, max_concurrency=2)
    # when
    job = run(endpoint, samples=2)
    # then: 10 answers, one request each, usage added up from the server's counts
    assert job.status == GenerationJob.Status.SUCCEEDED, job.error
    answers = list(Answer.objects.filter(external_model=endpoint))
    assert len(answers) == 10 and all(a.text.strip() for a in answers)
    assert sorted((a.prompt.external_id, a.sample_index) for a in answers) == sorted(
        (f"q{i}", s) for i in range(5) for s in range(2))
    assert (job.answered, job.failed, job.requests, job.prompts_total) == (10, 0, 10, 5)
    assert len(fault_proxy.answered(200)) == 10 == len(fault_proxy.log)
    assert job.completion_tokens == sum(a.metadata["usage"]["completion_tokens"] for a in answers) > 0
    assert job.prompt_tokens == sum(a.metadata["usage"]["prompt_tokens"] for a in answers) > 0
    # an answer the server stopped at max_tokens (8 here) is marked as cut, and only those
    assert all(a.metadata["truncated"] == (a.metadata["finish_reason"] == "length") for a in answers)
    assert any(a.metadata["truncated"] for a in answers)
    # each sample was asked with its own seed (the same seed would give the same answer)
    assert {a.sampling["seed"] for a in answers} == {7, 8}
    assert Counter(s.seed for s in fault_proxy.log) == {7: 5, 8: 5}
    assert job.heartbeat_at is not None and job.finished_at is not None


def test_a_second_job_asks_only_what_has_no_answer_yet(fault_proxy, quick_retries):
    # given: a job answered 4 prompts once
    campaign = campaign_with_prompts(4)
    endpoint = endpoint_on(campaign, fault_proxy.base_url)
    assert run(endpoint).status == GenerationJob.Status.SUCCEEDED
    asked = len(fault_proxy.log)
    # when: a job wants 2 samples of each, and a third job the same
    second = run(endpoint, samples=2)
    third = run(endpoint, samples=2)
    # then: only the second samples were asked, once each; the third job asked nothing
    assert (asked, len(fault_proxy.log)) == (4, 8)
    assert {s.seed for s in fault_proxy.log[4:]} == {8}
    assert (second.status, second.answered, second.requests) == ("succeeded", 8, 4)
    assert (third.status, third.answered, third.requests) == ("succeeded", 8, 0)
    assert Answer.objects.filter(external_model=endpoint).count() == 8


def test_a_subset_job_asks_only_the_prompts_named(fault_proxy, quick_retries):
    campaign = campaign_with_prompts(4)
    endpoint = endpoint_on(campaign, fault_proxy.base_url)
    job = run(endpoint, external_ids=["q2", "q0"])
    assert (job.status, job.prompts_total, job.answered) == ("succeeded", 2, 2)
    assert set(Answer.objects.filter(external_model=endpoint).values_list("prompt__external_id", flat=True)) == {
        "q0", "q2"}


def test_the_server_killed_mid_job_and_started_again_loses_nothing_and_answers_each_prompt_once(
    fault_proxy, live_llama, quick_retries
):
    # given: 10 prompts; when the 4th request arrives the server is killed
    # (requests in flight cut off), and started again 2 s later
    campaign = campaign_with_prompts(10)
    endpoint = endpoint_on(campaign, fault_proxy.base_url, max_concurrency=2)
    outage = {}

    def kill_and_restart():
        live_llama.kill()
        outage["killed"] = time.monotonic()
        time.sleep(2)
        live_llama.start()
        outage["back"] = time.monotonic()

    def fault(seen):
        if seen.index == 3:
            threading.Thread(target=kill_and_restart, daemon=True).start()
        return None

    fault_proxy.fault = fault
    # when
    job = run(endpoint)
    # then: the outage happened (the proxy answered 502 while the server was down)...
    assert "back" in outage, "the server was not restarted"
    assert any(s.status == 502 for s in fault_proxy.log), "no request met the outage"
    # ...and every prompt was answered exactly once, none given up on
    assert job.status == GenerationJob.Status.SUCCEEDED, job.error
    answers = Answer.objects.filter(external_model=endpoint)
    assert answers.count() == 10 == job.answered
    ok = Counter(s.prompt for s in fault_proxy.answered(200))
    assert len(ok) == 10 and set(ok.values()) == {1}, ok
    # every request the job sent reached the proxy, and it counted them all
    assert job.requests == len(fault_proxy.log) > 10
    assert not GenerationFailure.objects.filter(job=job).exists()


def test_answers_slower_than_the_timeout_are_retried_then_given_up_on_with_the_error(fault_proxy, quick_retries):
    # given: a timeout of 1.5 s; one prompt is always answered after 3 s, one
    # only its first time
    campaign = campaign_with_prompts(3, ["Say yes.", "SLOW ALWAYS: say no.", "SLOW ONCE: say maybe."])
    endpoint = endpoint_on(campaign, fault_proxy.base_url, timeout_s=1.5, max_concurrency=3)

    def fault(seen):
        if seen.prompt.startswith("SLOW ALWAYS") or (seen.prompt.startswith("SLOW ONCE") and seen.attempt == 1):
            return Fault(delay=3.0)
        return None

    fault_proxy.fault = fault
    # when
    job = run(endpoint)
    # then: the slow-once prompt was answered on its retry; the always-slow one
    # failed after 3 attempts with the timeout named, and the job says so
    texts = set(Answer.objects.filter(external_model=endpoint).values_list("prompt__external_id", flat=True))
    assert texts == {"q0", "q2"}
    failure = GenerationFailure.objects.get(job=job)
    assert failure.prompt.external_id == "q1" and failure.attempts == 3
    assert "no answer within 1.5 s" in failure.error
    assert job.status == GenerationJob.Status.FAILED and (job.answered, job.failed) == (2, 1)
    assert "1 of 3 prompts got no answer" in job.error and "no answer within 1.5 s" in job.error
    assert sum(1 for s in fault_proxy.log if s.prompt.startswith("SLOW ALWAYS")) == 3


def test_429_with_retry_after_holds_every_request_back_that_long_then_succeeds(fault_proxy, quick_retries):
    # given: the first request for each prompt is answered 429, Retry-After: 1
    campaign = campaign_with_prompts(4)
    endpoint = endpoint_on(campaign, fault_proxy.base_url, max_concurrency=2)
    fault_proxy.fault = lambda seen: (
        Fault(status=429, body=b'{"error": {"message": "slow down"}}', headers={"Retry-After": "1"})
        if seen.attempt == 1 else None
    )
    # when
    job = run(endpoint)
    # then: everything answered, two requests a prompt, and no retry came
    # sooner than a second after the 429 that sent it back
    assert job.status == GenerationJob.Status.SUCCEEDED, job.error
    assert (job.answered, job.requests) == (4, 8)
    limited = [s for s in fault_proxy.log if s.status == 429]
    assert len(limited) == 4
    for first in limited:
        retry = next(s for s in fault_proxy.log if s.prompt == first.prompt and s.attempt == 2)
        assert retry.at - first.answered_at >= 0.95, (first, retry)
    assert not GenerationFailure.objects.filter(job=job).exists()


def test_a_wrong_key_fails_the_job_at_once_with_a_clear_error_and_no_retry_storm(live_llama, fault_proxy, quick_retries):
    # given: 20 prompts and a key the real server does not accept
    campaign = campaign_with_prompts(20)
    endpoint = endpoint_on(campaign, fault_proxy.base_url, key="sk-wrong-key-0123456789", max_concurrency=4)
    # when
    job = run(endpoint)
    # then: failed, saying the key was refused, after no more requests than were in flight at once
    assert job.status == GenerationJob.Status.FAILED
    assert "refused the API key" in job.error and "401" in job.error
    assert "sk-wrong-key-0123456789" not in job.error
    assert job.requests == len(fault_proxy.log) <= 4
    assert {s.status for s in fault_proxy.log} == {401}
    assert Answer.objects.filter(external_model=endpoint).count() == 0


@pytest.mark.parametrize("body, says", [
    (b"<html>502 Bad Gateway</html>", "not JSON"),
    (b'{"id": "x", "object": "chat.completion", "result": "hello"}', "not a chat completion"),
    (b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}]}',
     "empty content"),
])
def test_an_endpoint_answering_garbage_gets_a_clear_error_on_the_job(fault_proxy, quick_retries, body, says):
    # given: every answer is garbage of one kind; the job gives up after 2 prompts in a row
    quick_retries.ENDPOINT_GIVE_UP_STREAK = 2
    campaign = campaign_with_prompts(6)
    endpoint = endpoint_on(campaign, fault_proxy.base_url, max_concurrency=1)
    fault_proxy.fault = lambda seen: Fault(status=200, body=body)
    # when
    job = run(endpoint)
    # then: stopped after 2 prompts of 3 attempts each, saying what was wrong
    assert job.status == GenerationJob.Status.FAILED
    assert "stopped after 2 prompts in a row failed" in job.error and says in job.error
    assert len(fault_proxy.log) == job.requests == 6
    failures = list(GenerationFailure.objects.filter(job=job))
    assert len(failures) == 2 and all(says in f.error and f.attempts == 3 for f in failures)


def test_garbage_once_is_retried_and_answered(fault_proxy, quick_retries):
    campaign = campaign_with_prompts(3)
    endpoint = endpoint_on(campaign, fault_proxy.base_url)
    fault_proxy.fault = lambda seen: Fault(status=200, body=b"{not json") if seen.attempt == 1 else None
    job = run(endpoint)
    assert (job.status, job.answered, job.requests) == ("succeeded", 3, 6)


def test_the_key_never_reaches_an_error_a_failure_a_log_line_or_the_api(fault_proxy, quick_retries, caplog,
                                                                         api_client_for, ml_engineer):
    # given: a server that echoes the request's Authorization header in its 500s
    caplog.set_level(logging.DEBUG)
    campaign = campaign_with_prompts(2)
    endpoint = endpoint_on(campaign, fault_proxy.base_url, max_concurrency=1)
    fault_proxy.fault = lambda seen: Fault(status=500, echo_auth=True)
    # when
    job = run(endpoint)
    # then: the server did get the key, and echoed it...
    assert all(s.authorization == f"Bearer {SERVER_KEY}" for s in fault_proxy.log)
    failure = GenerationFailure.objects.filter(job=job).first()
    # ...but it is redacted wherever the job's texts are kept or shown
    assert failure is not None and "bad request with Bearer [redacted]" in failure.error
    client = api_client_for(ml_engineer)
    shown = [
        client.get(f"/api/generation-jobs/{job.pk}/").content,
        client.get(f"/api/generation-jobs/{job.pk}/failures/").content,
        client.get(f"/api/endpoints/{endpoint.pk}/").content,
        client.get(f"/api/campaigns/{campaign.pk}/endpoints/").content,
        client.get(f"/api/campaigns/{campaign.pk}/generation-jobs/").content,
    ]
    texts = [job.error, failure.error, caplog.text, *(b.decode() for b in shown)]
    assert all(SERVER_KEY not in text for text in texts)
    assert caplog.text, "nothing was logged: the check above proves nothing"


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_job_stops_asking_and_keeps_what_it_stored(fault_proxy, quick_retries):
    # given: 30 prompts answered one at a time; after the 3rd request an
    # engineer cancels the job (from another thread, as the API would)
    campaign = campaign_with_prompts(30)
    endpoint = endpoint_on(campaign, fault_proxy.base_url, max_concurrency=1)
    job = generation_job_start(endpoint=endpoint, user=None)

    def cancel():
        try:
            generation_job_cancel(job=job, user=None)
        finally:
            connection.close()

    def fault(seen):
        # The cancel is committed before the 3rd answer goes back (joined, not
        # fired and forgotten: under CI load a free thread committed late and
        # the job honestly made 12 requests). Later answers take 0.5 s, so the
        # bound below counts flushes, not how fast this machine answers: the
        # job reads its status every second and may ask ~2-4 more times.
        if seen.index == 2:
            worker = threading.Thread(target=cancel)
            worker.start()
            worker.join()
        return Fault(delay=0.5) if seen.index > 2 else None

    fault_proxy.fault = fault
    # when
    generation_job_run(job_id=job.pk, task_id=job.celery_task_id)
    # then: it stopped within a few requests, still cancelled, with its answers kept and counted
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.CANCELLED and job.error == "cancelled by the system"
    stored = Answer.objects.filter(external_model=endpoint).count()
    assert 2 <= stored < 12 and job.answered == stored
    assert len(fault_proxy.log) < 12
