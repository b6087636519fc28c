"""Parity with TRL 1.16 (the field's reference implementation, a test-only
dependency): the same tiny model, data and seed go through our code and
through TRL's trainers, and the same quantities must agree. Each test
compares one computation, not noisy end results of training.

Tolerances are absolute, in the units of the compared value; both sides run
the same float32 maths on the CPU, so they differ only by summation order.
"""

import pytest
import torch
from conftest import separable_pairs

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

# CPU settings TRL needs: its bf16 default fails without a GPU.
TRL_CPU = dict(bf16=False, gradient_checkpointing=False, report_to=[], use_cpu=True, save_strategy="no")


def _tok(path):
    from rlhf._torch import load_tokenizer

    return load_tokenizer(path, "right")


def test_reward_loss_and_accuracy_match_trl_reward_trainer(tiny_model_path, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from rlhf.chat import format_prompt
    from rlhf.reward import RewardConfig, _pair_loss, tokenize_pairs

    tok = _tok(tiny_model_path)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    model.eval()
    # Margins of both signs, and pairs the random head gets both right and wrong.
    rows = [dict(r, margin=m, weight=1.0) for r, m in zip(separable_pairs(6, 1, seed=3), [0.0, 0.5, 1.0, -0.3, 2.0, 0.1])]
    for r in rows[::2]:  # swap every other pair so the random head is right on some, wrong on others
        r["chosen"], r["rejected"] = r["rejected"], r["chosen"]
    coef = 0.01
    # Our default path: padding-free packing with the shared prompt run once.
    config = RewardConfig(center_rewards_coefficient=coef)
    assert config.packing and config.share_prefix
    with torch.no_grad():
        ours, r_c, r_r, _ = _pair_loss(model, tokenize_pairs(tok, rows, config.max_length), config, tok.pad_token_id,
                                       torch.device("cpu"))
    our_accuracy = (r_c > r_r).float().mean().item()

    # TRL gets the prompt already formatted by our chat template (its
    # non-conversational path appends EOS, as we do) and tokenizes it itself.
    ds = datasets.Dataset.from_list([{"prompt": format_prompt(tok, r["prompt"]), "chosen": r["chosen"],
                                      "rejected": r["rejected"], "margin": r["margin"]} for r in rows])
    args = trl.RewardConfig(output_dir=str(tmp_path), center_rewards_coefficient=coef,
                            per_device_train_batch_size=len(rows), **TRL_CPU)
    trainer = trl.RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    trainer.model.train()  # TRL logs its metrics under "train" in training mode; the tiny model has no dropout
    with torch.no_grad():
        theirs = trainer.compute_loss(trainer.model, batch)
    # Tolerance 1e-5 on the loss (~0.7 here): same forward, same float32 maths.
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    # Accuracy: exact, the same pairs on the same side of zero.
    assert our_accuracy == trainer._metrics["train"]["accuracy"][-1]
    assert 0 < our_accuracy < 1  # a random head gets some right and some wrong: the check has teeth


def _token_sum_reward(prompts, completions, completion_ids, **kwargs):
    """A reward that depends only on the token ids, so both sides see the same numbers."""
    return [float(sum(ids) % 7) + 0.1 * len(ids) for ids in completion_ids]


def test_rloo_kl_advantages_and_clipped_loss_match_trl_rloo_trainer(tiny_model_path, tmp_path):
    from rlhf.logprobs import token_logprobs
    from rlhf.rloo import rloo_advantages, rloo_policy_loss

    tok = _tok(tiny_model_path)
    k, beta, temperature = 4, 0.05, 1.0
    # Prompts of one token length: TRL passes no position_ids, so left padding
    # would shift its positions and ours (we pass them) apart; equal lengths
    # keep the comparison on the RLOO maths.
    prompts = [f"question {i}: is the sky blue?" for i in (1, 2)]
    assert len({len(tok(p)["input_ids"]) for p in prompts}) == 1
    args = trl.RLOOConfig(output_dir=str(tmp_path), beta=beta, num_generations=k, per_device_train_batch_size=2 * k,
                          max_completion_length=6, temperature=temperature, seed=0, **TRL_CPU)
    trainer = trl.RLOOTrainer(model=tiny_model_path, reward_funcs=_token_sum_reward, args=args,
                              train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in prompts]),
                              processing_class=tok)
    # Move the reference away from the policy so the KL term is not trivially zero.
    torch.manual_seed(1)
    with torch.no_grad():
        for p in trainer.ref_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trainer.model.train()
    out = trainer._generate_and_score_completions([{"prompt": p} for p in prompts for _ in range(k)])

    # Ours on TRL's samples: per-token log-probs, sequence KL folded into the reward, leave-one-out.
    ids, mask = out["completion_ids"], out["completion_mask"]
    with torch.no_grad():
        old = token_logprobs(trainer.model, out["prompt_ids"], out["prompt_mask"], ids, mask, temperature)
        ref = token_logprobs(trainer.ref_model, out["prompt_ids"], out["prompt_mask"], ids, mask, temperature)
    m = mask.float()
    kl = ((old - ref) * m).sum(dim=1)
    raw = torch.tensor(_token_sum_reward(None, None, [row[mk.bool()].tolist() for row, mk in zip(ids, mask)]))
    advantages = rloo_advantages(raw - beta * kl, k)
    # Old log-probs (sequence sums, ~-30 here): 1e-4.
    assert (old * m).sum(dim=1).tolist() == pytest.approx(out["old_logps"].tolist(), abs=1e-4)
    # KL: TRL logs the per-token mean of the same first-order estimate; 1e-5.
    assert kl.abs().sum() > 1e-3
    assert (kl.sum() / m.sum()).item() == pytest.approx(trainer._metrics["train"]["kl"][-1], abs=1e-5)
    # Advantages (rewards of a few units): 1e-4.
    assert advantages.tolist() == pytest.approx(out["advantages"].tolist(), abs=1e-4)

    # Clipped sequence-ratio loss: pretend the samples came from a slightly
    # different policy so some ratios fall outside [0.8, 1.2]; TRL's epsilon 0.2.
    shift = torch.linspace(-0.4, 0.4, ids.size(0))
    inputs = dict(out, old_logps=out["old_logps"] + shift)
    with torch.no_grad():
        theirs = trainer._compute_loss(trainer.model, inputs)
        old_tok = old.clone()
        old_tok[:, 0] += shift  # the first completion token is never masked
        ours = rloo_policy_loss(old, old_tok, m, out["advantages"], cliprange=0.2, ratio_level="sequence")
    # Loss: 1e-5.
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)


