"""The campaign's KL budget in the policy step (rlhf/kl.py): a step that would
move the policy further from the reference than the budget stops and
publishes the last weights a check found inside it."""

import json
from pathlib import Path

import pytest
import torch
from conftest import separable_pairs
from safetensors.torch import load_file
from test_rloo import PROMPTS, count_e

from rlhf import _torch
from rlhf.dpo import DPOConfig, dpo_train
from rlhf.generate import load_policy
from rlhf.kl import KLGuard, sampled_kl
from rlhf.rloo import RLOOConfig, rloo_train


def test_guard_keeps_the_last_weights_inside_the_budget_and_puts_them_back():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    guard = KLGuard(0.5, [w])
    with torch.no_grad():
        w += 1.0
    assert guard.check(0.4, 1, [w]) is True  # [2, 3] kept
    with torch.no_grad():
        w += 1.0
    assert guard.check(0.7, 2, [w]) is False  # over: back to [2, 3]
    assert w.tolist() == [2.0, 3.0]
    m = guard.metrics()
    assert m == {"policy/kl_budget": 0.5, "policy/kl_to_base": 0.4, "policy/kl_kept_step": 1,
                 "policy/kl_budget_stopped": True, "policy/kl_over_estimate": 0.7}
    with pytest.raises(ValueError, match="kl_budget must be >= 0"):
        KLGuard(-1.0, [w])


def _kl_of(path, ref_path, prompts, new_tokens, seed):
    policy, tokenizer = load_policy(str(path), torch.device("cpu"))
    ref, _ = load_policy(str(ref_path), torch.device("cpu"))
    return sampled_kl(policy, ref, tokenizer, prompts, max_new_tokens=new_tokens, seed=seed, dist=_torch.Dist())


def test_dpo_stops_at_the_budget_and_publishes_weights_inside_it(tiny_model_path, tmp_path):
    rows = separable_pairs(12, 2)
    common = dict(lr=1e-2, beta=0.1, epochs=3, batch_size=4, log_every=1, kl_check_every=1, kl_prompts=8,
                  kl_max_new_tokens=8)
    free_calls, calls = [], []
    # The same step with a budget it never reaches: how far it would go.
    free = dpo_train(DPOConfig(**common, kl_budget=1e9), rows, tiny_model_path, tiny_model_path, tmp_path / "free",
                     on_metrics=lambda s, m: free_calls.append((s, m)))
    kls = [m["policy/kl"] for _, m in free_calls if "policy/kl" in m]
    assert len(kls) == free["policy/steps"] == 18 and free["policy/kl_budget_stopped"] is False
    budget = 1.0
    assert max(kls) > 2 * budget, kls  # without the guard it goes well past the budget
    final = dpo_train(DPOConfig(**common, kl_budget=budget), rows, tiny_model_path, tiny_model_path, tmp_path / "pol",
                      on_metrics=lambda s, m: calls.append((s, m)))
    assert final["policy/kl_budget_stopped"] is True and final["policy/kl_over_estimate"] > budget
    assert final["policy/kl_budget"] == budget and final["policy/kl_kept_step"] < final["policy/steps"] < 18
    # The checks of the budgeted run are those of the free run up to the stop.
    assert ([m["policy/kl"] for _, m in calls if "policy/kl" in m]
            == pytest.approx(kls[: final["policy/steps"]], abs=1e-4))
    # What is published is what the last passing check measured, within the budget.
    prompts = list({r["prompt"]: None for r in rows})[:8]
    published = _kl_of(tmp_path / "pol", tiny_model_path, prompts, 8, seed=0)
    if final["policy/kl_kept_step"]:
        assert published == pytest.approx(final["policy/kl_to_base"], abs=1e-4)
    assert published <= budget
    meta = json.loads((tmp_path / "pol" / "meta.json").read_text())
    assert meta["config"]["kl_budget"] == budget and meta["metrics"] == final


def test_dpo_without_a_budget_reports_no_kl(dpo_free_metrics):
    assert not any("kl" in key for key in dpo_free_metrics)


@pytest.fixture
def dpo_free_metrics(tiny_model_path, tmp_path):
    return dpo_train(DPOConfig(lr=1e-3, epochs=1, batch_size=8), separable_pairs(4, 2), tiny_model_path,
                     tiny_model_path, tmp_path / "p")


def test_rloo_stops_at_the_budget_with_the_weights_of_the_round_it_kept(tiny_model_path, tmp_path):
    common = dict(lr=1e-2, beta=0.0, k=4, prompts_per_iteration=8, minibatch_size=32, max_new_tokens=8, seed=0)
    calls = []
    free = rloo_train(RLOOConfig(**common, num_iterations=10, kl_budget=1e9), PROMPTS, tiny_model_path,
                      tiny_model_path, tmp_path / "free", reward_fn=count_e, on_metrics=lambda s, m: calls.append(m))
    kls = [m["policy/kl"] for m in calls if "policy/kl_budget" not in m]
    assert free["policy/kl_budget_stopped"] is False and free["policy/kl_kept_step"] == 10
    budget = 0.5
    assert max(kls) > 2 * budget, kls
    final = rloo_train(RLOOConfig(**common, num_iterations=10, kl_budget=budget), PROMPTS, tiny_model_path,
                       tiny_model_path, tmp_path / "pol", reward_fn=count_e)
    kept = final["policy/kl_kept_step"]
    assert final["policy/kl_budget_stopped"] is True and 0 < kept < 10
    assert final["policy/kl_over_estimate"] > budget >= final["policy/kl_to_base"]
    # The stop changes nothing before it: the published weights are those of
    # the same run cut after `kept` rounds.
    rloo_train(RLOOConfig(**common, num_iterations=kept), PROMPTS, tiny_model_path, tiny_model_path, tmp_path / "cut",
               reward_fn=count_e)
    got, want = load_file(Path(tmp_path / "pol" / "model.safetensors")), load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(got[k], want[k]) for k in want)
