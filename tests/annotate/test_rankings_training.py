"""Rankings and aspects through the real training stages with a tiny model
(no worker): a loop campaign ranking 3 answers, with a rubric aspect and
aspect heads, rated through the rating API (rankings on its k-sets, a pair
with its aspect beside them); the snapshot stage writes ranking rows and
pair rows with aspects, and the reward stage (Plackett-Luce on the
rankings, a head per aspect) and the DPO policy step read them."""
import json
import uuid
from pathlib import Path

import pytest

from annotate.models import Comparison, PolicyVersion, Prompt, Rating, RewardModelVersion, TrainingRun
from annotate.training import steps
from annotate.training.reporter import Reporter
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db

ASPECTS = [{"name": "correctness", "question": "Which is correct?", "key": "c"}]


@pytest.fixture
def tiny_model(tmp_path_factory) -> str:
    from rlhf.tiny import build_tiny_model

    texts = ["Why is the sky blue?", "Name a fruit.", "Rayleigh scattering.", "A banana."] * 20
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts, seed=0)


def test_rankings_and_aspect_pairs_train_the_reward_model_and_dpo(tiny_model, settings, tmp_path, annotator,
                                                                    annotator_client):
    settings.MODEL_STORE = str(tmp_path / "store")
    config = {"method": "dpo", "generate": {"max_new_tokens": 4}, "reward": {"epochs": 1, "batch_size": 4},
              "dpo": {"epochs": 1, "batch_size": 4}}
    campaign = CampaignFactory(base_model=tiny_model, rank_k=3, comparisons_per_round=3, overlap=1,
                               annotators=[annotator], aspects=ASPECTS, aspect_training="heads",
                               aspect_weights={"overall": 1.0, "correctness": 0.5}, training_config=config)
    prompts = Prompt.objects.bulk_create(
        Prompt(campaign=campaign, external_id=f"q{i}", text=text)
        for i, text in enumerate(["Why is the sky blue?", "Name a fruit.", "What is rain?"])
    )
    bootstrap = TrainingRun.objects.create(campaign=campaign, kind=TrainingRun.Kind.BOOTSTRAP, config=config)
    steps.stage_import(bootstrap, Reporter(bootstrap, "import"))
    steps.stage_generate_round0(bootstrap, Reporter(bootstrap, "generate"))
    steps.stage_open_round0(bootstrap, Reporter(bootstrap, "open"))
    round0 = campaign.rounds.get(index=0)
    k_sets = list(round0.comparisons.order_by("pk"))
    assert len(k_sets) == 3 and all(len(c.answers) == 3 for c in k_sets)
    # Distinct texts, whatever the tiny model sampled (the dedup has its own check below).
    for comparison in k_sets:
        for i, pk in enumerate(comparison.answers):
            comparison.prompt.answers.filter(pk=pk).update(text=f"answer {i} to {comparison.prompt.external_id}")
    # A pair beside the k-sets (as a gold pair is), judged with its aspect.
    pair = Comparison.objects.create(round=round0, prompt=prompts[0], response_a_id=k_sets[0].answers[2],
                                     response_b_id=k_sets[0].answers[1], candidate_is_a=None)
    rated = 0
    while (leased := annotator_client.post(f"/api/campaigns/{campaign.pk}/next/")).status_code == 200:
        body = {"comparison": leased.data["comparison"], "idempotency_key": str(uuid.uuid4())}
        if leased.data["answers"]:
            body["ranking"] = [[2], [1, 3]] if rated % 2 else [[3], [1], [2]]
        else:
            body.update(choice="A", strength=2, aspects={"correctness": "B"})
        answer = annotator_client.post("/api/ratings/", body, format="json")
        assert answer.status_code == 201, answer.content
        rated += 1
    assert rated == 4 and Rating.objects.filter(comparison=pair, aspects={"correctness": "B"}).exists()

    train = TrainingRun.objects.create(campaign=campaign, round=round0, kind=TrainingRun.Kind.TRAIN, config=config)
    steps.stage_snapshot(train, Reporter(train, "snapshot"))
    rows = steps._dataset_rows(train)
    rankings = [r for r in rows if "ranking" in r]
    [pair_row] = [r for r in rows if "chosen" in r]
    assert len(rankings) == 3 and all(sum(len(g) for g in r["ranking"]) == 3 for r in rankings)
    assert pair_row["aspects"] == {"correctness": -1}  # the chosen answer (A) is worse on it

    steps.stage_reward(train, Reporter(train, "reward"))
    reward = RewardModelVersion.objects.get(training_run=train)
    meta = json.loads((Path(reward.path) / "meta.json").read_text())
    assert meta["n_rankings"] > 0 and meta["aspect_heads"]["names"] == ["overall", "correctness"]
    assert meta["aspect_heads"]["weights"] == [1.0, 0.5]

    steps.stage_policy(train, Reporter(train, "policy"))
    policy = PolicyVersion.objects.get(training_run=train)
    meta = json.loads((Path(policy.path) / "meta.json").read_text())
    assert meta["n_rankings"] > 0 and meta["n_pairs"] == 1


def test_a_repeated_text_in_a_ranking_keeps_its_best_place(make_open_round, annotator):
    from annotate.selectors.training import ranking_rows_iter
    from rlhf.data import validate_preference_rows
    from tests.factories import ratings_bulk_create

    round_ = make_open_round(prompts=1, overlap=1, rank_k=4, annotators=[annotator])
    comparison = round_.comparisons.get()
    texts = ["same", "other", "same", "third"]  # answers 1 and 3 are the same text
    for pk, text in zip(comparison.answers, texts):
        comparison.prompt.answers.filter(pk=pk).update(text=text)
    ratings_bulk_create([{"comparison": comparison, "annotator": annotator, "choice": "ranking",
                          "ranking": [[2], [1], [4, 3]]}])
    [row] = ranking_rows_iter(campaign=round_.campaign)
    assert row["ranking"] == [["other"], ["same"], ["third"]]
    validate_preference_rows([row])
