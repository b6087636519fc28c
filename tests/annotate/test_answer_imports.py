"""Imported answers (annotate/services/answers.py), JSONL and CSV: the
prompt import's rules (every bad line named, nothing written on a bad file
or a dry run, re-imports that add nothing), the campaign's imported models
made on first use, prompts created from the lines, NUL-safe text, a file
read a line at a time and memory that holds a batch. The refusals the
prompt and gold imports share (bad JSON, over-long lines, the size limit,
bounded memory on a huge line) run for answers too, in
tests/annotate/test_imports.py; the API and the console page are in
test_answers_api.py."""
import json

import pytest

from annotate.errors import ValidationFailed
from annotate.models import Answer, ExternalModel, Prompt
from annotate.services import answers as answers_service
from annotate.services.answers import answers_import
from tests.factories import CampaignFactory, PromptFactory

pytestmark = pytest.mark.django_db


def jsonl(*rows: dict) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def written(campaign) -> tuple[int, int, int]:
    """(prompts, external models, answers) of the campaign."""
    return (
        Prompt.objects.filter(campaign=campaign).count(),
        ExternalModel.objects.filter(campaign=campaign).count(),
        Answer.objects.filter(prompt__campaign=campaign).count(),
    )


def errors_of(caught) -> dict[int, str]:
    return {e["line"]: e["error"] for e in caught.value.details}


TWO_MODELS = jsonl(
    {"external_id": "q1", "model": "gpt-x", "response": "Four."},
    {"external_id": "q1", "model": "llama-y", "response": "4", "metadata": {"latency_ms": 80}},
    {"external_id": "q2", "model": "gpt-x", "response": "Paris.", "sample_index": 1},
)


# --- the service ---------------------------------------------------------------------


def test_import_makes_the_named_models_and_their_answers_to_existing_prompts(campaign_admin):
    # given: a campaign with prompts q1 and q2
    campaign = CampaignFactory()
    q1 = PromptFactory(campaign=campaign, external_id="q1", text="2+2?")
    q2 = PromptFactory(campaign=campaign, external_id="q2", text="Capital of France?")
    # when
    result = answers_import(campaign=campaign, data=TWO_MODELS, created_by=campaign_admin)
    # then: two imported models, three answers, each where the line says
    assert (result.created, result.existing, result.lines, result.prompts_created) == (3, 0, 3, 0)
    assert [(m.name, m.created, m.existing, m.new) for m in result.models] == [
        ("gpt-x", 2, 0, True), ("llama-y", 1, 0, True),
    ]
    models = {m.name: m for m in ExternalModel.objects.filter(campaign=campaign)}
    assert {m.kind for m in models.values()} == {ExternalModel.Kind.IMPORTED}
    assert models["gpt-x"].created_by == campaign_admin
    got = {
        (a.prompt_id, a.external_model.name, a.sample_index): (a.text, a.metadata, a.policy_version_id)
        for a in Answer.objects.select_related("external_model")
    }
    assert got == {
        (q1.pk, "gpt-x", 0): ("Four.", {}, None),
        (q1.pk, "llama-y", 0): ("4", {"latency_ms": 80}, None),
        (q2.pk, "gpt-x", 1): ("Paris.", {}, None),
    }


def test_lines_with_prompt_text_create_the_prompts_once(campaign_admin):
    # given: two models answering the same two new prompts, one plain text, one chat
    campaign = CampaignFactory()
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    body = jsonl(
        {"prompt": "What is a pawl?", "model": "a", "response": "A catch."},
        {"prompt": "What is a pawl?", "model": "b", "response": "A lever."},
        {"external_id": "c1", "messages": chat, "model": "a", "response": "Hello."},
        {"external_id": "c1", "messages": chat, "model": "b", "response": "Hi!"},
    )
    # when
    result = answers_import(campaign=campaign, data=body)
    # then: two prompts, as the prompt import would make them
    assert (result.created, result.prompts_created) == (4, 2)
    prompts = {p.external_id: p for p in Prompt.objects.filter(campaign=campaign)}
    assert prompts["c1"].turns == chat and prompts["c1"].text == ""
    (hashed,) = [p for eid, p in prompts.items() if eid != "c1"]
    assert hashed.external_id.startswith("sha1:") and hashed.text == "What is a pawl?"
    assert hashed.answers.count() == 2
    # and: the prompt import of the same text finds that prompt, adds nothing
    from annotate.services.prompts import prompts_import

    assert prompts_import(campaign=campaign, data=jsonl({"prompt": "What is a pawl?"})).created == 0


