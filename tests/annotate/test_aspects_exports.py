"""Aspects out of the platform: training rows carry {"aspects": {name: 1 |
-1 | 0}} for their chosen answer (the contract rlhf/ reads), preference
exports are built from one aspect or the weighted combination, ratings
exports carry a column per aspect, and the reward stage's config gets the
campaign's aspects when it trains heads."""
import csv
import io
from types import SimpleNamespace
import json
from pathlib import Path

import pytest

from annotate.models import Campaign, Export, Rating, Role
from annotate.selectors.training import preference_rows_iter, reward_aspect_settings
from rlhf.configs import RewardConfig, config_errors, from_dict
from tests.factories import open_round, ratings_bulk_create

pytestmark = pytest.mark.django_db

ASPECTS = [
    {"name": "correctness", "question": "Which answer is more correct?", "key": "c"},
    {"name": "safety", "question": "Which answer is safer?", "key": "f"},
]
# Per comparison: (overall choice, correctness, safety); None = not judged.
JUDGED = [
    ("A", "A", "B"),  # overall A; correctness agrees; safety says B
    ("B", "A", "same"),  # overall B, but A is more correct
    ("tie", "B", None),  # no overall pair; correctness B; safety not judged
    ("both_bad", "same", "A"),
]


@pytest.fixture(autouse=True)
def export_dir(settings, tmp_path):
    settings.EXPORT_DIR = str(tmp_path / "exports")


@pytest.fixture
def judged(make_user):
    rater = make_user(Role.ANNOTATOR, username="rater")
    round_ = open_round(prompts=4, overlap=1, annotators=[rater], aspects=ASPECTS,
                        aspect_weights={"overall": 1.0, "correctness": 2.0, "safety": 0.5})
    comparisons = list(round_.comparisons.select_related("response_a", "response_b").order_by("pk"))
    rows = []
    for c, (choice, correctness, safety) in zip(comparisons, JUDGED):
        aspects = {k: v for k, v in (("correctness", correctness), ("safety", safety)) if v is not None}
        rows.append({"comparison": c, "annotator": rater, "choice": choice,
                     "strength": 3 if choice in "AB" else None, "aspects": aspects})
    ratings_bulk_create(rows)
    return round_.campaign, comparisons


def texts(c, a_wins: bool) -> tuple[str, str]:
    return (c.response_a.text, c.response_b.text) if a_wins else (c.response_b.text, c.response_a.text)


def test_training_rows_carry_aspects_relative_to_the_chosen_answer(judged):
    campaign, (c1, c2, _, _) = judged
    rows = list(preference_rows_iter(campaign=campaign))
    assert len(rows) == 2  # the overall A and B; tie and both bad make no pair
    first, second = rows
    assert (first["chosen"], first["rejected"]) == texts(c1, True)
    assert first["aspects"] == {"correctness": 1, "safety": -1}
    assert (second["chosen"], second["rejected"]) == texts(c2, False)
    assert second["aspects"] == {"correctness": -1, "safety": 0}  # A was more correct; B was chosen
    assert first["margin"] == 1.0


def test_training_rows_of_a_campaign_without_aspects_have_no_aspects_key(judged):
    campaign, _ = judged
    Campaign.objects.filter(pk=campaign.pk).update(aspects=[])
    campaign.refresh_from_db()
    assert all("aspects" not in row for row in preference_rows_iter(campaign=campaign))


def download(client, export_id: int) -> bytes:
    answer = client.get(f"/api/exports/{export_id}/download/")
    assert answer.status_code == 200
    return b"".join(answer.streaming_content)


def test_preference_export_from_one_aspect_round_trips(judged, ml_engineer_client):
    campaign, (c1, c2, c3, c4) = judged
    # when: the aspect given as a query parameter
    answer = ml_engineer_client.post(f"/api/campaigns/{campaign.pk}/exports/?aspect=correctness",
                                     {"kind": "preferences"}, format="json")
    # then
    assert answer.status_code == 201, answer.content
    assert answer.data["aspect"] == "correctness" and answer.data["rows"] == 3
    rows = [json.loads(line) for line in download(ml_engineer_client, answer.data["id"]).splitlines()]
    # c1 A, c2 A, c3 B on correctness; c4 "same" makes no pair.
    assert [(r["chosen"], r["rejected"]) for r in rows] == [texts(c1, True), texts(c2, True), texts(c3, False)]
    assert [r["aspects"]["correctness"] for r in rows] == [1, 1, 1]
    assert rows[0]["aspects"]["safety"] == -1 and rows[1]["aspects"]["safety"] == 0
    assert "safety" not in rows[2]["aspects"]
    assert all(r["margin"] == 0.0 for r in rows)
    assert Export.objects.get(pk=answer.data["id"]).aspect == "correctness"