def test_dpo_loss_matches_trl_dpo_trainer(tiny_model_path, tmp_path):
    from transformers import AutoModelForCausalLM

    from rlhf.chat import format_prompt
    from rlhf.dpo import dpo_loss, tokenize_pair
    from rlhf.logprobs import sequence_logps

    tok = _tok(tiny_model_path)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    torch.manual_seed(2)
    with torch.no_grad():  # a reference unlike the policy, so the log-ratios are not all zero
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rows = separable_pairs(5, 1, seed=4)
    beta = 0.5
    pieces = [tokenize_pair(tok, r, max_length=512) for r in rows]
    pairs = [(p, c) for p, c, _ in pieces] + [(p, r) for p, _, r in pieces]
    with torch.no_grad():
        pol, rf = sequence_logps(policy, pairs, tok.pad_token_id, torch.device("cpu")), sequence_logps(ref, pairs, tok.pad_token_id, torch.device("cpu"))
        n = len(rows)
        ours, _, _ = dpo_loss(pol[:n], pol[n:], rf[:n], rf[n:], beta=beta)

    ds = datasets.Dataset.from_list([{"prompt": format_prompt(tok, r["prompt"]), "chosen": r["chosen"],
                                      "rejected": r["rejected"]} for r in rows])
    args = trl.DPOConfig(output_dir=str(tmp_path), beta=beta, loss_type=["sigmoid"], max_length=None,
                         per_device_train_batch_size=n, **TRL_CPU)
    trainer = trl.DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=ds, processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(n)])
    with torch.no_grad():
        theirs = trainer.compute_loss(trainer.model, batch)
    # Tolerance 1e-5 on the loss (~0.7): the same token split, log-probs and sigmoid loss.
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    assert abs(ours.item() - 0.6931) > 1e-3  # not the trivial log(2) of policy == reference
