"""What campaign admins call: create campaigns and import prompts. Every bad
input is a 4xx that says what was wrong (with the line for imports) and
writes nothing (docs/architecture.md, invariant 6)."""
import json

import pytest
from django.test import override_settings

from annotate.models import Campaign, Prompt
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db

NDJSON = "application/x-ndjson"


def jsonl(*objects) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objects)


def import_url(campaign) -> str:
    return f"/api/campaigns/{campaign.pk}/prompts/import/"


@pytest.fixture
def draft_campaign():
    return CampaignFactory(status=Campaign.Status.DRAFT)


# --- Campaign create ------------------------------------------------------


def test_campaign_create_by_an_admin_stores_the_campaign(campaign_admin_client, campaign_admin):
    # when
    answer = campaign_admin_client.post(
        "/api/campaigns/create/",
        {"name": "helpfulness", "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "overlap": 3,
         "training_config": {"reward": {"epochs": 2}}},
        format="json",
    )
    # then
    assert answer.status_code == 201, answer.content
    campaign = Campaign.objects.get(pk=answer.data["id"])
    assert (campaign.name, campaign.overlap, campaign.status) == ("helpfulness", 3, Campaign.Status.DRAFT)
    assert campaign.training_config == {"reward": {"epochs": 2}}
    assert campaign.created_by == campaign_admin


@pytest.mark.parametrize(
    "training_config, named",
    [
        ({"reward": {"learning_rat": 1e-4}}, "reward.learning_rat"),
        ({"rewards": {}}, "rewards"),
        ({"reward": {"epochs": "two"}}, "reward.epochs"),
        ({"reward": {"trainable_layers": -1}}, "reward.trainable_layers must be 0 or more"),
        ({"reward": {"trainable_layers": 4, "lora_r": 8}}, "trainable_layers or lora_r, not both"),
        ({"reward": {"lr": -1e-5}}, "reward.lr must be more than 0"),
        ({"reward": {"eval_fraction": 1.0}}, "reward.eval_fraction must be in [0, 1)"),
        ({"policy": {"k": 1}}, "policy.k must be 2 or more"),
        ({"policy": {"generation_backend": "vlm"}}, "policy.generation_backend must be one of"),
        ({"dpo": {"label_smoothing": 0.5}}, "dpo.label_smoothing must be in [0, 0.5)"),
        ({"generate": {"top_p": 0}}, "generate.top_p must be in (0, 1]"),
        ([1, 2], "training_config"),
    ],
)
def test_campaign_create_rejects_a_bad_training_config_naming_the_key(campaign_admin_client, training_config, named):
    # when
    answer = campaign_admin_client.post(
        "/api/campaigns/create/", {"name": "x", "base_model": "m", "training_config": training_config}, format="json"
    )
    # then
    assert answer.status_code == 400
    assert named in answer.data["detail"]
    assert Campaign.objects.count() == 0


def test_campaign_create_rejects_a_duplicate_name(campaign_admin_client):
    # given
    CampaignFactory(name="taken")
    # when
    answer = campaign_admin_client.post("/api/campaigns/create/", {"name": "taken", "base_model": "m"}, format="json")
    # then
    assert answer.status_code == 409
    assert "taken" in answer.data["detail"]
    assert Campaign.objects.count() == 1


# --- Prompt import --------------------------------------------------------


def test_prompt_import_by_an_admin_creates_text_and_chat_prompts(campaign_admin_client, draft_campaign):
    # given
    body = jsonl(
        {"external_id": "a", "prompt": "Why is the sky blue?"},
        {"external_id": "b", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
         "metadata": {"source": "test"}},
        {"prompt": "no id: identified by content"},
    )
    # when
    answer = campaign_admin_client.post(import_url(draft_campaign), body, content_type=NDJSON)
    # then
    assert answer.status_code == 200, answer.content
    assert answer.data == {"created": 3, "existing": 0, "lines": 3}
    chat = Prompt.objects.get(campaign=draft_campaign, external_id="b")
    assert chat.turns[-1] == {"role": "user", "content": "Hi"} and chat.metadata == {"source": "test"}


def test_prompt_import_accepts_a_multipart_file(campaign_admin_client, draft_campaign):
    # given
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("prompts.jsonl", jsonl({"external_id": "a", "prompt": "hi"}))
    # when
    answer = campaign_admin_client.post(import_url(draft_campaign), {"file": upload}, format="multipart")
    # then
    assert answer.status_code == 200
    assert Prompt.objects.filter(campaign=draft_campaign).count() == 1


def test_prompt_import_is_idempotent_on_external_id(campaign_admin_client, draft_campaign):
    # given
    body = jsonl({"external_id": "a", "prompt": "one"}, {"external_id": "b", "prompt": "two"}, {"prompt": "three"})
    assert campaign_admin_client.post(import_url(draft_campaign), body, content_type=NDJSON).data["created"] == 3
    # when
    again = campaign_admin_client.post(import_url(draft_campaign), body, content_type=NDJSON)
    # then
    assert again.status_code == 200
    assert again.data == {"created": 0, "existing": 3, "lines": 3}
    assert Prompt.objects.count() == 3


