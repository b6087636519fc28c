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


# --- bad input at scale (issue 6): the same refusals for prompts, gold pairs and answers,
# each naming its line, nothing written, and memory that does not grow with the file


IMPORTS = {
    "prompts": ("prompts/import", {"external_id": "ok", "prompt": "Fine?"}),
    "gold": ("gold/import", {"external_id": "ok", "prompt": "Fine?", "chosen": "yes", "rejected": "no"}),
    "answers": ("answers/import", {"external_id": "ok", "prompt": "Fine?", "model": "m", "response": "yes"}),
}


def _written(campaign) -> tuple[int, int, int, int]:
    """(prompts, gold pairs, external models, answers) of the campaign."""
    from annotate.models import Answer, ExternalModel, GoldPair

    return (
        Prompt.objects.filter(campaign=campaign).count(), GoldPair.objects.filter(campaign=campaign).count(),
        ExternalModel.objects.filter(campaign=campaign).count(), Answer.objects.filter(prompt__campaign=campaign).count(),
    )


@pytest.mark.parametrize("kind", IMPORTS)
@pytest.mark.parametrize(
    "bad_line, says",
    [
        (b'{"external_id": "b", "prompt": NaN, "chosen": "y", "rejected": "n"}', "NaN is not valid JSON"),
        (b'{"external_id": "b", "prompt": "x", "chosen": -Infinity, "rejected": "n"}', "-Infinity is not valid JSON"),
        (b'{"external_id": "b", "prompt": "one", "prompt": "two", "chosen": "y", "rejected": "n"}',
         "key 'prompt' appears twice"),
        (b'{"external_id": "b", "prompt": "x", "metadata": {"a": 1, "a": 2}, "chosen": "y", "rejected": "n"}',
         "key 'a' appears twice"),
        (b'{"external_id": "b", "prompt": "caf\xe9", "chosen": "y", "rejected": "n"}', "not valid UTF-8"),
    ],
)
def test_import_names_a_bad_line_and_writes_nothing(campaign_admin_client, kind, bad_line, says):
    # given: a good line, the bad one, a good line
    campaign = CampaignFactory()
    path, good = IMPORTS[kind]
    body = json.dumps(good).encode() + b"\n" + bad_line + b"\n" + json.dumps({**good, "external_id": "ok2"}).encode()
    # when
    answer = campaign_admin_client.post(f"/api/campaigns/{campaign.pk}/{path}/", body, content_type="application/x-ndjson")
    # then
    assert answer.status_code == 400, answer.content
    assert [e["line"] for e in answer.data["errors"]] == [2]
    assert says in answer.data["errors"][0]["error"] and "Line 2" in answer.data["detail"]
    assert _written(campaign) == (0, 0, 0, 0)


def test_csv_rejects_a_repeated_key_in_a_json_cell():
    campaign = CampaignFactory()
    with pytest.raises(ValidationFailed) as caught:
        prompts_import(campaign=campaign, data=b'prompt,metadata\nhi,"{""x"": 1, ""x"": 2}"\n', format="csv")
    assert caught.value.details == [{"line": 2, "error": "column 'metadata' is not valid JSON: key 'x' appears twice in one object"}]


@pytest.mark.parametrize("kind", IMPORTS)
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_import_names_an_over_long_line_and_goes_on_checking(campaign_admin_client, settings, kind, fmt):
    # given: line 3 is longer than the line limit, line 4 is bad too
    settings.IMPORT_MAX_LINE_BYTES = 200
    campaign = CampaignFactory()
    path, good = IMPORTS[kind]
    if fmt == "jsonl":
        lines = [json.dumps(good), json.dumps({**good, "external_id": "long", "prompt": "x" * 500}), "[1]"]
        lines.insert(0, json.dumps({**good, "external_id": "first"}))
        content_type, expected = "application/x-ndjson", [3, 4]
    else:
        header, tail = {
            "prompts": ("external_id,prompt", ""),
            "gold": ("external_id,prompt,chosen,rejected", ",y,n"),
            "answers": ("external_id,prompt,model,response", ",m,y"),
        }[kind]
        lines = [header, f"a,fine{tail}", f"long,{'x' * 500}{tail}", "bad,caf\udce9" + tail]
        content_type, expected = "text/csv", [3, 4]
    body = "\n".join(lines).encode("utf-8", errors="surrogateescape")
    # when
    answer = campaign_admin_client.post(f"/api/campaigns/{campaign.pk}/{path}/", body, content_type=content_type)
    # then: both lines named, the long one by its length, and nothing written
    assert answer.status_code == 400, answer.content
    errors = {e["line"]: e["error"] for e in answer.data["errors"]}
    assert sorted(errors) == expected
    assert "longer than 200 bytes" in errors[3]
    assert _written(campaign) == (0, 0, 0, 0)


class _CountingBody:
    """A request body that makes up `size` bytes as they are read, and counts them."""

    def __init__(self, size: int):
        self.size, self.read_bytes = size, 0

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.read_bytes if n is None or n < 0 else min(n, self.size - self.read_bytes)
        self.read_bytes += n
        return b"x" * n

    def readline(self, n: int = -1) -> bytes:
        return self.read(n)


