"""Prompt imports, JSONL and CSV: every bad line named by number, nothing
written on a bad file or a dry run, re-imports that add nothing; and the
console's prompts page."""
import json

import pytest

from annotate.errors import ValidationFailed
from annotate.models import Prompt
from annotate.services.prompts import prompts_import
from tests.factories import CampaignFactory, PromptFactory

pytestmark = pytest.mark.django_db

GOOD_CSV = (
    'external_id,prompt,messages,metadata\n'
    'q1,What is 2+2?,,"{""topic"": ""maths""}"\n'
    'q2,,"[{""role"": ""user"", ""content"": ""Hello""}]",\n'
    'q3,"A prompt\nover two lines",,\n'
).encode()


def import_(client, campaign, body: bytes, content_type="application/x-ndjson", query=""):
    return client.post(f"/api/campaigns/{campaign.pk}/prompts/import/{query}", body, content_type=content_type)


def test_csv_import_creates_text_and_chat_prompts_with_metadata(campaign_admin_client):
    campaign = CampaignFactory()
    answer = import_(campaign_admin_client, campaign, GOOD_CSV, content_type="text/csv")
    assert answer.status_code == 200, answer.content
    assert answer.data == {"created": 3, "existing": 0, "lines": 3}
    prompts = {p.external_id: p for p in Prompt.objects.filter(campaign=campaign)}
    assert prompts["q1"].text == "What is 2+2?" and prompts["q1"].metadata == {"topic": "maths"}
    assert prompts["q2"].turns == [{"role": "user", "content": "Hello"}] and prompts["q2"].text == ""
    assert prompts["q3"].text == "A prompt\nover two lines"


def test_csv_reimport_adds_nothing(campaign_admin_client):
    campaign = CampaignFactory()
    import_(campaign_admin_client, campaign, GOOD_CSV, content_type="text/csv")
    again = import_(campaign_admin_client, campaign, GOOD_CSV, content_type="text/csv")
    assert again.data == {"created": 0, "existing": 3, "lines": 3}
    assert Prompt.objects.filter(campaign=campaign).count() == 3


def test_csv_import_names_every_bad_line_and_writes_nothing(campaign_admin_client):
    campaign = CampaignFactory()
    body = (
        b'external_id,prompt,messages\n'
        b'ok1,fine,\n'
        b'bad-both,text,"[{""role"": ""user"", ""content"": ""x""}]"\n'  # line 3
        b'bad-json,,[not json\n'  # line 4
        b'ok1,duplicate id,\n'  # line 5
        b'bad-utf8,\xff\xfe,\n'  # line 6
    )
    answer = import_(campaign_admin_client, campaign, body, content_type="text/csv")
    assert answer.status_code == 400
    # invalid UTF-8 is found before the CSV is parsed: it alone is reported
    assert [e["line"] for e in answer.data["errors"]] == [6]
    body = body.replace(b"\xff\xfe", b"ok")
    answer = import_(campaign_admin_client, campaign, body, content_type="text/csv")
    assert answer.status_code == 400
    errors = {e["line"]: e["error"] for e in answer.data["errors"]}
    assert sorted(errors) == [3, 4, 5]
    assert "exactly one of" in errors[3]
    assert "not valid JSON" in errors[4]
    assert "repeats line 2" in errors[5]
    assert Prompt.objects.count() == 0


def test_csv_header_without_a_prompt_column_is_line_1(campaign_admin_client):
    campaign = CampaignFactory()
    answer = import_(campaign_admin_client, campaign, b"external_id,question\nq1,hi\n", content_type="text/csv")
    assert answer.status_code == 400
    assert answer.data["errors"][0]["line"] == 1
    assert "question" in answer.data["errors"][0]["error"]


