import json
from pathlib import Path

import pytest
import torch

from rlhf.generate import GenerateConfig, generate
from rlhf.rloo import RLOOConfig, rloo_advantages, rloo_train

PROMPTS = [f"question {i}: is the sky blue?" for i in range(8)]


def count_e(prompts, completions):
    """A pattern the tiny random model can learn fast: how often it writes 'e'."""
    return [float(c.count("e")) for c in completions]


def test_leave_one_out_advantages_on_known_numbers():
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 4.0])
    adv = rloo_advantages(rewards, k=4)
    # 1 - mean(2,3,6) = -8/3; 2 - mean(1,3,6) = -4/3; 3 - 3 = 0; 6 - 2 = 4
    assert adv[:4].tolist() == pytest.approx([-8 / 3, -4 / 3, 0.0, 4.0])
    assert adv[4:].tolist() == pytest.approx([-4 / 3, -4 / 3, -4 / 3, 4.0])
    with pytest.raises(ValueError):
        rloo_advantages(rewards, k=1)


@pytest.fixture(scope="module")
def trained_policy(tiny_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("rloo") / "policy"
    calls = []
    config = RLOOConfig(lr=1e-2, beta=0.01, k=4, num_iterations=12, prompts_per_iteration=8,
                        minibatch_size=32, max_new_tokens=8, seed=0)
    final = rloo_train(config, PROMPTS, tiny_model_path, tiny_model_path, out, reward_fn=count_e,
                       on_metrics=lambda step, m: calls.append((step, m)))
    return out, final, calls


def mean_reward(path):
    config = GenerateConfig(max_new_tokens=8, temperature=1.0, top_p=1.0, batch_size=128, seed=123)
    samples = [s for group in generate(str(path), PROMPTS, config, num_samples=32) for s in group]
    return sum(count_e(None, samples)) / len(samples)


def test_rloo_raises_the_mean_reward(tiny_model_path, trained_policy):
    out, _, _ = trained_policy
    before, after = mean_reward(tiny_model_path), mean_reward(out)
    assert after > before + 0.5, (before, after)


def test_rloo_changes_the_weights_and_saves_safetensors(tiny_model_path, trained_policy):
    from safetensors.torch import load_file

    out, final, _ = trained_policy
    start, end = load_file(Path(tiny_model_path) / "model.safetensors"), load_file(Path(out) / "model.safetensors")
    assert any(not torch.equal(start[k], end[k]) for k in start)
    meta = json.loads((Path(out) / "meta.json").read_text())
    assert meta["config"]["k"] == 4 and meta["metrics"] == final
    assert (Path(out) / "tokenizer.json").is_file()


def test_rloo_reports_stable_metrics_and_a_nonnegative_kl(trained_policy):
    _, _, calls = trained_policy
    assert [s for s, _ in calls] == list(range(1, 13))
    for _, m in calls:
        assert {"policy/kl", "policy/reward_mean", "policy/loss", "policy/advantage_std"} <= set(m)
    # Per-sample KL estimates can dip below zero; the policy drifting from the
    # reference shows up as a clearly positive average over the later rounds.
    late_kl = [m["policy/kl"] for _, m in calls[6:]]
    assert sum(late_kl) / len(late_kl) > -0.05
    assert calls[0][1]["policy/kl"] == pytest.approx(0.0, abs=1e-4)  # policy == reference at the start


def test_rloo_with_a_reward_model_and_token_ratio(tiny_model_path, tmp_path):
    from conftest import separable_pairs

    from rlhf.reward import RewardConfig, train_reward

    train_reward(RewardConfig(lr=3e-3, epochs=1), separable_pairs(8, 2), tiny_model_path, tmp_path / "rm")
    config = RLOOConfig(lr=1e-3, k=2, num_iterations=2, prompts_per_iteration=2, max_new_tokens=4,
                        ppo_epochs=2, minibatch_size=2, ratio_level="token")
    final = rloo_train(config, PROMPTS[:3], tiny_model_path, tiny_model_path, tmp_path / "pol",
                       reward_path=str(tmp_path / "rm"))
    assert all(isinstance(v, float) for v in final.values())


def test_rloo_needs_exactly_one_reward_source(tiny_model_path, tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        rloo_train(RLOOConfig(), PROMPTS, tiny_model_path, tiny_model_path, tmp_path / "p")


def test_rloo_with_lora_uses_the_disabled_adapter_as_reference_and_saves_merged(tiny_model_path, tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    calls = []
    config = RLOOConfig(lr=1e-2, beta=0.05, k=2, num_iterations=2, prompts_per_iteration=4, max_new_tokens=6,
                        minibatch_size=8, lora_r=4, lora_alpha=8)
    rloo_train(config, PROMPTS[:4], tiny_model_path, tiny_model_path, tmp_path / "pol", reward_fn=count_e,
               on_metrics=lambda s, m: calls.append(m))
    # A fresh adapter is zero, so the adapter-disabled reference equals the policy at first.
    assert calls[0]["policy/kl"] == pytest.approx(0.0, abs=1e-5)
    start, end = load_file(Path(tiny_model_path) / "model.safetensors"), load_file(tmp_path / "pol" / "model.safetensors")
    assert set(end) == set(start) and any(not torch.equal(start[k], end[k]) for k in start)


def test_rloo_policy_loss_clips_the_sequence_ratio():
    from rlhf.rloo import rloo_policy_loss

    old = torch.zeros(2, 3)
    new = torch.tensor([[0.5, 0.5, 0.0], [-0.5, -0.5, 0.0]])  # summed log-ratios +1 and -1
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([1.0, -1.0])
    # ratio e and 1/e are both outside [0.8, 1.2]; the min picks the clipped 1.2 and 0.8 terms.
    loss = rloo_policy_loss(new, old, mask, adv, cliprange=0.2)
    assert loss.item() == pytest.approx(-(1.2 * 1.0 + 0.8 * -1.0) / 2)


def test_rloo_progress_moves_within_a_round_and_ends_at_one(tiny_model_path, tmp_path):
    progress, rounds = [], []
    config = RLOOConfig(lr=1e-2, beta=0.01, k=2, num_iterations=3, prompts_per_iteration=4,
                        minibatch_size=4, max_new_tokens=4, seed=0)
    rloo_train(config, PROMPTS[:4], tiny_model_path, tiny_model_path, tmp_path / "p", reward_fn=count_e,
               on_metrics=lambda step, m: rounds.append(progress[-1]), on_progress=progress.append)
    assert progress == sorted(progress) and len(set(progress)) == len(progress)
    assert progress[-1] == 1.0 and max(progress[:-1]) < 1.0
    # sampling, scoring and 2 optimizer steps per round: 4 reports per round, then the save
    assert len(progress) == 3 * 4 + 1
    assert rounds == pytest.approx([1 / 3, 2 / 3, 0.99])