def test_csv_import_with_messages_sample_index_and_metadata():
    campaign = CampaignFactory()
    body = (
        'external_id,messages,model,response,sample_index,metadata\n'
        'c1,"[{""role"": ""user"", ""content"": ""Hello""}]",m1,"Hi,\nthere",2,"{""t"": 1}"\n'
        'c1,,m1,Hello back,3,\n'
    ).encode()
    result = answers_import(campaign=campaign, data=body, format="csv")
    assert (result.created, result.prompts_created, result.lines) == (2, 1, 2)
    answers = {a.sample_index: a for a in Answer.objects.filter(prompt__campaign=campaign)}
    assert answers[2].text == "Hi,\nthere" and answers[2].metadata == {"t": 1}
    assert answers[3].text == "Hello back" and answers[3].prompt.turns == [{"role": "user", "content": "Hello"}]


def test_reimport_adds_nothing_and_leaves_existing_answers_as_they_are():
    # given: the file imported once
    campaign = CampaignFactory()
    PromptFactory(campaign=campaign, external_id="q1")
    PromptFactory(campaign=campaign, external_id="q2")
    answers_import(campaign=campaign, data=TWO_MODELS)
    # when: again, and once more with one answer's text changed
    again = answers_import(campaign=campaign, data=TWO_MODELS)
    changed = answers_import(campaign=campaign, data=TWO_MODELS.replace(b"Four.", b"Five."))
    # then
    assert (again.created, again.existing, again.lines) == (0, 3, 3)
    assert [(m.name, m.created, m.existing, m.new) for m in again.models] == [
        ("gpt-x", 0, 2, False), ("llama-y", 0, 1, False),
    ]
    assert (changed.created, changed.existing) == (0, 3)
    assert written(campaign) == (2, 2, 3)
    assert Answer.objects.filter(text="Four.").count() == 1 and not Answer.objects.filter(text="Five.").exists()


def test_dry_run_counts_what_an_import_would_do_and_writes_nothing():
    # given: one of the three answers already there
    campaign = CampaignFactory()
    PromptFactory(campaign=campaign, external_id="q1")
    answers_import(campaign=campaign, data=jsonl({"external_id": "q1", "model": "gpt-x", "response": "Four."}))
    body = TWO_MODELS.replace(b'"external_id": "q2"', b'"external_id": "q2", "prompt": "New?"')
    before = written(campaign)
    # when
    result = answers_import(campaign=campaign, data=body, dry_run=True)
    # then
    assert (result.created, result.existing, result.lines, result.prompts_created, result.dry_run) == (2, 1, 3, 1, True)
    assert [(m.name, m.created, m.existing, m.new) for m in result.models] == [
        ("gpt-x", 1, 1, False), ("llama-y", 1, 0, True),
    ]
    assert written(campaign) == before == (1, 1, 1)


