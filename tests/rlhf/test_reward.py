import json
from pathlib import Path

import pytest
import torch
from conftest import separable_pairs

from rlhf.data import prompt_key
from rlhf.reward import RewardConfig, _pair_loss, score, sequence_rewards, split_rows, tokenize_pairs, train_reward

STABLE_TRAIN = {"reward/loss", "reward/accuracy", "reward/margin", "reward/reward_mean", "reward/reward_std",
                "reward/pairs_per_s", "reward/tokens_per_s", "reward/tokens", "reward/tokens_computed",
                "reward/tokens_padded"}
STABLE_EVAL = {"eval/reward/loss", "eval/reward/accuracy", "eval/reward/split", "eval/reward/margin",
               "eval/reward/reward_mean", "eval/reward/reward_std"}
STABLE_VAL = {"eval/reward/val_loss", "eval/reward/val_accuracy", "eval/reward/val_split", "eval/reward/val_margin",
              "eval/reward/val_reward_mean", "eval/reward/val_reward_std"}
BUCKETS = ("0-0.5", "0.5-1", "1-2", "2-inf")
CALIBRATION = {f"eval/reward/{kind}_margin_{b}" for kind in ("accuracy", "pairs") for b in BUCKETS}


def loss_of(model, tok, rows, config):
    """(loss, r_chosen, r_rejected) of one batch of rows, as a training step computes it."""
    loss, r_c, r_r, _ = _pair_loss(model, tokenize_pairs(tok, rows, config.max_length), config, tok.pad_token_id,
                                   torch.device("cpu"))
    return loss, r_c, r_r


@pytest.fixture(scope="module")
def trained(tiny_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("reward") / "rm"
    calls, progress = [], []
    config = RewardConfig(lr=3e-3, epochs=3, batch_size=8, log_every=2, seed=0)
    final = train_reward(config, separable_pairs(), tiny_model_path, out,
                         on_metrics=lambda step, m: calls.append((step, m)), on_progress=progress.append)
    return out, final, calls, progress


def test_reward_loss_falls_and_heldout_accuracy_beats_chance(trained):
    _, final, calls, _ = trained
    train_losses = [m["reward/loss"] for _, m in calls if "reward/loss" in m]
    assert train_losses[-1] < train_losses[0] * 0.5
    assert final["eval/reward/split"] == "heldout"
    assert final["eval/reward/accuracy"] > 0.8


def test_reward_metrics_callback_uses_the_stable_names(trained):
    _, _, calls, progress = trained
    keysets = [set(m) for _, m in calls]
    assert STABLE_TRAIN in keysets
    assert any(STABLE_EVAL | STABLE_VAL <= ks and ks <= STABLE_EVAL | STABLE_VAL | CALIBRATION for ks in keysets)
    assert all(k in STABLE_TRAIN | STABLE_EVAL | STABLE_VAL | CALIBRATION for ks in keysets for k in ks)
    steps = [s for s, _ in calls]
    assert steps == sorted(steps)
    assert progress[-1] == 1.0 and all(0 < p <= 1 for p in progress)


def test_reward_checkpoint_is_safetensors_with_meta(trained):
    out, final, _, _ = trained
    files = {p.name for p in Path(out).iterdir()}
    assert "model.safetensors" in files and "meta.json" in files and "tokenizer.json" in files
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)
    meta = json.loads((Path(out) / "meta.json").read_text())
    assert meta["n_pairs"] == 90 and meta["metrics"]["eval/reward/accuracy"] == final["eval/reward/accuracy"]
    assert meta["config"]["margin"] is True


def test_score_ranks_unseen_chosen_above_rejected(trained):
    out, _, _, _ = trained
    rewards = score(str(out), ["question 99: is the sea red?"] * 2, ["yes, the sky is blue.", "no, the sky is blue."])
    assert rewards[0] > rewards[1]


