"""The sft stage of a train run (docs/training.md, "The sft stage"): it
fine-tunes the round's candidate on the accepted demonstrations not yet
learned, the policy step starts from what it made, the KL anchor is the base
model unless the campaign says sft, and it skips (saying why) when its
schedule or the data say so. Stages run in-process on the tiny model, as the
gpu worker runs them (training_stage_execute)."""
import io
import json
import uuid
import zipfile
from pathlib import Path

import pytest
from django.test import override_settings
from safetensors.numpy import load_file

from annotate.models import Campaign, Demonstration, PolicyVersion, Round, SFTModelVersion, TrainingRun
from annotate.selectors.demonstrations import demonstrations_untrained_ids
from annotate.training.runs import training_run_start
from rlhf.store import ModelStore

pytestmark = pytest.mark.django_db

TINY = {
    "sft": {"epochs": 3, "batch_size": 2, "lr": 1e-3, "max_length": 64, "log_every": 1},
    "reward": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "max_length": 64},
    "dpo": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "max_length": 64},
}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> str:
    from rlhf.tiny import build_tiny_model

    texts = [f"question {i}: what is {i} plus one? answer: {i + 1}." for i in range(200)]
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts, seed=0)


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "store"
    with override_settings(MODEL_STORE=str(root)):
        yield ModelStore(root)


def world(make_open_round, annotator, store, tiny_base, demonstrations: int, **campaign_fields) -> Round:
    """Round 0 of a DPO campaign on the tiny model (v0 in the store), every
    comparison rated, the first `demonstrations` of them with an accepted
    demonstration."""
    from tests.factories import ratings_bulk_create

    round_ = make_open_round(prompts=4, overlap=1, annotators=[annotator], training_config=TINY,
                             method=Campaign.Method.DPO, **campaign_fields)
    published = store.publish(tiny_base, f"campaign-{round_.campaign_id}/policy-v0")
    PolicyVersion.objects.filter(pk=round_.candidate_id).update(path=published.path, sha256=published.sha256)
    comparisons = list(round_.comparisons.order_by("pk"))
    ratings = ratings_bulk_create(
        {"comparison": c, "annotator": annotator, "choice": "A", "strength": 2, "idempotency_key": uuid.uuid4()}
        for c in comparisons
    )
    for i, (comparison, rating) in enumerate(zip(comparisons[:demonstrations], ratings)):
        text = f"answer: {i + 1}. that is all."
        Demonstration.objects.create(comparison=comparison, rating=rating, annotator=annotator, text=text,
                                     submitted_text=text, status=Demonstration.Status.ACCEPTED)
    return round_


def run_stages(run: TrainingRun, stages: tuple[str, ...]) -> TrainingRun:
    from annotate.training.executor import training_stage_execute

    for stage in stages:
        assert training_stage_execute(run_id=run.pk, stage=stage) is None
        run.refresh_from_db()
        assert run.stages[stage]["status"] == "succeeded", run.error
    return run


def unzipped(answer) -> dict[str, bytes]:
    archive = zipfile.ZipFile(io.BytesIO(b"".join(answer.streaming_content)))
    return {name: archive.read(name) for name in archive.namelist()}


