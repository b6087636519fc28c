"""Reward aspect heads and ranking rows (issue 19): the rows' checks, the
checkpoint's one score being the combination, per-aspect metrics, ranking
rows trained with Plackett–Luce (packed = padded), and DPO on rankings."""

import json
from pathlib import Path

import pytest
import torch
from conftest import separable_pairs

from rlhf.configs import RewardConfig, config_errors
from rlhf.data import validate_preference_rows


def contrarian_rows():
    """The overall choice is "yes ..."; the aspect "contrarian" prefers the other answer on every row,
    "terse" is rated on some rows only, "same" on the rest."""
    rows = separable_pairs()
    for i, r in enumerate(rows):
        r["aspects"] = {"contrarian": -1, **({"terse": 0} if i % 2 else {})}
    return rows


def ranking_rows(n_prompts=30, seed=0):
    """Three answers per prompt, "yes" best, "maybe" and "no" tied below it on odd prompts."""
    out = []
    for r in separable_pairs(n_prompts, 2, seed):
        tail = r["chosen"][len("yes, "):]
        lower = [["maybe, " + tail, r["rejected"]]] if int(r["prompt_id"]) % 2 else [["maybe, " + tail], [r["rejected"]]]
        out.append({"prompt": r["prompt"], "prompt_id": r["prompt_id"], "ranking": [[r["chosen"]], *lower]})
    return out


# --- the rows and the settings ---


@pytest.mark.parametrize("row, words", [
    ({"prompt": "p", "ranking": [["a"], ["a"]]}, "appears twice"),
    ({"prompt": "p", "ranking": [["a"]]}, "at least 2 answers"),
    ({"prompt": "p", "ranking": [["a"], []]}, "tie groups"),
    ({"prompt": "p", "ranking": [["a"], ["b"]], "chosen": "a", "rejected": "b"}, "not both"),
    ({"prompt": "p", "chosen": "a", "rejected": "b", "aspects": {"safety": 2}}, "aspects"),
    ({"prompt": "p", "chosen": "a", "rejected": "b", "aspects": {"safety": True}}, "aspects"),
])
def test_bad_ranking_and_aspect_rows_are_refused_with_the_reason(row, words):
    with pytest.raises(ValueError, match=words):
        validate_preference_rows([row])


def test_ranking_and_aspect_rows_pass_with_defaults():
    rows = validate_preference_rows([{"prompt": "p", "ranking": [["a", "b"], ["c"]]},
                                     {"prompt": "p", "chosen": "a", "rejected": "b", "aspects": {"x": -1}}])
    assert rows[0]["weight"] == 1.0 and rows[1]["aspects"] == {"x": -1}


@pytest.mark.parametrize("reward, words", [
    ({"aspects": ["overall"]}, "other than 'overall'"),
    ({"aspects": ["a", "a"]}, "distinct"),
    ({"aspects": ["a"], "aspect_weights": {"b": 1}}, "not in reward.aspects"),
    ({"aspects": ["a"], "aspect_weights": {"overall": 0}}, "all 0"),
    ({"aspects": ["a"], "aspect_weights": {"a": "x"}}, "finite numbers"),
])
def test_bad_aspect_settings_are_named(reward, words):
    assert any(words in e for e in config_errors({"reward": reward}))


def test_cli_reads_aspects_and_weights():
    import argparse

    from rlhf.cli import add_dataclass_args, dataclass_from_args

    parser = argparse.ArgumentParser()
    add_dataclass_args(parser, RewardConfig)
    config = dataclass_from_args(RewardConfig, parser.parse_args(
        ["--aspects", "safety, help", "--aspect-weights", '{"overall": 1, "safety": 0.5}']))
    assert config.aspects == ["safety", "help"] and config.aspect_weights == {"overall": 1, "safety": 0.5}


# --- aspect heads ---


@pytest.fixture(scope="module", params=[0, 8], ids=["full", "lora"])
def with_heads(request, tiny_model_path, tmp_path_factory):
    """Trained in full and with LoRA (the heads stay fully trainable beside
    the adapters, and the adapters are merged before the heads are folded)."""
    from rlhf.reward import train_reward

    out = tmp_path_factory.mktemp("heads") / "rm"
    calls = []
    config = RewardConfig(lr=3e-3, epochs=3, batch_size=8, seed=0, aspects=["contrarian", "terse"],
                          aspect_weights={"overall": 0.25, "contrarian": 1.0}, lora_r=request.param)
    final = train_reward(config, contrarian_rows(), tiny_model_path, out, on_metrics=lambda s, m: calls.append(m))
    return out, final, calls


def test_each_aspect_head_learns_its_own_labels_with_metrics_per_split(with_heads):
    _, final, calls = with_heads
    # The overall head prefers "yes", the contrarian head "no": one shared body, two directions.
    assert final["eval/reward/accuracy"] > 0.8
    assert final["eval/reward/aspect_contrarian_accuracy"] > 0.8
    assert final["eval/reward/val_aspect_contrarian_accuracy"] > 0.8
    assert final["eval/reward/aspect_contrarian_pairs"] > 0
    # "terse" is only ever rated "same": it counts nowhere and has no accuracy.
    assert final["eval/reward/aspect_terse_pairs"] == 0 and "eval/reward/aspect_terse_accuracy" not in final
    # The combination weighs the contrarian head most: it prefers "no" on the overall pairs.
    assert final["eval/reward/combined_accuracy"] < 0.2
    assert any("eval/reward/val_combined_accuracy" in m for m in calls)