def test_margin_raises_the_loss_for_the_same_rewards(tiny_model_path):
    from transformers import AutoModelForSequenceClassification

    from rlhf._torch import load_tokenizer

    tok = load_tokenizer(tiny_model_path, "right")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1)
    batch = [dict(r, margin=0.0, weight=1.0) for r in separable_pairs(2, 1)]
    with_margin = [dict(r, margin=2.0) for r in batch]
    on = RewardConfig(margin=True)
    base, r_c, r_r = loss_of(model, tok, batch, on)
    bigger, _, _ = loss_of(model, tok, with_margin, on)
    ignored, _, _ = loss_of(model, tok, with_margin, RewardConfig(margin=False))
    expected = -torch.nn.functional.logsigmoid(r_c - r_r - 2.0).mean()
    assert bigger.item() > base.item()
    assert bigger.item() == pytest.approx(expected.item(), rel=1e-5)
    assert ignored.item() == pytest.approx(base.item(), rel=1e-6)


def test_pooling_reads_each_rows_own_last_token_even_when_pad_is_eos(tiny_model_path):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1).eval()
    short, long_ = [5, 40, 41, 3], [5, 40, 41, 42, 43, 3]
    ids = torch.tensor([short + [3, 3], long_])  # padded with the EOS id, as SmolLM2 does
    mask = torch.tensor([[1] * 4 + [0, 0], [1] * 6])
    with torch.no_grad():
        batched = sequence_rewards(model, ids, mask)
        alone = sequence_rewards(model, torch.tensor([short]), torch.ones(1, 4, dtype=torch.long))
    assert batched[0].item() == pytest.approx(alone[0].item(), abs=1e-5)


def test_few_prompts_evaluate_on_train_and_say_so(tiny_model_path, tmp_path):
    final = train_reward(RewardConfig(lr=1e-3, epochs=1, batch_size=4), separable_pairs(2, 2), tiny_model_path, tmp_path / "rm")
    assert final["eval/reward/split"] == "train" and final["eval/reward/val_split"] == "train"


def test_train_validation_and_test_splits_share_no_prompt_and_the_test_split_ignores_validation():
    rows = separable_pairs(30, 3)
    splits = split_rows(rows, RewardConfig(eval_fraction=0.2, val_fraction=0.25, seed=3))
    keys = [{prompt_key(r) for r in part} for part in (splits.train, splits.val, splits.test)]
    assert [len(k) for k in keys] == [18, 6, 6] and not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert sum(map(len, (splits.train, splits.val, splits.test))) == len(rows)
    # The test prompts a seed picks are the ones it picked before validation existed.
    assert splits.test == split_rows(rows, RewardConfig(eval_fraction=0.2, val_fraction=0, seed=3)).test
    # A caller's own test rows: validation still comes out of the training rows.
    given = split_rows(rows[:60], RewardConfig(val_fraction=0.25), eval_rows=rows[60:])
    assert [r["prompt_id"] for r in given.test] == [r["prompt_id"] for r in rows[60:]]
    assert len(given.train) + len(given.val) == 60 and given.val


def flipped(rows):
    return [dict(r, chosen=r["rejected"], rejected=r["chosen"]) for r in rows]


def test_early_stopping_never_reads_the_test_split(tiny_model_path, tmp_path):
    # given: training rows, and a test split of other prompts whose labels are then turned against the model
    rows = separable_pairs(24, 2)
    test = [dict(r, prompt=r["prompt"].replace("question", "query"), prompt_id="t" + r["prompt_id"])
            for r in separable_pairs(6, 3, seed=4)]
    config = RewardConfig(lr=3e-3, epochs=4, batch_size=8, eval_every=2, patience=2, val_fraction=0.25, seed=0)
    runs = {}
    for name, test_rows in (("true", test), ("adversarial", flipped(test))):
        evals = []
        final = train_reward(config, rows, tiny_model_path, tmp_path / name, eval_rows=test_rows,
                             on_metrics=lambda step, m: evals.append((step, m)) if "eval/reward/loss" in m else None)
        runs[name] = final, evals
    (true, _), (adversarial, adversarial_evals) = runs["true"], runs["adversarial"]
    # then: the same weights are kept, chosen on validation alone; the test figures only report them
    assert adversarial["reward/kept_step"] == true["reward/kept_step"]
    assert adversarial["reward/steps"] == true["reward/steps"]
    assert adversarial["eval/reward/val_loss"] == true["eval/reward/val_loss"]
    assert adversarial["eval/reward/accuracy"] == pytest.approx(1 - true["eval/reward/accuracy"])
    # Choosing on the adversarial test loss would have kept other weights: this test can fail.
    lowest_test_loss_step = min(adversarial_evals, key=lambda e: e[1]["eval/reward/loss"])[0]
    assert lowest_test_loss_step != adversarial["reward/kept_step"]