def folder_files(folder: Path, prefix: str) -> dict[str, bytes]:
    return {f"{prefix}/{p.relative_to(folder).as_posix()}": p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def meta(version) -> dict:
    return json.loads((Path(version.path) / "meta.json").read_text())


def weights(version) -> dict:
    return load_file(str(Path(version.path) / "model.safetensors"))


def test_a_round_with_accepted_demonstrations_runs_sft_then_the_policy_starts_from_it_anchored_to_base(
    make_open_round, annotator, store, tiny_base, enqueued, ml_engineer_client
):
    # given: three accepted demonstrations, the campaign's defaults (every round, anchor base)
    round_ = world(make_open_round, annotator, store, tiny_base, demonstrations=3)
    demos = sorted(Demonstration.objects.values_list("pk", flat=True))
    # when
    run = training_run_start(campaign=round_.campaign)
    run = run_stages(run, ("snapshot", "sft", "reward", "policy"))
    # then: an SFT model from v0 on exactly those demonstrations, its snapshot recorded with its sha256
    sft = SFTModelVersion.objects.get(training_run=run)
    base = PolicyVersion.objects.get(campaign=round_.campaign, version=0)
    assert (sft.version, sft.start, sft.demonstration_ids) == (1, base, demos)
    assert run.sft_dataset_sha256 == sft.dataset_sha256 != ""
    store.verify(sft.dataset_path, sft.dataset_sha256)
    rows = [json.loads(line) for line in (Path(sft.dataset_path) / "conversations.jsonl").read_text().splitlines()]
    assert sorted(r["demonstration_id"] for r in rows) == demos
    assert all(r["messages"][-1]["role"] == "assistant" for r in rows)
    outputs = run.stages["sft"]["outputs"]
    assert outputs["sft_version"] == 1 and outputs["dataset_sha256"] == sft.dataset_sha256
    assert outputs["conversations"] == 3 and "sft/loss" in run.metrics and "eval/sft/loss" in run.metrics
    store.verify(sft.path, sft.sha256)
    sft_weights, base_weights = weights(sft), weights(base)
    assert any((sft_weights[k] != base_weights[k]).any() for k in base_weights)
    # then: the policy started from the SFT checkpoint, held to the base model
    policy = PolicyVersion.objects.get(training_run=run)
    assert (policy.version, policy.parent, policy.sft_model) == (1, base, sft)
    assert (run.stages["policy"]["outputs"]["start"], run.stages["policy"]["outputs"]["reference"]) == ("sft-v1", "base")
    assert (meta(policy)["parent"], meta(policy)["ref"]) == (sft.path, base.path)
    assert (meta(policy)["start"], meta(policy)["reference"]) == ("sft-v1", "base")
    # then: those demonstrations are learned now; the next round brings none new
    assert demonstrations_untrained_ids(campaign=round_.campaign) == []
    # then: an engineer takes the SFT checkpoint and its demonstrations out, byte for byte, verified first
    model_zip = ml_engineer_client.get(f"/api/sft-versions/{sft.pk}/download/")
    assert model_zip.status_code == 200 and model_zip["X-Checksum-SHA256"] == sft.sha256
    assert unzipped(model_zip) == folder_files(Path(sft.path), f"campaign-{round_.campaign_id}-sft-s1")
    data_zip = ml_engineer_client.get(f"/api/training-runs/{run.pk}/sft-dataset/")
    assert data_zip.status_code == 200 and data_zip["X-Checksum-SHA256"] == sft.dataset_sha256
    assert unzipped(data_zip) == folder_files(Path(sft.dataset_path), f"campaign-{round_.campaign_id}-run{run.pk}-sft-dataset")


def test_with_sft_anchor_sft_the_policy_step_is_held_to_the_sft_model(
    make_open_round, annotator, store, tiny_base, enqueued
):
    # given
    round_ = world(make_open_round, annotator, store, tiny_base, demonstrations=2,
                   sft_anchor=Campaign.SFTAnchor.SFT)
    # when
    run = run_stages(training_run_start(campaign=round_.campaign), ("snapshot", "sft", "reward", "policy"))
    # then
    sft, policy = SFTModelVersion.objects.get(training_run=run), PolicyVersion.objects.get(training_run=run)
    assert run.config["sft_plan"]["anchor"] == "sft"
    assert (meta(policy)["parent"], meta(policy)["ref"]) == (sft.path, sft.path)
    assert run.stages["policy"]["outputs"]["reference"] == "sft-v1"


def test_a_round_without_new_accepted_demonstrations_skips_sft_and_the_policy_starts_from_the_candidate(
    make_open_round, annotator, store, tiny_base, enqueued
):
    # given: a demonstration waiting for review is not training data
    round_ = world(make_open_round, annotator, store, tiny_base, demonstrations=1)
    Demonstration.objects.update(status=Demonstration.Status.PENDING)
    # when
    run = run_stages(training_run_start(campaign=round_.campaign), ("snapshot", "sft", "reward", "policy"))
    # then
    outputs = run.stages["sft"]["outputs"]
    assert outputs["skipped"] is True and "no accepted demonstrations" in outputs["reason"]
    assert not SFTModelVersion.objects.exists() and run.sft_dataset_sha256 == ""
    policy = PolicyVersion.objects.get(training_run=run)
    round_.candidate.refresh_from_db()
    assert policy.sft_model is None and meta(policy)["parent"] == round_.candidate.path
    assert run.stages["policy"]["outputs"]["start"] == "policy-v0"


@pytest.mark.parametrize(
    "campaign_fields, trigger, round_index, reason",
    [
        ({"sft_schedule": "every_round"}, None, 0, None),
        ({"sft_schedule": "every_round"}, False, 0, "sft: false"),
        ({"sft_schedule": "trigger"}, None, 0, "did not ask for it"),
        ({"sft_schedule": "trigger"}, True, 0, None),
        ({"sft_schedule": "every_n", "sft_every_n": 2}, None, 0, "next: round 1"),
        ({"sft_schedule": "every_n", "sft_every_n": 2}, None, 1, None),
        ({"sft_schedule": "every_n", "sft_every_n": 3}, None, 3, "next: round 5"),
        ({"sft_schedule": "every_n", "sft_every_n": 3}, True, 3, None),
        ({"sft_schedule": "every_n", "sft_every_n": 1}, None, 0, None),
    ],
)
def test_the_schedule_decides_which_rounds_fine_tune(
    make_open_round, annotator, enqueued, campaign_fields, trigger, round_index, reason
):
    from annotate.training.steps import _sft_decision
    from tests.factories import ratings_bulk_create

    # given: round 0 rated with one accepted demonstration; the run as started on round `round_index`
    round_ = make_open_round(prompts=2, overlap=1, annotators=[annotator], **campaign_fields)
    comparison = round_.comparisons.first()
    (rating,) = ratings_bulk_create([{"comparison": comparison, "annotator": annotator, "choice": "A",
                                      "strength": 2, "idempotency_key": uuid.uuid4()}])
    demo = Demonstration.objects.create(comparison=comparison, rating=rating, annotator=annotator, text="x",
                                        submitted_text="x", status=Demonstration.Status.ACCEPTED)
    run = training_run_start(campaign=round_.campaign, sft=trigger)
    Round.objects.filter(pk=round_.pk).update(index=round_index)
    run.refresh_from_db()
    # when
    ids, why = _sft_decision(run)
    # then
    if reason is None:
        assert (ids, why) == ([demo.pk], "")
    else:
        assert ids == [] and reason in why


def test_an_sft_model_no_policy_started_from_leaves_its_demonstrations_untrained(make_open_round, annotator):
    from tests.factories import ratings_bulk_create

    # given: an SFT model a cancelled run left (no policy version points at it)
    round_ = make_open_round(prompts=1, overlap=1, annotators=[annotator])
    comparison = round_.comparisons.first()
    (rating,) = ratings_bulk_create([{"comparison": comparison, "annotator": annotator, "choice": "A",
                                      "strength": 2, "idempotency_key": uuid.uuid4()}])
    demo = Demonstration.objects.create(comparison=comparison, rating=rating, annotator=annotator, text="x",
                                        submitted_text="x", status=Demonstration.Status.ACCEPTED)
    sft = SFTModelVersion.objects.create(campaign=round_.campaign, version=1, start=round_.candidate, path="p",
                                         sha256="0" * 64, demonstration_ids=[demo.pk])
    # then
    assert demonstrations_untrained_ids(campaign=round_.campaign) == [demo.pk]
    # when: a policy started from it
    PolicyVersion.objects.create(campaign=round_.campaign, version=1, parent=round_.candidate, path="q",
                                 sha256="1" * 64, sft_model=sft)
    # then
    assert demonstrations_untrained_ids(campaign=round_.campaign) == []


def test_the_campaign_sft_settings_and_the_sft_section_reach_the_run(open_round, annotator, ml_engineer_client,
                                                                   campaign_admin_client, enqueued):
    from tests.factories import ratings_bulk_create

    campaign = open_round.campaign
    ratings_bulk_create([{"comparison": open_round.comparisons.first(), "annotator": annotator, "choice": "A",
                          "strength": 2, "idempotency_key": uuid.uuid4()}])
    answer = campaign_admin_client.patch(
        f"/api/campaigns/{campaign.pk}/",
        {"sft_schedule": "every_n", "sft_every_n": 3, "sft_anchor": "sft",
         "training_config": {"sft": {"epochs": 2, "lr": 1e-4}}},
        format="json",
    )
    assert answer.status_code == 200, answer.content
    assert (answer.data["sft_schedule"], answer.data["sft_every_n"], answer.data["sft_anchor"]) == ("every_n", 3, "sft")
    answer = ml_engineer_client.post(f"/api/campaigns/{campaign.pk}/train/", {"sft": True}, format="json")
    assert answer.status_code == 202, answer.content
    assert answer.data["sft_dataset_sha256"] == ""  # taken by the sft stage, when it runs
    config = TrainingRun.objects.get().config
    assert config["sft"] == {"epochs": 2, "lr": 1e-4}
    assert config["sft_plan"] == {"schedule": "every_n", "every_n": 3, "anchor": "sft", "requested": True}


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"sft_schedule": "weekly"}, "sft_schedule"),
        ({"sft_every_n": 0}, "sft_every_n"),
        ({"sft_every_n": "two"}, "sft_every_n"),
        ({"sft_anchor": "reward"}, "sft_anchor"),
        ({"sft_schedule": "every_n", "training_config": {"sft": {"lr": -1}}}, "sft.lr"),
    ],
)
def test_bad_sft_settings_are_a_400_and_change_nothing(open_round, campaign_admin_client, fields, named):
    campaign = open_round.campaign
    before = Campaign.objects.filter(pk=campaign.pk).values().get()
    answer = campaign_admin_client.patch(f"/api/campaigns/{campaign.pk}/", fields, format="json")
    assert answer.status_code == 400
    assert set(answer.json()) >= {"error", "detail"} and named in json.dumps(answer.json())
    assert Campaign.objects.filter(pk=campaign.pk).values().get() == before