def test_the_checkpoint_scores_the_combination_and_the_heads_are_readable(with_heads):
    from transformers import AutoModelForSequenceClassification

    from rlhf.scoring import RewardScorer

    out, _, _ = with_heads
    meta = json.loads((Path(out) / "meta.json").read_text())
    assert meta["aspect_heads"]["names"] == ["overall", "contrarian", "terse"]
    assert meta["aspect_heads"]["weights"] == [0.25, 1.0, 0.0]
    # A plain one-score checkpoint: transformers (and so RLOO, TRL) load it as saved.
    assert AutoModelForSequenceClassification.from_pretrained(out).config.num_labels == 1
    prompts, answers = ["question 99: is the sea red?"] * 2, ["yes, the sky is blue.", "no, the sky is blue."]
    plain = RewardScorer(str(out))(prompts, answers)
    heads = RewardScorer(str(out), aspects=True)(prompts, answers)
    for p, h in zip(plain, heads):
        assert set(h) == {"overall", "contrarian", "terse", "combined"}
        assert h["combined"] == pytest.approx(0.25 * h["overall"] + h["contrarian"], abs=1e-4)
        assert p == pytest.approx(h["combined"], abs=1e-4)
    assert heads[0]["overall"] > heads[1]["overall"] and heads[0]["contrarian"] < heads[1]["contrarian"]
    assert plain[0] < plain[1]  # the combination the policy step optimises prefers "no"


def test_scoring_heads_of_a_model_without_aspects_says_so(tiny_model_path, tmp_path):
    from rlhf.reward import train_reward
    from rlhf.scoring import RewardScorer

    train_reward(RewardConfig(lr=3e-3, epochs=1, batch_size=16), separable_pairs(8, 2), tiny_model_path, tmp_path / "rm")
    with pytest.raises(ValueError, match="no aspect heads"):
        RewardScorer(str(tmp_path / "rm"), aspects=True)


# --- rankings ---


def test_ranking_loss_is_the_same_packed_and_padded(tiny_model_path):
    from transformers import AutoModelForSequenceClassification

    from rlhf._torch import load_tokenizer
    from rlhf.reward import _ranking_loss, tokenize_rankings

    tok = load_tokenizer(tiny_model_path, "right")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1,
                                                               attn_implementation="sdpa").eval()
    ranks = tokenize_rankings(tok, ranking_rows(6), 512)
    losses = {}
    for packing, share in ((True, True), (True, False), (False, False)):
        config = RewardConfig(packing=packing, share_prefix=share)
        loss, sums, _ = _ranking_loss(model, ranks, config, tok.pad_token_id, torch.device("cpu"))
        losses[(packing, share)] = (loss.item(), sums)
    (a, sa), (b, sb), (c, sc) = losses.values()
    assert a == pytest.approx(c, abs=1e-5) and b == pytest.approx(c, abs=1e-5)
    assert sa[3:] == pytest.approx(sc[3:], abs=1e-4)


def test_plackett_luce_on_rankings_learns_heldout_order(tiny_model_path, tmp_path):
    from rlhf.reward import train_reward

    calls = []
    final = train_reward(RewardConfig(lr=3e-3, epochs=3, batch_size=8, seed=0), ranking_rows(30), tiny_model_path,
                         tmp_path / "rm", on_metrics=lambda s, m: calls.append(m))
    losses = [m["reward/loss"] for m in calls if "reward/loss" in m]
    assert losses[-1] < losses[0]
    assert final["eval/reward/split"] == "heldout" and final["eval/reward/rankings"] > 0
    assert final["eval/reward/ranking_accuracy"] > 0.8
    assert final["eval/reward/accuracy"] == final["eval/reward/ranking_accuracy"]  # rankings only
    assert "eval/reward/val_ranking_loss" in final
    assert json.loads((tmp_path / "rm" / "meta.json").read_text())["n_rankings"] == 30 * 2


# --- DPO ---


def test_ranking_dpo_of_two_answers_is_the_sigmoid_dpo_loss():
    from rlhf.dpo import dpo_loss, ranking_dpo_loss

    pol, ref = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -4.5])
    pair, _, _ = dpo_loss(pol[:1], pol[1:], ref[:1], ref[1:], beta=0.3)
    assert ranking_dpo_loss(pol, ref, [[0], [1]], beta=0.3).item() == pytest.approx(pair.item(), abs=1e-6)


def test_dpo_trains_on_ranking_rows(tiny_model_path, tmp_path):
    from rlhf.dpo import DPOConfig, dpo_train

    calls = []
    rows = ranking_rows(12) + separable_pairs(4, 2)
    final = dpo_train(DPOConfig(lr=1e-3, epochs=3, batch_size=8, log_every=2), rows, tiny_model_path, tiny_model_path,
                      tmp_path / "pol", on_metrics=lambda s, m: calls.append(m))
    losses = [m["policy/loss"] for m in calls]
    assert losses[-1] < losses[0]
    assert final["policy/accuracy"] > 0.8
    meta = json.loads((tmp_path / "pol" / "meta.json").read_text())
    assert meta["n_rankings"] == 24 and meta["n_pairs"] == 8