def test_preference_export_from_the_combination(judged, ml_engineer_client):
    campaign, (c1, c2, c3, c4) = judged
    answer = ml_engineer_client.post(f"/api/campaigns/{campaign.pk}/exports/",
                                     {"kind": "preferences", "aspect": "combined"}, format="json")
    assert answer.status_code == 201, answer.content
    rows = [json.loads(line) for line in download(ml_engineer_client, answer.data["id"]).splitlines()]
    # A's total with overall 1, correctness 2, safety 0.5 (A +1, B -1, same/tie/both bad 0):
    # c1: 1 + 2 - 0.5 = 2.5 -> A; c2: -1 + 2 + 0 = 1 -> A; c3: 0 - 2 = -2 -> B; c4: 0 + 0 + 0.5 -> A.
    assert [(r["chosen"], r["rejected"]) for r in rows] == [
        texts(c1, True), texts(c2, True), texts(c3, False), texts(c4, True)]


@pytest.mark.parametrize(
    "body, words",
    [({"kind": "preferences", "aspect": "helpfulness"}, "has no aspect 'helpfulness'"),
     ({"kind": "ratings", "format": "csv", "aspect": "correctness"}, "preferences exports only")],
)
def test_export_with_a_bad_aspect_is_a_400_and_writes_nothing(judged, ml_engineer_client, body, words, settings):
    campaign, _ = judged
    answer = ml_engineer_client.post(f"/api/campaigns/{campaign.pk}/exports/", body, format="json")
    assert answer.status_code == 400
    assert words in answer.data["detail"]
    assert not Export.objects.exists()
    assert not list(Path(settings.EXPORT_DIR).glob("**/*.*"))


def test_ratings_export_has_a_column_per_aspect(judged, ml_engineer_client):
    campaign, _ = judged
    answer = ml_engineer_client.post(f"/api/campaigns/{campaign.pk}/exports/",
                                     {"kind": "ratings", "format": "csv"}, format="json")
    assert answer.status_code == 201, answer.content
    table = list(csv.DictReader(io.StringIO(download(ml_engineer_client, answer.data["id"]).decode())))
    assert [(r["choice"], r["aspect_correctness"], r["aspect_safety"]) for r in table] == [
        ("A", "A", "B"), ("B", "A", "same"), ("tie", "B", ""), ("both_bad", "same", "A")]


def test_reward_config_gets_the_aspects_only_when_the_campaign_trains_heads(judged):
    campaign, _ = judged
    assert reward_aspect_settings(campaign) == {}  # aspect_training "overall"
    campaign.aspect_training = Campaign.AspectTraining.HEADS
    settings = reward_aspect_settings(campaign)
    config = from_dict(RewardConfig, {"epochs": 2, **settings})
    assert config.aspects == ["correctness", "safety"]
    assert config.aspect_weights == {"overall": 1.0, "correctness": 2.0, "safety": 0.5}
    assert config_errors({"reward": {"aspects": config.aspects, "aspect_weights": config.aspect_weights}}) == []
    assert RewardConfig().aspects == [] and RewardConfig().aspect_weights == {}


@pytest.mark.parametrize("training, expected", [("heads", ["correctness", "safety"]), ("overall", [])])
def test_the_reward_stage_gives_train_reward_the_campaign_aspects(judged, monkeypatch, settings, tmp_path,
                                                                  training, expected):
    """The stage's wiring: what train_reward receives (stopped there, before any model loads)."""
    import rlhf.reward
    from annotate.models import TrainingRun
    from annotate.training import steps

    campaign, _ = judged
    Campaign.objects.filter(pk=campaign.pk).update(aspect_training=training)
    campaign.refresh_from_db()
    run = TrainingRun.objects.create(campaign=campaign, kind=TrainingRun.Kind.TRAIN,
                                     config={"reward": {"epochs": 2, "aspects": ["ignored"]}})
    settings.MODEL_STORE = str(tmp_path / "store")
    seen = {}

    class Stop(Exception):
        pass

    def fake_train_reward(config, rows, *args, **kwargs):
        seen["config"], seen["rows"] = config, rows
        raise Stop

    monkeypatch.setattr(rlhf.reward, "train_reward", fake_train_reward)
    monkeypatch.setattr(steps, "_dataset_rows", lambda run: list(preference_rows_iter(campaign=run.campaign)))
    monkeypatch.setattr(steps, "_base_version", lambda run: None)
    monkeypatch.setattr(steps, "_verified", lambda version: "base-model-folder")
    with pytest.raises(Stop):
        steps.stage_reward(run, reporter=SimpleNamespace(metrics=None, progress=None))
    config = seen["config"]
    assert config.epochs == 2
    if training == "heads":
        assert config.aspects == expected
        assert config.aspect_weights == {"overall": 1.0, "correctness": 2.0, "safety": 0.5}
    else:
        assert config.aspects == ["ignored"]  # the training_config's own, untouched with "overall"
    assert seen["rows"][0]["aspects"] == {"correctness": 1, "safety": -1}