def test_a_bad_sft_flag_on_the_trigger_is_a_400_and_starts_nothing(open_round, annotator, ml_engineer_client,
                                                                   enqueued):
    from tests.factories import ratings_bulk_create

    ratings_bulk_create([{"comparison": open_round.comparisons.first(), "annotator": annotator, "choice": "A",
                          "strength": 2, "idempotency_key": uuid.uuid4()}])
    answer = ml_engineer_client.post(f"/api/campaigns/{open_round.campaign_id}/train/", {"sft": "yes"},
                                     format="json")
    assert answer.status_code == 400 and set(answer.json()) >= {"error", "detail"}
    assert "sft must be true, false or null" in answer.json()["detail"]
    open_round.refresh_from_db()
    assert open_round.status == Round.Status.COLLECTING and not TrainingRun.objects.exists()


def test_lineage_page_and_models_api_show_base_then_sft_then_policy(open_round, ml_engineer, client,
                                                                   ml_engineer_client):
    # given: v0 -> s1 (two demonstrations) -> v1
    campaign = open_round.campaign
    v0 = campaign.policy_versions.get(version=0)
    run = TrainingRun.objects.create(campaign=campaign, round=open_round, kind="train")
    sft = SFTModelVersion.objects.create(campaign=campaign, version=1, start=v0, path="/s", sha256="ab" * 32,
                                         training_run=run, dataset_sha256="cd" * 32, demonstration_ids=[4, 9],
                                         metrics={"eval/sft/loss": 1.25})
    PolicyVersion.objects.create(campaign=campaign, version=1, parent=v0, path="/p", sha256="12" * 32,
                                 training_run=run, sft_model=sft)
    # when
    client.force_login(ml_engineer)
    html = client.get(f"/console/campaigns/{campaign.pk}/lineage/").content.decode()
    body = ml_engineer_client.get(f"/api/campaigns/{campaign.pk}/models/").json()
    # then
    policy_row = html.split('<tr data-version="1">')[1].split("</tr>")[0]
    assert "v0" in policy_row and "sft s1" in policy_row
    sft_table = html.split('id="lineage-sft"')[1].split("</table>")[0]
    assert "s1" in sft_table and "<td>v0</td>" in sft_table and "cdcdcdcdcdcd" in sft_table
    assert "eval/sft/loss" in sft_table and f"run {run.pk}" in sft_table and "<td>2</td>" in sft_table
    assert [p["sft_model"] for p in body["policies"]] == [None, 1]
    assert [(s["version"], s["start"], s["demonstration_ids"]) for s in body["sft_models"]] == [(1, 0, [4, 9])]