@pytest.mark.parametrize("kind", IMPORTS)
def test_an_upload_over_the_size_limit_is_refused_before_it_is_read(campaign_admin, settings, kind):
    # given: a 10 GB body, announced as such
    from django.test import Client
    from rest_framework.authtoken.models import Token

    settings.IMPORT_MAX_BYTES = 1024 * 1024
    campaign = CampaignFactory()
    body = _CountingBody(10 * 1024**3)
    token = Token.objects.get(user=campaign_admin).key
    # when
    answer = Client().generic(
        "POST", f"/api/campaigns/{campaign.pk}/{IMPORTS[kind][0]}/",
        HTTP_AUTHORIZATION=f"Token {token}", **{"wsgi.input": body, "CONTENT_LENGTH": str(body.size), "CONTENT_TYPE": "application/x-ndjson"},
    )
    # then: refused with the limit, not one byte of it read
    assert answer.status_code == 400
    assert "the limit is 1048576" in answer.json()["detail"]
    assert body.read_bytes == 0
    assert _written(campaign) == (0, 0, 0, 0)


@pytest.mark.parametrize("kind", IMPORTS)
def test_an_over_long_line_is_refused_in_bounded_memory(campaign_admin, settings, tmp_path, kind):
    # given: a 24 MiB upload on disk whose line 2 is 24 MiB long; the line
    # limit is 1 MiB and the file limit above the file's size
    import tracemalloc

    from django.test import Client
    from rest_framework.authtoken.models import Token

    settings.IMPORT_MAX_BYTES = 64 * 1024 * 1024
    settings.IMPORT_MAX_LINE_BYTES = 1024 * 1024
    campaign = CampaignFactory()
    path, good = IMPORTS[kind]
    upload = tmp_path / "big.jsonl"
    with upload.open("wb") as f:
        f.write(json.dumps(good).encode() + b"\n")
        f.write(b'{"external_id": "huge", "prompt": "')
        for _ in range(24):
            f.write(b"y" * (1024 * 1024))
        f.write(b'"}\n{"external_id": "nan", "prompt": NaN}\n')
    size = upload.stat().st_size
    token = Token.objects.get(user=campaign_admin).key
    # once before measuring, so that what a first request sets up for good
    # (imports, caches) is not counted
    Client().post(f"/api/campaigns/{campaign.pk}/{path}/?dry_run=1", json.dumps(good).encode(),
                  content_type="application/x-ndjson", HTTP_AUTHORIZATION=f"Token {token}")
    # when: the file is the request body, read by the app as it likes
    tracemalloc.start()
    try:
        with upload.open("rb") as body:
            answer = Client().generic(
                "POST", f"/api/campaigns/{campaign.pk}/{path}/",
                HTTP_AUTHORIZATION=f"Token {token}", **{"wsgi.input": body, "CONTENT_LENGTH": str(size), "CONTENT_TYPE": "application/x-ndjson"},
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # then: line 2 named for its length and line 3 still checked; nothing
    # written; and the app never held more than a few line limits' worth
    assert answer.status_code == 400, answer.content[:500]
    errors = {e["line"]: e["error"] for e in answer.json()["errors"]}
    assert sorted(errors) == [2, 3]
    assert "longer than 1048576 bytes" in errors[2] and "NaN" in errors[3]
    assert _written(campaign) == (0, 0, 0, 0)
    assert peak < 6 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB upload"


def test_a_file_of_more_lines_than_one_query_takes_parameters_imports(settings):
    # Found by bench/import_answers.py: PostgreSQL takes at most 65,535
    # parameters in a query, and the prompt import asked which of a file's
    # external_ids the campaign had in one (a 500 on 100,000 prompts).
    settings.IMPORT_MAX_BYTES = 64 * 1024 * 1024
    campaign = CampaignFactory()
    body = b"".join(b'{"external_id": "p%d", "prompt": "q"}\n' % i for i in range(70_000))
    assert prompts_import(campaign=campaign, data=body).created == 70_000
    assert prompts_import(campaign=campaign, data=body, dry_run=True).existing == 70_000


@pytest.mark.parametrize("kind", IMPORTS)
def test_nul_and_a_lone_surrogate_are_stored_as_the_replacement_character(campaign_admin_client, kind):
    # PostgreSQL's text and jsonb hold no U+0000 and UTF-8 no lone surrogate
    # (half an emoji); both were a 500 before.
    campaign = CampaignFactory()
    path, good = IMPORTS[kind]
    line = {**good, "prompt": "a\u0000b\ud83d", "metadata": {"k\u0000": "\udc00"}}
    answer = campaign_admin_client.post(
        f"/api/campaigns/{campaign.pk}/{path}/", json.dumps(line).encode(), content_type="application/x-ndjson"
    )
    assert answer.status_code == 200, answer.content
    prompt = Prompt.objects.get(campaign=campaign)
    assert prompt.text == "a\ufffdb\ufffd"
    # The line's metadata is the prompt's; in an answers file, the answer's.
    holder = prompt.answers.get() if kind == "answers" else prompt
    assert holder.metadata == {"k\ufffd": "\ufffd"}