def test_csv_rejects_nan_in_metadata():
    campaign = CampaignFactory()
    with pytest.raises(ValidationFailed) as caught:
        prompts_import(campaign=campaign, data=b'prompt,metadata\nhi,"{""x"": NaN}"\n', format="csv")
    assert caught.value.details[0]["line"] == 2 and "NaN" in caught.value.details[0]["error"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_dry_run_reports_bad_lines_and_writes_nothing(campaign_admin_client, fmt):
    campaign = CampaignFactory()
    if fmt == "jsonl":
        body = b'{"external_id": "a", "prompt": "ok"}\n{"external_id": "b", "prompt": NaN}\n{"prompt": ""}\n'
        content_type = "application/x-ndjson"
    else:
        body = b"external_id,prompt\na,ok\nb,\n"
        content_type = "text/csv"
    answer = import_(campaign_admin_client, campaign, body, content_type=content_type, query="?dry_run=1")
    assert answer.status_code == 400
    assert [e["line"] for e in answer.data["errors"]] == ([2, 3] if fmt == "jsonl" else [3])
    assert Prompt.objects.count() == 0


def test_dry_run_of_a_good_file_says_what_an_import_would_add_and_writes_nothing(campaign_admin_client):
    campaign = CampaignFactory()
    PromptFactory(campaign=campaign, external_id="q1")
    answer = import_(campaign_admin_client, campaign, GOOD_CSV, content_type="text/csv", query="?dry_run=1")
    assert answer.status_code == 200
    assert answer.data == {"created": 2, "existing": 1, "lines": 3}
    assert Prompt.objects.filter(campaign=campaign).count() == 1


def test_jsonl_reimport_adds_nothing_and_keeps_existing_validation(campaign_admin_client):
    campaign = CampaignFactory()
    body = b"\n".join(json.dumps({"external_id": f"p{i}", "prompt": f"q{i}"}).encode() for i in range(5))
    assert import_(campaign_admin_client, campaign, body).data == {"created": 5, "existing": 0, "lines": 5}
    assert import_(campaign_admin_client, campaign, body).data == {"created": 0, "existing": 5, "lines": 5}
    bad = import_(campaign_admin_client, campaign, b'{"prompt": "x"}\n\xff\n')
    assert bad.status_code == 400 and bad.data["errors"][0] == {"line": 2, "error": bad.data["errors"][0]["error"]}
    assert "UTF-8" in bad.data["errors"][0]["error"]


def test_multipart_upload_takes_the_format_from_the_file_name(campaign_admin_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    campaign = CampaignFactory()
    upload = SimpleUploadedFile("prompts.csv", GOOD_CSV, content_type="application/octet-stream")
    answer = campaign_admin_client.post(f"/api/campaigns/{campaign.pk}/prompts/import/", {"file": upload})
    assert answer.status_code == 200, answer.content
    assert answer.data["created"] == 3


def test_plain_prompt_may_not_take_a_gold_name():
    campaign = CampaignFactory()
    with pytest.raises(ValidationFailed, match="gold:"):
        prompts_import(campaign=campaign, data=b'{"external_id": "gold:1", "prompt": "x"}\n')


# --- the console page ---------------------------------------------------------------


def test_console_prompts_page_checks_then_imports(client, campaign_admin):
    from django.core.files.uploadedfile import SimpleUploadedFile

    campaign = CampaignFactory()
    client.force_login(campaign_admin)
    url = f"/console/campaigns/{campaign.pk}/prompts/"
    bad = SimpleUploadedFile("p.csv", b"external_id,prompt\na,ok\nb,\n")
    checked = client.post(url, {"file": bad, "action": "check"})
    assert checked.status_code == 400
    assert b"<td>3</td>" in checked.content and Prompt.objects.count() == 0
    good = SimpleUploadedFile("p.csv", b"external_id,prompt\na,ok\nb,fixed\n")
    imported = client.post(url, {"file": good, "action": "import"})
    assert imported.status_code == 200
    assert Prompt.objects.filter(campaign=campaign).count() == 2


def test_console_prompts_page_query_count_is_pinned(client, campaign_admin, django_assert_max_num_queries):
    campaign = CampaignFactory()
    Prompt.objects.bulk_create(Prompt(campaign=campaign, external_id=f"p{i}", text=f"q{i}") for i in range(300))
    client.force_login(campaign_admin)
    with django_assert_max_num_queries(8):
        answer = client.get(f"/console/campaigns/{campaign.pk}/prompts/?page=2")
    assert answer.status_code == 200 and b"p50" in answer.content


def test_annotator_cannot_open_the_console_prompts_page(client, annotator):
    campaign = CampaignFactory()
    client.force_login(annotator)
    assert client.get(f"/console/campaigns/{campaign.pk}/prompts/").status_code == 403


def test_engineer_sees_but_cannot_import(client, ml_engineer):
    from django.core.files.uploadedfile import SimpleUploadedFile

    campaign = CampaignFactory()
    client.force_login(ml_engineer)
    url = f"/console/campaigns/{campaign.pk}/prompts/"
    assert client.get(url).status_code == 200
    answer = client.post(url, {"file": SimpleUploadedFile("p.csv", GOOD_CSV), "action": "import"})
    assert answer.status_code == 403 and Prompt.objects.count() == 0