def test_the_campaign_form_shows_and_saves_the_sft_settings_and_refuses_a_bad_one(open_round, campaign_admin, client):
    from frontend.console.campaigns import _campaign_values

    campaign = Campaign.objects.get(pk=open_round.campaign_id)
    client.force_login(campaign_admin)
    page = client.get(f"/console/campaigns/{campaign.pk}/").content.decode()
    assert 'name="sft_schedule"' in page and 'name="sft_every_n"' in page and 'name="sft_anchor"' in page
    values = {k: ("" if v is None else v) for k, v in _campaign_values(campaign).items()}
    values.pop("auto_train")
    values.update(sft_schedule="every_n", sft_every_n="4", sft_anchor="sft")
    answer = client.post(f"/console/campaigns/{campaign.pk}/", values)
    assert answer.status_code == 302, answer.content.decode()[:2000]
    campaign.refresh_from_db()
    assert (campaign.sft_schedule, campaign.sft_every_n, campaign.sft_anchor) == ("every_n", 4, "sft")
    values["sft_every_n"] = "0"
    answer = client.post(f"/console/campaigns/{campaign.pk}/", values)
    assert answer.status_code == 400 and 'id="err-sft_every_n"' in answer.content.decode()
    campaign.refresh_from_db()
    assert campaign.sft_every_n == 4


