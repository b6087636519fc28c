"""SFT models as the console and the API show them, beside the policy and
reward versions (issue 18): the models page's SFT table and the policies
made from SFT models, the leaderboard's mark on them, the lineage's
downloads, and the SFT checkpoint's download refused when it fails its
sha256. (The sft stage itself: test_sft_stage.py, whose first test also
downloads a real SFT checkpoint and its snapshot.)"""
import re
from pathlib import Path

import pytest

from annotate.models import PolicyVersion, Role, SFTModelVersion, TrainingRun
from tests.annotate.test_sft_stage import store  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db


def test_a_tampered_sft_checkpoint_is_refused_with_409_and_a_run_without_sft_snapshot_is_a_404(
    open_round, store, tmp_path, ml_engineer_client
):
    # given: s1 in the store, then one of its files changed
    src = tmp_path / "sft-src"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"good weights")
    published = store.publish(src, f"campaign-{open_round.campaign_id}/sft-run1")
    campaign = open_round.campaign
    run = TrainingRun.objects.create(campaign=campaign, round=open_round, kind="train")
    sft = SFTModelVersion.objects.create(campaign=campaign, version=1, start=campaign.policy_versions.get(version=0),
                                         path=published.path, sha256=published.sha256, training_run=run)
    (Path(published.path) / "model.safetensors").write_bytes(b"evil weights")
    # when
    refused = ml_engineer_client.get(f"/api/sft-versions/{sft.pk}/download/")
    no_snapshot = ml_engineer_client.get(f"/api/training-runs/{run.pk}/sft-dataset/")
    # then: the documented error shape, and not one byte of the folder
    assert refused.status_code == 409 and not refused.streaming
    assert refused.json()["error"] == "conflict" and "failed its sha256 check" in refused.json()["detail"]
    assert no_snapshot.status_code == 404 and "no demonstrations snapshot" in no_snapshot.json()["detail"]


def test_the_models_page_shows_sft_models_and_the_policies_made_from_them(open_round, ml_engineer, client):
    # given: v0 -> s1 (two demonstrations) -> v1
    campaign = open_round.campaign
    v0 = campaign.policy_versions.get(version=0)
    run = TrainingRun.objects.create(campaign=campaign, round=open_round, kind="train")
    sft = SFTModelVersion.objects.create(campaign=campaign, version=1, start=v0, path="/s", sha256="ab" * 32,
                                         training_run=run, dataset_sha256="cd" * 32, demonstration_ids=[4, 9],
                                         metrics={"eval/sft/loss": 1.25, "sft/loss": 0.5, "sft/tokens_per_s": 900.0})
    PolicyVersion.objects.create(campaign=campaign, version=1, parent=v0, path="/p", sha256="12" * 32,
                                 training_run=run, sft_model=sft)
    # when
    client.force_login(ml_engineer)
    html = client.get(f"/console/campaigns/{campaign.pk}/models/").content.decode()
    # then: the policy says it went through s1; s1 has its start, demonstrations, snapshot and metrics
    policy_row = html.split('id="policy-versions"')[1].split('<tr data-version="1">')[1].split("</tr>")[0]
    assert "v0" in policy_row and "sft s1" in policy_row
    table = html.split('id="sft-versions"')[1].split("</table>")[0]
    header, row = table.split("</thead>")
    assert "<code>eval/sft/loss</code>" in header and "<code>sft/loss</code>" in header
    assert "<td>s1</td><td>v0</td>" in row and ">2</td>" in row and "cdcdcdcdcdcd" in row
    assert "1.25" in row and "sft/tokens_per_s" in row
    # and the lineage page offers the SFT checkpoint and its snapshot as downloads
    lineage = client.get(f"/console/campaigns/{campaign.pk}/lineage/").content.decode()
    assert f"/api/sft-versions/{sft.pk}/download/" in lineage
    assert f"/api/training-runs/{run.pk}/sft-dataset/" in lineage


def test_the_leaderboard_says_which_policy_versions_went_through_an_sft_model(
    make_user, ml_engineer, client, api_client_for
):
    from tests.factories import loop_campaign_with_history

    # given: rounds of v0, v1, v2 rated; v1's step started from s1
    campaign = loop_campaign_with_history([make_user(Role.ANNOTATOR) for _ in range(2)])
    v0, v1 = (campaign.policy_versions.get(version=n) for n in (0, 1))
    sft = SFTModelVersion.objects.create(campaign=campaign, version=1, start=v0, path="/s", sha256="ab" * 32,
                                         demonstration_ids=[1])
    PolicyVersion.objects.filter(pk=v1.pk).update(sft_model=sft)
    # when
    client.force_login(ml_engineer)
    html = client.get(f"/console/campaigns/{campaign.pk}/models/").content.decode()
    # then
    board = html.split('id="leaderboard-table"')[1].split("</table>")[0]
    rows = {m: row for m, row in re.findall(r'<tr data-model="([^"]+)">(.*?)</tr>', board, re.S)}
    assert {"v0", "v1", "v2"} <= set(rows)
    assert "via sft s1" in rows["v1"] and "via sft" not in rows["v0"] + rows["v2"]
    # and so does the leaderboard API
    answer = api_client_for(ml_engineer).get(f"/api/campaigns/{campaign.pk}/leaderboard/?resamples=0")
    assert answer.status_code == 200, answer.content
    marks = {m["name"]: m["sft_version"] for m in answer.data["models"]}
    assert (marks["v0"], marks["v1"], marks["v2"]) == (None, 1, None)