def test_validation_metrics_are_reported_and_val_fraction_0_leaves_them_out(trained, tiny_model_path, tmp_path):
    out, final, _, _ = trained
    assert STABLE_VAL <= set(final) and final["eval/reward/val_split"] == "heldout"
    meta = json.loads((Path(out) / "meta.json").read_text())
    # 30 prompts x 3 pairs: 6 test prompts, then 10% of the other 24 (2) for validation
    assert (meta["n_train_pairs"], meta["n_val_pairs"], meta["n_eval_pairs"]) == (66, 6, 18)
    assert final["reward/kept_step"] == final["reward/steps"]  # no patience: the last weights
    none = train_reward(RewardConfig(lr=1e-3, batch_size=8, val_fraction=0), separable_pairs(10, 2), tiny_model_path,
                        tmp_path / "rm")
    assert not any(k.startswith("eval/reward/val_") for k in none) and "eval/reward/accuracy" in none


def test_patience_without_a_validation_split_is_a_config_error():
    from rlhf.configs import config_errors

    assert config_errors({"reward": {"patience": 2, "val_fraction": 0.0}}) == [
        "reward: patience needs val_fraction > 0 (early stopping reads the validation split, never the test split)"]
    assert config_errors({"reward": {"patience": 2}}) == []
    assert config_errors({"reward": {"val_fraction": 1.0}}) == ["reward.val_fraction must be in [0, 1) (0: no validation split), not 1.0"]


def test_early_stopping_stops_when_eval_loss_stalls(tiny_model_path, tmp_path):
    # An lr of 1e-12 moves eval loss by far less than the 1e-6 that counts as better,
    # so patience 1 stops after the second eval (lr 0 is refused as a setting).
    config = RewardConfig(lr=1e-12, epochs=5, batch_size=8, eval_every=2, patience=1)
    final = train_reward(config, separable_pairs(10, 2), tiny_model_path, tmp_path / "rm")
    assert final["reward/stopped_early"] is True and final["reward/steps"] == 4


def test_center_rewards_coefficient_adds_the_squared_sum_penalty(tiny_model_path):
    from transformers import AutoModelForSequenceClassification

    from rlhf._torch import load_tokenizer

    tok = load_tokenizer(tiny_model_path, "right")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1)
    batch = [dict(r, margin=0.0, weight=1.0) for r in separable_pairs(2, 1)]
    plain, r_c, r_r = loss_of(model, tok, batch, RewardConfig())
    centered, _, _ = loss_of(model, tok, batch, RewardConfig(center_rewards_coefficient=0.1))
    assert centered.item() == pytest.approx(plain.item() + 0.1 * ((r_c + r_r) ** 2).mean().item(), rel=1e-5)


def test_calibration_buckets_count_every_heldout_pair_and_accuracy_matches(trained):
    _, final, _, _ = trained
    pairs = {b: final.get(f"eval/reward/pairs_margin_{b}", 0) for b in BUCKETS}
    assert sum(pairs.values()) == 18  # 6 held-out prompts x 3 pairs
    correct = sum(final[f"eval/reward/accuracy_margin_{b}"] * n for b, n in pairs.items() if n)
    assert correct / 18 == pytest.approx(final["eval/reward/accuracy"])
    # A model that has learnt the separable set is surest where it is right.
    assert final["eval/reward/margin"] > 0 and final["eval/reward/reward_std"] > 0