@pytest.mark.parametrize("flag, requested", [("--sft", True), ("--no-sft", False), (None, None)])
def test_the_train_command_passes_its_sft_flag(open_round, annotator, enqueued, flag, requested):
    from django.core.management import call_command

    from tests.factories import ratings_bulk_create

    ratings_bulk_create([{"comparison": open_round.comparisons.first(), "annotator": annotator, "choice": "A",
                          "strength": 2, "idempotency_key": uuid.uuid4()}])
    call_command("train", str(open_round.campaign_id), *([flag] if flag else []))
    assert TrainingRun.objects.get().config["sft_plan"]["requested"] is requested


@pytest.mark.parametrize("choice, requested", [("on", True), ("off", False), ("", None)])
def test_the_runs_page_train_form_passes_its_sft_choice(open_round, annotator, ml_engineer, client, enqueued,
                                                        choice, requested):
    from tests.factories import ratings_bulk_create

    ratings_bulk_create([{"comparison": open_round.comparisons.first(), "annotator": annotator, "choice": "A",
                          "strength": 2, "idempotency_key": uuid.uuid4()}])
    client.force_login(ml_engineer)
    url = f"/console/campaigns/{open_round.campaign_id}/runs/"
    assert 'name="sft"' in client.get(url).content.decode()
    answer = client.post(url, {"method": "rloo", "config": "{}", "sft": choice})
    assert answer.status_code == 302, answer.content.decode()[:1000]
    assert TrainingRun.objects.get().config["sft_plan"]["requested"] is requested


def test_a_skipped_sft_stage_says_so_on_the_run_page_with_its_reason(open_round, ml_engineer, client):
    run = TrainingRun.objects.create(
        campaign=open_round.campaign, round=open_round, kind="train", stage="reward", status="running",
        stages={"snapshot": {"status": "succeeded", "seconds": 0.2},
                "sft": {"status": "succeeded", "seconds": 0.01,
                        "outputs": {"skipped": True, "reason": "sft_schedule is trigger and no trigger asked"}},
                "reward": {"status": "running"}},
    )
    client.force_login(ml_engineer)
    html = client.get(f"/console/runs/{run.pk}/").content.decode()
    bar = html.split('data-stage="sft"')[1].split("</li>")[0]
    assert 'title="sft_schedule is trigger and no trigger asked"' in bar and ">skipped<" in bar
    snapshot_bar = html.split('data-stage="snapshot"')[1].split("</li>")[0]
    assert ">succeeded<" in snapshot_bar


@pytest.mark.parametrize("anchor, expected", [("base", "base"), ("sft", "sft-v1")])
def test_a_round_that_skipped_sft_keeps_the_anchor_its_candidate_descends_from(
    make_open_round, annotator, enqueued, anchor, expected
):
    from annotate.training.steps import _anchor
    from tests.factories import ratings_bulk_create, version_chain_rounds

    # given: v0 -> s1 -> v1, round 1 serving v1, trained with no new demonstrations
    rounds = version_chain_rounds(versions=2, prompts=1, annotators=[annotator], sft_anchor=anchor)
    v0, v1 = rounds[0].candidate, rounds[1].candidate
    sft = SFTModelVersion.objects.create(campaign=v0.campaign, version=1, start=v0, path="/s", sha256="ab" * 32)
    PolicyVersion.objects.filter(pk=v1.pk).update(sft_model=sft)
    ratings_bulk_create([{"comparison": rounds[1].comparisons.first(), "annotator": annotator, "choice": "A",
                          "strength": 2, "idempotency_key": uuid.uuid4()}])
    Round.objects.filter(pk=rounds[0].pk).update(status=Round.Status.DONE)
    run = training_run_start(campaign=v0.campaign)
    v1.refresh_from_db()
    # when
    label, record = _anchor(run, v1, None)
    # then
    assert label == expected and record == (sft if anchor == "sft" else v0)

