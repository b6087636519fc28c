"""Supervised fine-tuning (SFT) on curated answers: the policy learns to write
the assistant turns of conversations, before any preference step.

Rows follow TRL's conversational SFT schema, {"messages": [{"role", "content"}, ...]}
(rlhf.data.validate_conversation_rows). The loss is the negative
log-likelihood of the assistant tokens only; every other token (system,
user, the template's role markers) is labelled -100 and only conditions.
Like TRL's SFTTrainer, the loss of a step is the mean over all assistant
tokens of its batch (sum of their NLL / their count, so a long answer
weighs more than a short one), not a mean of per-conversation means.

An assistant turn is its text plus EOS, after the prompt exactly as
rlhf.chat formats it for DPO, reward scoring and generation: what the policy
will be asked to produce. Batches run packed (several conversations a row,
positions restarting at 0, no attention across them: rlhf.packing) or
padded; both give the same loss. Metrics are sft/* while training and
eval/sft/* on held-out prompts (rlhf/__init__.py lists them).

    python -m rlhf.train_sft --data conversations.jsonl --base PATH --out DIR [--epochs 2 --lr 2e-5]
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict
from enum import IntEnum
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from rlhf import _torch
from rlhf.chat import ENCODE_KWARGS, format_prompt
from rlhf.checkpoint import save_checkpoint
from rlhf.configs import SFTConfig, check_config  # SFTConfig re-exported: callers import it from here too
from rlhf.data import conversation_key, split_by_prompt, validate_conversation_rows
from rlhf.logprobs import common_prefix
from rlhf.packing import pack_sequences

MetricsFn = Callable[[int, dict], None]
ProgressFn = Callable[[float], None]
IGNORE = -100  # the label of a token outside the loss (PyTorch's and TRL's convention)
# Below this many distinct prompts a held-out split is too noisy to mean anything.
MIN_PROMPTS_FOR_SPLIT = 4

Sequence = tuple[list[int], list[int]]  # (input_ids, labels), labels IGNORE outside the assistant turns


def tokenize_conversation(tokenizer, messages: list[dict], max_length: int) -> Sequence:
    """(input_ids, labels) of a conversation up to its last assistant turn.

    Each assistant turn's tokens start where the tokenized prompt before it
    and the tokenized conversation part (BPE can merge across the boundary,
    the same rule as DPO's) and end after its EOS. Turns after the last
    answer are left out: they would carry no loss. Over max_length, the
    conversation keeps its start.
    """
    encode = lambda text: tokenizer(text, **ENCODE_KWARGS)["input_ids"]  # noqa: E731
    eos = tokenizer.eos_token or ""
    answers = [i for i, t in enumerate(messages) if t["role"] == "assistant"]
    last = answers[-1]
    ids = encode(format_prompt(tokenizer, messages[:last]) + messages[last]["content"] + eos)
    labels = [IGNORE] * len(ids)
    for j in answers:
        prompt = format_prompt(tokenizer, messages[:j])
        start = common_prefix(encode(prompt), ids)
        # An earlier answer as the template renders it inside a later prompt:
        # only what matches its own text + EOS counts.
        end = common_prefix(encode(prompt + messages[j]["content"] + eos), ids)
        labels[start:end] = ids[start:end]
    return ids[:max_length], labels[:max_length]


def tokenize_conversations(tokenizer, rows: list[dict], max_length: int) -> tuple[list[Sequence], int]:
    """Each row tokenized once (training reuses them every epoch), and how many
    were dropped because truncation left no assistant token (as TRL drops them)."""
    out = [tokenize_conversation(tokenizer, r["messages"], max_length) for r in rows]
    kept = [s for s in out if any(label != IGNORE for label in s[1][1:])]
    return kept, len(out) - len(kept)


def _plain_head(model) -> bool:
    # Heads that rescale or cap their logits inside forward() (Gemma's softcapping, Cohere's logit_scale)
    # would be skipped by calling the output embedding directly.
    return not any(getattr(model.config, k, None) for k in ("final_logit_softcapping", "logit_scale"))


def answer_logits(model, input_ids, attention_mask, position_ids, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) at the positions whose next token is an assistant token, (n, vocab) and (n,).

    The LM head runs on those positions only: its vocabulary-wide matmul and
    the float32 logits are a large share of a small model's step, and
    prompts need neither.
    """
    targets = labels[:, 1:]
    keep = targets != IGNORE
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    if _plain_head(model):
        hidden = getattr(model, model.base_model_prefix)(**kwargs).last_hidden_state
        logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    else:
        logits = model(**kwargs).logits[:, :-1][keep]
    return logits.float(), targets[keep]


def batch_nll(model, seqs: list[Sequence], config: SFTConfig, pad_id: int, dev):
    """Per-assistant-token NLL (flat), whether the model's top token was the
    target, and (tokens, slots) of the batch, packed or padded per config."""
    if config.packing:
        packed = pack_sequences(seqs, pad_id, row_tokens=config.pack_length).to(dev)
        inputs = (packed.input_ids, packed.attention_mask(), packed.position_ids, packed.labels)
        counts = (packed.tokens, packed.slots)
    else:
        width = max(len(ids) for ids, _ in seqs)
        pad = lambda x, v: x + [v] * (width - len(x))  # noqa: E731
        input_ids = torch.tensor([pad(ids, pad_id) for ids, _ in seqs])
        mask = torch.tensor([pad([1] * len(ids), 0) for ids, _ in seqs])
        labels = torch.tensor([pad(lab, IGNORE) for _, lab in seqs])
        inputs = (input_ids.to(dev), mask.to(dev), None, labels.to(dev))
        counts = (sum(len(ids) for ids, _ in seqs), input_ids.numel())
    with _torch.autocast(dev):
        logits, targets = answer_logits(model, *inputs)
    nll = F.cross_entropy(logits, targets, reduction="none")
    return nll, (logits.detach().argmax(-1) == targets), counts


def loss_tokens(seq: Sequence) -> int:
    """Assistant tokens of a sequence that the loss counts (the first token is never predicted)."""
    return sum(label != IGNORE for label in seq[1][1:])


@torch.no_grad()
def evaluate_conversations(model, seqs: list[Sequence], config: SFTConfig, pad_id: int, dev,
                           dist: _torch.Dist | None = None) -> dict:
    """eval/sft/* over `seqs`: NLL and top-1 accuracy per assistant token; each rank scores its share."""
    dist = dist or _torch.Dist()
    mine = sorted(dist.shard(seqs), key=lambda s: -len(s[0]))  # similar lengths share a batch
    sums = torch.zeros(3, dtype=torch.float64, device=dev)  # NLL, correct, tokens
    for i in range(0, len(mine), config.batch_size):
        nll, correct, _ = batch_nll(model, mine[i : i + config.batch_size], config, pad_id, dev)
        sums[:2] += torch.stack([nll.double().sum(), correct.double().sum()])
        sums[2] += nll.numel()
    nll_sum, correct, n = dist.sum_(sums).tolist()
    loss = nll_sum / max(n, 1.0)
    return {"eval/sft/loss": loss, "eval/sft/perplexity": math.exp(min(loss, 50.0)),
            "eval/sft/token_accuracy": correct / max(n, 1.0)}


def _batches(n_rows: int, config: SFTConfig):
    """Row indices of each optimizer step: config.epochs shuffled passes,
    config.batch_size rows a step (the last of a pass may be short)."""
    order_rng = random.Random(config.seed)
    for _ in range(config.epochs):
        order = list(range(n_rows))
        order_rng.shuffle(order)
        for i in range(0, n_rows, config.batch_size):
            yield order[i : i + config.batch_size]


class Sums(IntEnum):
    """Positions of a training window's sums (float64, reduced across ranks in one collective)."""

    LOSS = 0  # per step: the step's loss (each rank's share of it)
    CORRECT = 1  # assistant tokens the model's top token predicted
    ANSWER_TOKENS = 2  # assistant tokens (the loss's denominator)
    CONVERSATIONS = 3
    STEPS = 4
    TOKENS = 5  # every token of the conversations, as TRL's num_tokens counts them
    PADDED = 6  # positions the model ran, padding included


def train_sft(
    config: SFTConfig,
    rows: list[dict],
    base_path: str,
    out_dir: str | Path,
    on_metrics: MetricsFn | None = None,
    on_progress: ProgressFn | None = None,
    meta: dict | None = None,
    eval_rows: list[dict] | None = None,
) -> dict:
    """Fine-tune a causal LM on conversation rows; save (merged, when LoRA) to out_dir; return final metrics.

    `eval_rows`, when given, is the held-out set and all of `rows` is trained
    on; otherwise rows are split by prompt (conversation_key). Under torchrun
    every rank runs this with the same arguments, takes its share of every
    batch, and gradients are summed; rank 0 reports and saves.
    """
    from transformers import AutoModelForCausalLM

    # --- setup: data split, tokenized conversations, model, optimizer ---
    check_config("sft", config)
    rows = validate_conversation_rows(rows)
    if not rows:
        raise ValueError("train_sft got no conversation rows")
    n_rows = len(rows) + len(eval_rows or [])
    n_prompts = len({conversation_key(r) for r in rows + (eval_rows or [])})
    if eval_rows:
        train_rows, eval_rows, eval_split = rows, validate_conversation_rows(eval_rows, "eval_rows"), "heldout"
    elif n_prompts >= MIN_PROMPTS_FOR_SPLIT and config.eval_fraction > 0:
        train_rows, eval_rows = split_by_prompt(rows, config.eval_fraction, config.seed, key=conversation_key)
        eval_split = "heldout"
    else:
        # Too few prompts to hold any out: eval on train, and the metrics say so.
        train_rows, eval_rows, eval_split = rows, rows, "train"
    dist = _torch.Dist()
    on_metrics = on_metrics if dist.main else None
    on_progress = on_progress if dist.main else None
    dev = dist.device()
    _torch.seed_all(config.seed)
    tokenizer = _torch.load_tokenizer(base_path, padding_side="right")
    pad_id = tokenizer.pad_token_id
    train_seqs, dropped = tokenize_conversations(tokenizer, train_rows, config.max_length)
    if not train_seqs:
        raise ValueError(f"no training conversation keeps an assistant token within max_length={config.max_length}")
    eval_seqs = train_seqs if eval_rows is train_rows else tokenize_conversations(tokenizer, eval_rows,
                                                                                   config.max_length)[0]
    # SDPA: the packed path's 4D mask goes straight to it (flash-attention-2 would ignore the mask).
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, attn_implementation="sdpa")
    peft_model = None
    if config.lora_r:
        peft_model = _torch.add_lora(model, config, "CAUSAL_LM")
        model = peft_model.get_base_model()
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=dev.type == "cuda")
    total_steps = math.ceil(len(train_seqs) / config.batch_size) * config.epochs
    metrics: dict = {}
    last_train: dict = {}
    window = torch.zeros(len(Sums), dtype=torch.float64, device=dev)
    seen = [0.0, 0.0]  # tokens, assistant tokens since the start (all ranks)
    window_start = time.perf_counter()

    def evaluate() -> dict:
        nonlocal window_start
        model.eval()
        out = {**evaluate_conversations(model, eval_seqs, config, pad_id, dev, dist), "eval/sft/split": eval_split}
        model.train()
        window_start = time.perf_counter()  # evals are not training time
        return out

    # --- loop: NLL steps over shuffled conversations, periodic metrics and evals ---
    model.train()
    step = 0
    for step, batch in enumerate(_batches(len(train_seqs), config), start=1):
        seqs = [train_seqs[j] for j in batch]
        mine = dist.shard(seqs)
        optimizer.zero_grad(set_to_none=True)
        if mine:
            nll, correct, (tokens, slots) = batch_nll(model, mine, config, pad_id, dev)
            # The whole batch's assistant tokens divide, so the ranks' losses add up to the batch mean.
            loss = nll.sum() / max(sum(loss_tokens(s) for s in seqs), 1)
            loss.backward()
            window[[Sums.LOSS, Sums.CORRECT]] += torch.stack([loss.detach().double(), correct.double().sum()])
            window[[Sums.ANSWER_TOKENS, Sums.CONVERSATIONS, Sums.TOKENS, Sums.PADDED]] += torch.tensor(
                [nll.numel(), len(mine), tokens, slots], dtype=torch.float64).to(dev, non_blocking=True)
        window[Sums.STEPS] += 1.0 / dist.world  # summed across ranks: one per step
        dist.sum_grads(params)
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        if step % config.log_every == 0 or step == total_steps:
            w = dist.sum_(window.clone()).tolist()  # .tolist() waits for the device: the clock below is honest
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            seen = [seen[0] + w[Sums.TOKENS], seen[1] + w[Sums.ANSWER_TOKENS]]
            last_train = {
                "sft/loss": w[Sums.LOSS] / max(w[Sums.STEPS], 1e-8),
                "sft/token_accuracy": w[Sums.CORRECT] / max(w[Sums.ANSWER_TOKENS], 1.0),
                "sft/conversations_per_s": w[Sums.CONVERSATIONS] / elapsed,
                "sft/tokens_per_s": w[Sums.TOKENS] / elapsed,
                "sft/tokens": seen[0],
                "sft/assistant_tokens": seen[1],
                "sft/padding_share": 1.0 - w[Sums.TOKENS] / max(w[Sums.PADDED], 1.0),
            }
            if on_metrics:
                on_metrics(step, dict(last_train))
            window.zero_()
            window_start = time.perf_counter()
        if on_progress:
            on_progress(step / total_steps)
        if config.eval_every and step % config.eval_every == 0 and step < total_steps:
            metrics = evaluate()
            if on_metrics:
                on_metrics(step, dict(metrics))

    # --- save: merged weights, tokenizer, meta.json; rank 0 only ---
    metrics = evaluate()
    if on_metrics:
        on_metrics(step, dict(metrics))
    final = {**last_train, **metrics, "sft/steps": step}
    save_checkpoint(out_dir, model, tokenizer, {
        "algorithm": "sft",
        "parent": str(base_path),
        "config": asdict(config),
        "metrics": final,
        "n_conversations": n_rows,
        "n_train_conversations": len(train_seqs),
        "n_eval_conversations": len(eval_seqs),
        "n_dropped_conversations": dropped,
        "n_prompts": n_prompts,
        "world_size": dist.world,
        **(meta or {}),
    }, kind="policy", dist=dist, peft_model=peft_model)
    if on_progress:
        on_progress(1.0)
    return final