def test_pair_weights_scale_each_pairs_share_of_the_loss(tiny_model_path):
    from transformers import AutoModelForSequenceClassification

    from rlhf._torch import load_tokenizer

    tok = load_tokenizer(tiny_model_path, "right")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1)
    batch = [dict(r, margin=0.0, weight=w) for r, w in zip(separable_pairs(2, 1), (3.0, 1.0))]
    loss, r_c, r_r = loss_of(model, tok, batch, RewardConfig())
    per_pair = -torch.nn.functional.logsigmoid(r_c - r_r)
    assert loss.item() == pytest.approx((3 * per_pair[0] + per_pair[1]).item() / 4, rel=1e-5)
    zero = [dict(batch[0], weight=0.0), batch[1]]
    only_second, _, _ = loss_of(model, tok, zero, RewardConfig())
    assert only_second.item() == pytest.approx(per_pair[1].item(), rel=1e-5)


def test_trainable_layers_trains_only_the_top_blocks_norm_and_head(tiny_model_path, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    config = RewardConfig(lr=3e-3, epochs=2, batch_size=8, seed=0, trainable_layers=1)
    final = train_reward(config, separable_pairs(), tiny_model_path, tmp_path / "rm")
    # The tiny model has 2 blocks: embeddings and block 0 stay as pretrained, block 1, the norm and the head learn.
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1).state_dict()
    trained = load_file(str(tmp_path / "rm" / "model.safetensors"))
    frozen = [k for k in trained if k.startswith(("model.embed_tokens", "model.layers.0."))]
    learned = [k for k in trained if k.startswith(("model.layers.1.", "model.norm"))]
    assert frozen and learned
    assert all(torch.equal(trained[k], base[k]) for k in frozen)
    assert all(not torch.equal(trained[k], base[k]) for k in learned if k.endswith("weight"))
    assert final["eval/reward/accuracy"] > 0.8  # the top block and head alone still separate the pairs


def test_negative_trainable_layers_is_a_config_error():
    from rlhf.configs import config_errors

    assert config_errors({"reward": {"trainable_layers": -1}}) == ["reward.trainable_layers must be 0 or more, not -1"]
    assert config_errors({"reward": {"trainable_layers": 0}}) == []
    assert config_errors({"reward": {"trainable_layers": 2, "lora_r": 4}}) == [
        "reward: set trainable_layers or lora_r, not both"]


@pytest.mark.parametrize("section, values, error", [
    ("reward", {"lr": 0}, "reward.lr must be more than 0, not 0"),
    ("reward", {"lr": float("nan")}, "reward.lr must be a finite number, not nan"),
    ("reward", {"batch_size": 0}, "reward.batch_size must be 1 or more, not 0"),
    ("reward", {"patience": 0}, "reward.patience must be 1 or more, not 0"),
    ("policy", {"k": 1}, "policy.k must be 2 or more (the leave-one-out baseline needs another sample), not 1"),
    ("policy", {"ratio_level": "tokens"}, "policy.ratio_level must be one of 'sequence', 'token', not 'tokens'"),
    ("policy", {"beta": -0.1}, "policy.beta must be 0 or more, not -0.1"),
    ("dpo", {"beta": 0.0}, "dpo.beta must be more than 0, not 0.0"),
    ("dpo", {"lora_dropout": 1.0}, "dpo.lora_dropout must be in [0, 1), not 1.0"),
    ("generate", {"temperature": -1.0}, "generate.temperature must be more than 0, not -1.0"),
])
def test_config_errors_name_each_value_out_of_its_range(section, values, error):
    from rlhf.configs import config_errors

    assert config_errors({section: values}) == [error]