def test_prompt_import_of_an_unknown_campaign_is_404(campaign_admin_client):
    answer = campaign_admin_client.post("/api/campaigns/999999/prompts/import/", jsonl({"prompt": "x"}), content_type=NDJSON)
    assert answer.status_code == 404


def valid(n: int) -> bytes:
    return json.dumps({"external_id": f"ok{n}", "prompt": f"fine prompt {n}"}).encode()


@pytest.mark.parametrize(
    "bad_line, says",
    [
        (b'{"external_id": "x", "prompt": "unterminated', "not valid JSON"),
        (b'{"external_id": "x", "prompt": NaN}', "NaN"),
        (b'{"external_id": "x", "prompt": Infinity}', "Infinity"),
        (b'{"external_id": "x", "prompt": "caf\xe9"}', "UTF-8"),
        (b'["a list"]', "JSON object"),
        (b'{"external_id": "x"}', "exactly one of"),
        (b'{"external_id": "x", "prompt": "hi", "colour": "red"}', "colour"),
        (b'{"external_id": "x", "messages": [{"role": "robot", "content": "hi"}]}', "role"),
        (b'{"external_id": "x", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}',
         "last message"),
        (b'{"external_id": "ok1", "prompt": "same id as line 1"}', "repeats line 1"),
    ],
)
def test_prompt_import_with_one_bad_line_imports_nothing_and_names_the_line(
    campaign_admin_client, draft_campaign, bad_line, says
):
    # given: valid lines around one bad line 3
    body = b"\n".join([valid(1), valid(2), bad_line, valid(4)]) + b"\n"
    # when
    answer = campaign_admin_client.post(import_url(draft_campaign), body, content_type=NDJSON)
    # then
    assert answer.status_code == 400
    assert "Line 3" in answer.data["detail"]
    assert says in answer.data["detail"]
    assert answer.data["errors"][0]["line"] == 3
    assert Prompt.objects.count() == 0


@override_settings(TEXT_MAX_CHARS=20)
@pytest.mark.parametrize(
    "line",
    [
        {"external_id": "long", "prompt": "x" * 21},
        {"external_id": "long", "messages": [{"role": "system", "content": "x" * 15}, {"role": "user", "content": "y" * 6}]},
    ],
)
def test_prompt_import_rejects_text_over_the_length_limit(campaign_admin_client, draft_campaign, line):
    # given
    body = jsonl({"external_id": "short", "prompt": "x" * 20}, line)
    # when
    answer = campaign_admin_client.post(import_url(draft_campaign), body, content_type=NDJSON)
    # then
    assert answer.status_code == 400
    assert "Line 2" in answer.data["detail"] and "the limit is 20" in answer.data["detail"]
    assert Prompt.objects.count() == 0


@override_settings(IMPORT_MAX_BYTES=100)
def test_prompt_import_rejects_a_file_over_the_size_limit(campaign_admin_client, draft_campaign):
    # given
    body = jsonl(*({"external_id": f"p{i}", "prompt": "a short prompt"} for i in range(5)))
    assert len(body) > 100
    # when
    answer = campaign_admin_client.post(import_url(draft_campaign), body, content_type=NDJSON)
    # then
    assert answer.status_code == 400
    assert "the limit is 100" in answer.data["detail"]
    assert Prompt.objects.count() == 0


def test_prompt_import_rejects_an_empty_file(campaign_admin_client, draft_campaign):
    answer = campaign_admin_client.post(import_url(draft_campaign), b"\n\n", content_type=NDJSON)
    assert answer.status_code == 400
    assert "no prompts" in answer.data["detail"]
    assert Prompt.objects.count() == 0


def test_prompt_import_without_a_body_or_file_says_how_to_send_one(campaign_admin_client, draft_campaign):
    answer = campaign_admin_client.post(import_url(draft_campaign), {}, format="json")
    assert answer.status_code in (400, 415)
    assert Prompt.objects.count() == 0


# --- Annotator pool and start ---------------------------------------------


def test_campaign_annotators_add_rejects_users_without_the_annotator_role(
    campaign_admin_client, draft_campaign, annotator, ml_engineer
):
    # when
    answer = campaign_admin_client.post(
        f"/api/campaigns/{draft_campaign.pk}/annotators/", {"usernames": [annotator.username, ml_engineer.username]},
        format="json",
    )
    # then
    assert answer.status_code == 400
    assert ml_engineer.username in answer.data["detail"]
    assert draft_campaign.annotators.count() == 0


def test_campaign_annotators_add_puts_annotators_in_the_pool(campaign_admin_client, draft_campaign, annotator):
    answer = campaign_admin_client.post(
        f"/api/campaigns/{draft_campaign.pk}/annotators/", {"usernames": [annotator.username]}, format="json"
    )
    assert answer.status_code == 200
    assert list(draft_campaign.annotators.all()) == [annotator]


def test_campaign_start_without_prompts_is_400_and_leaves_the_campaign_a_draft(campaign_admin_client, draft_campaign):
    answer = campaign_admin_client.post(f"/api/campaigns/{draft_campaign.pk}/start/")
    assert answer.status_code == 400
    assert "import prompts" in answer.data["detail"]
    draft_campaign.refresh_from_db()
    assert draft_campaign.status == Campaign.Status.DRAFT
    assert draft_campaign.training_runs.count() == 0