@pytest.mark.parametrize(
    "line, says",
    [
        ({"external_id": "q1", "response": "x"}, "'model' must be a non-empty string"),
        ({"external_id": "q1", "model": "  ", "response": "x"}, "'model' must be a non-empty string"),
        ({"external_id": "q1", "model": "m", "response": ""}, "'response' must be a non-empty string"),
        ({"external_id": "q1", "model": "m", "response": 3}, "'response' must be a non-empty string"),
        ({"model": "m", "response": "x"}, "name the prompt"),
        ({"external_id": "q1", "model": "m", "response": "x", "sample_index": -1}, "'sample_index' must be"),
        ({"external_id": "q1", "model": "m", "response": "x", "sample_index": True}, "'sample_index' must be"),
        ({"external_id": "q1", "model": "m", "response": "x", "sample_index": 40000}, "'sample_index' must be"),
        ({"external_id": "q1", "model": "m", "response": "x", "metadata": [1]}, "'metadata' must be an object"),
        ({"external_id": "q1", "model": "m", "response": "x", "score": 1}, "unknown fields ['score']"),
        ({"external_id": "gold:1", "model": "m", "response": "x"}, "may not start with 'gold:'"),
        ({"prompt": "", "model": "m", "response": "x"}, "'prompt' must be a non-empty string"),
        ({"external_id": "nope", "model": "m", "response": "x"}, "the campaign has no prompt 'nope'"),
        ({"external_id": "q1", "prompt": "Other text", "model": "m", "response": "x"}, "prompt 'q1' has other text"),
        ({"external_id": "q1", "model": "served", "response": "x"}, "model 'served' is an endpoint"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_written(line, says):
    # given: a good line, the bad one, a good line; an endpoint model "served"
    campaign = CampaignFactory()
    PromptFactory(campaign=campaign, external_id="q1", text="The text")
    ExternalModel.objects.create(campaign=campaign, name="served", kind=ExternalModel.Kind.ENDPOINT, api_key="sk-1")
    body = jsonl(
        {"external_id": "q1", "model": "good", "response": "fine"},
        line,
        {"prompt": "A new prompt", "model": "good", "response": "fine too"},
    )
    # when
    with pytest.raises(ValidationFailed) as caught:
        answers_import(campaign=campaign, data=body)
    # then: line 2 named, the detail says so, and neither prompt, model nor answer was written
    assert list(errors_of(caught)) == [2]
    assert says in errors_of(caught)[2], errors_of(caught)
    assert "nothing was imported" in caught.value.message and "Line 2" in caught.value.message
    assert written(campaign) == (1, 1, 0)


def test_the_same_answer_twice_with_other_text_names_both_lines():
    campaign = CampaignFactory()
    PromptFactory(campaign=campaign, external_id="q1")
    body = jsonl(
        {"external_id": "q1", "model": "m", "response": "One."},
        {"external_id": "q1", "model": "m", "response": "One.", "sample_index": 1},
        {"external_id": "q1", "model": "m", "response": "Two.", "sample_index": "0"},
    )
    with pytest.raises(ValidationFailed) as caught:
        answers_import(campaign=campaign, data=body)
    assert errors_of(caught) == {
        3: "answer of model 'm' to prompt 'q1' (sample 0) is already on line 1, with other text"
    }
    assert written(campaign) == (1, 0, 0)


def test_a_line_repeating_an_earlier_one_word_for_word_adds_nothing():
    campaign = CampaignFactory()
    line = {"prompt": "Why?", "model": "m", "response": "Because."}
    result = answers_import(campaign=campaign, data=jsonl(line, line, {**line, "sample_index": 1}))
    assert (result.created, result.existing, result.lines) == (2, 1, 3)
    assert [(m.created, m.existing) for m in result.models] == [(2, 1)]
    assert written(campaign) == (1, 1, 2)


def test_one_prompt_given_two_texts_in_the_file_names_the_first():
    campaign = CampaignFactory()
    body = jsonl(
        {"external_id": "p", "prompt": "One text", "model": "m", "response": "a"},
        {"external_id": "p", "model": "n", "response": "b"},
        {"external_id": "p", "prompt": "Another text", "model": "o", "response": "c"},
    )
    with pytest.raises(ValidationFailed) as caught:
        answers_import(campaign=campaign, data=body)
    assert errors_of(caught) == {3: "prompt 'p' has other text on line 1"}
    assert written(campaign) == (0, 0, 0)


def test_a_line_may_answer_a_prompt_that_a_later_line_creates(monkeypatch):
    # given: batches of 2 rows, and q answered on line 1 and given its text on line 5
    monkeypatch.setattr(answers_service, "BATCH", 2)
    campaign = CampaignFactory()
    body = jsonl(
        {"external_id": "q", "model": "a", "response": "first"},
        *({"external_id": f"x{i}", "prompt": f"filler {i}", "model": "a", "response": "f"} for i in range(3)),
        {"external_id": "q", "prompt": "The question", "model": "b", "response": "second"},
    )
    # when
    result = answers_import(campaign=campaign, data=body)
    # then
    assert (result.created, result.prompts_created) == (5, 4)
    q = Prompt.objects.get(campaign=campaign, external_id="q")
    assert q.text == "The question"
    assert sorted(q.answers.values_list("text", flat=True)) == ["first", "second"]


def test_batches_write_every_answer_once(monkeypatch):
    monkeypatch.setattr(answers_service, "BATCH", 7)
    campaign = CampaignFactory()
    body = jsonl(*({"prompt": f"q{i % 10}", "model": f"m{i % 3}", "response": f"r{i}", "sample_index": i // 30}
                   for i in range(60)))
    result = answers_import(campaign=campaign, data=body)
    assert (result.created, result.prompts_created) == (60, 10)
    assert written(campaign) == (10, 3, 60)
    assert answers_import(campaign=campaign, data=body).created == 0


def test_nul_and_lone_surrogates_in_any_text_are_stored_as_the_replacement_character():
    # PostgreSQL's text and jsonb refuse U+0000, UTF-8 a lone surrogate; the
    # model that wrote them may not care.
    campaign = CampaignFactory()
    body = jsonl({
        "messages": [{"role": "user", "content": "a\u0000b"}], "model": "m\u0000", "response": "x\u0000y\ud83d",
        "metadata": {"k\u0000": "v\u0000"}, "external_id": "e\u0000",
    })
    answers_import(campaign=campaign, data=body)
    answer = Answer.objects.get(prompt__campaign=campaign)
    assert answer.text == "x\ufffdy\ufffd" and answer.metadata == {"k\ufffd": "v\ufffd"}
    assert answer.external_model.name == "m\ufffd"
    assert answer.prompt.turns == [{"role": "user", "content": "a\ufffdb"}]
    assert answers_import(campaign=campaign, data=body).created == 0


def test_text_and_file_size_limits_are_the_prompt_imports(settings):
    campaign = CampaignFactory()
    settings.TEXT_MAX_CHARS = 10
    with pytest.raises(ValidationFailed) as caught:
        answers_import(campaign=campaign, data=jsonl({"prompt": "Short", "model": "m", "response": "x" * 11}))
    assert errors_of(caught) == {1: "'response' is 11 characters; the limit is 10"}
    settings.IMPORT_MAX_BYTES = 100
    with pytest.raises(ValidationFailed, match="the limit is 100"):
        answers_import(campaign=campaign, data=jsonl(*({"prompt": "Short", "model": "m", "response": "y"},) * 3))
    assert written(campaign) == (0, 0, 0)


def test_too_many_model_names_suggest_the_wrong_column(monkeypatch):
    monkeypatch.setattr(answers_service, "MAX_MODELS", 2)
    campaign = CampaignFactory()
    body = jsonl(*({"prompt": "q", "model": f"m{i}", "response": "r"} for i in range(3)))
    with pytest.raises(ValidationFailed) as caught:
        answers_import(campaign=campaign, data=body)
    assert list(errors_of(caught)) == [3] and "the right column" in errors_of(caught)[3]


def test_an_empty_file_holds_no_answers():
    with pytest.raises(ValidationFailed, match="no answers"):
        answers_import(campaign=CampaignFactory(), data=b"\n\n")


class _WatchedFile:
    """A binary file that records the longest piece any read returned."""

    def __init__(self, inner):
        self.inner, self.longest = inner, 0

    def _seen(self, data: bytes) -> bytes:
        self.longest = max(self.longest, len(data))
        return data

    def read(self, n=-1):
        return self._seen(self.inner.read(n))

    def readline(self, n=-1):
        return self._seen(self.inner.readline(n))

    def seek(self, *args):
        return self.inner.seek(*args)

    def tell(self):
        return self.inner.tell()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_the_file_is_read_a_line_at_a_time(tmp_path, settings, fmt):
    # given: a 2 MB file of 400 answers, the line limit 8 KB
    settings.IMPORT_MAX_LINE_BYTES = 8192
    campaign = CampaignFactory()
    path = tmp_path / f"answers.{fmt}"
    with path.open("w") as f:
        if fmt == "csv":
            f.write("external_id,prompt,model,response\n")
        for i in range(400):
            row = {"external_id": f"p{i}", "prompt": f"Question {i}?", "model": "m", "response": "x" * 5000}
            f.write(json.dumps(row) + "\n" if fmt == "jsonl" else ",".join(row.values()) + "\n")
    # when
    with path.open("rb") as raw:
        watched = _WatchedFile(raw)
        result = answers_import(campaign=campaign, data=watched, format=fmt)
    # then: every answer in, and no read ever returned more than a line
    assert result.created == 400
    assert 5000 < watched.longest <= settings.IMPORT_MAX_LINE_BYTES + 1


def test_memory_holds_a_batch_not_the_file(tmp_path, settings):
    # given: a 24 MB file of 6,000 answers of 4,000 characters
    import tracemalloc

    settings.IMPORT_MAX_BYTES = 64 * 1024 * 1024
    campaign = CampaignFactory()
    path = tmp_path / "answers.jsonl"
    with path.open("w") as f:
        for i in range(6000):
            f.write(json.dumps({"prompt": f"Question {i}?", "model": f"m{i % 2}", "response": f"{i} " + "y" * 4000}) + "\n")
    size = path.stat().st_size
    answers_import(campaign=CampaignFactory(), data=jsonl({"prompt": "warm", "model": "m", "response": "up"}))
    # when
    tracemalloc.start()
    try:
        with path.open("rb") as f:
            result = answers_import(campaign=campaign, data=f)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # then: all of it in, never holding more than a few batches' text (2
    # MB each; 8.8 MiB measured), where the file is 24 MB
    assert result.created == 6000
    assert peak < 6 * answers_service.BATCH_CHARS < size / 2, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB file"



@pytest.mark.django_db(transaction=True)
def test_imports_at_once_write_each_answer_and_prompt_once():
    # given: three uploads of one file of answers, and a prompt import of its
    # prompts, all at the same moment (threads, each its own connection)
    from annotate.services.prompts import prompts_import
    from tests.annotate.test_concurrency import run_threads

    campaign = CampaignFactory()
    lines = [{"external_id": f"p{i}", "prompt": f"Question {i}?", "model": f"m{m}", "response": f"r{i}.{m}"}
             for i in range(150) for m in range(2)]
    body = jsonl(*lines)
    prompts = jsonl(*({"external_id": f"p{i}", "prompt": f"Question {i}?"} for i in range(150)))

    def work(i):
        if i == 3:
            return prompts_import(campaign=campaign, data=prompts)
        return answers_import(campaign=campaign, data=body)

    # when
    results = run_threads(4, work)
    # then: nobody failed, and each answer and prompt is there once
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(r.created for r in results[:3]) == 300
    assert written(campaign) == (150, 2, 300)