def test_every_default_config_is_valid_and_none_turns_an_optional_setting_off():
    from dataclasses import asdict

    from rlhf.configs import SECTIONS, config_errors

    assert config_errors({name: asdict(cls()) for name, cls in SECTIONS.items()}) == []
    assert config_errors({"reward": {"patience": None, "center_rewards_coefficient": None},
                          "policy": {"kl_budget": None}}) == []


def test_train_reward_refuses_a_bad_config_before_loading_anything(tmp_path):
    # The path does not exist: a ValueError naming both settings, not a load error, shows the check comes first.
    with pytest.raises(ValueError, match=r"reward.lr must be more than 0, not -1e-05; reward.epochs must be 1 or more"):
        train_reward(RewardConfig(lr=-1e-5, epochs=0), [{"prompt": "p", "chosen": "a", "rejected": "b"}],
                     str(tmp_path / "no-model"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("pad_candidates", ["unk and bos", "none"])
def test_a_reward_checkpoint_scores_the_same_under_plain_transformers_when_its_base_pads_with_eos(
    tiny_model_path, tmp_path, pad_candidates
):
    import shutil

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.chat import format_pair_text

    # given: a base whose tokenizer pads with EOS, as SmolLM2's does (with no unk or bos to pad with, too)
    base = tmp_path / "base"
    shutil.copytree(tiny_model_path, base)
    tok = AutoTokenizer.from_pretrained(base)
    tok.pad_token = tok.eos_token
    if pad_candidates == "none":
        tok.unk_token, tok.bos_token = None, None
    tok.save_pretrained(base)
    train_reward(RewardConfig(lr=1e-3, batch_size=4), separable_pairs(8, 2), str(base), tmp_path / "rm")
    # when: the checkpoint scores a right-padded batch on its own, as TRL or a pipeline would
    rows = separable_pairs(3, 1)
    prompts = [r["prompt"] for r in rows] * 2
    # texts of different lengths, so the batch is padded
    responses = [text + " more" * i for i, text in enumerate([r["chosen"] for r in rows] + [r["rejected"] for r in rows])]
    theirs_tok = AutoTokenizer.from_pretrained(tmp_path / "rm", padding_side="right")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    batch = theirs_tok([format_pair_text(theirs_tok, p, r) for p, r in zip(prompts, responses)], padding=True,
                       add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        theirs = model(**batch).logits.squeeze(-1).tolist()
    # then: the scores this module gives; the texts end in EOS, which is no longer the pad
    assert batch["attention_mask"].sum(dim=1).unique().numel() > 1  # the batch really is padded
    assert theirs_tok.pad_token_id != theirs_tok.eos_token_id
    assert theirs == pytest.approx(score(str(tmp_path / "rm"), prompts, responses), abs=1e-5)


def test_reward_progress_counts_the_evals_as_work(tiny_model_path, tmp_path):
    # given: 2 epochs of 4 steps, an eval after each epoch (held-out pairs, 2 batches each)
    progress, at_step = [], {}
    config = RewardConfig(lr=3e-3, epochs=2, batch_size=8, log_every=1, seed=0, eval_fraction=0.3)

    def on_metrics(step, m):
        if "reward/loss" in m:
            at_step[step] = progress[-1] if progress else 0.0

    train_reward(config, separable_pairs(), tiny_model_path, tmp_path / "rm", on_metrics=on_metrics,
                 on_progress=progress.append)
    # then: it grows with every step and eval batch, and is below 1 until the end
    assert progress == sorted(progress) and len(set(progress)) == len(progress)
    assert progress[-1] == 1.0 and max(progress[:-1]) < 1.0
    steps = sorted(at_step)
    # the fraction after the last training step leaves room for the evals
    assert at_step[steps[-1]] < 0.95
    # and the steps of one epoch move it by the same amount each
    first_epoch = [at_step[s] for s in steps[: len(steps) // 2]]
    gaps = [b - a for a, b in zip(first_epoch, first_epoch[1:])]
    assert gaps and max(gaps) == pytest.approx(min(gaps))
