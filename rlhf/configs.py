"""The trainers' config dataclasses, torch-free so that the web process, which
never imports torch, can build, validate and store them. The trainers
re-export them: `from rlhf.reward import RewardConfig` works too. Each field's
metadata "help" says what it does and its unit (the CLI's --help shows it).

    python -m rlhf.train_reward --help   # every field below is a CLI flag
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field


def setting(default, help: str):
    """A config field and what it means, with its unit: the --help text of
    its CLI flag (rlhf.cli)."""
    return field(default=default, metadata={"help": help})


@dataclass
class RewardConfig:
    lr: float = setting(1e-5, "AdamW learning rate; 1e-5 suits full fine-tuning of ~100M+ models")
    epochs: int = setting(1, "passes over the training pairs")
    batch_size: int = setting(8, "pairs per optimizer step (2x sequences per forward)")
    max_length: int = setting(512, "tokens per prompt+response; longer texts keep their last tokens")
    eval_fraction: float = setting(0.2,
        "share of prompts (not pairs) held out as the test split: reported (eval/reward/*), never chosen on")
    val_fraction: float = setting(0.1,
        "share of the remaining prompts held out for validation (eval/reward/val_*): early stopping "
        "reads it, never the test split; 0 = none (then no patience)")
    seed: int = setting(0, "data order, split and score-head init")
    margin: bool = setting(True, "subtract each row's `margin` inside the Bradley–Terry sigmoid")
    center_rewards_coefficient: float | None = setting(None, "weight of mean((r_c + r_r)^2); None = off")
    weight_decay: float = setting(0.0, "AdamW decoupled weight decay")
    max_grad_norm: float = setting(1.0, "gradient clipping threshold (L2 norm)")
    log_every: int = setting(10, "optimizer steps between reward/* metric reports")
    eval_every: int = setting(0, "optimizer steps between evals; 0 = at the end of each epoch")
    patience: int | None = setting(None,
        "evals without eval/reward/val_loss improvement before stopping (the lowest one's weights are kept); "
        "None = never stop early")
    lora_r: int = setting(0, "LoRA rank; 0 = full fine-tuning (LoRA needs `pip install peft`)")
    lora_alpha: int = setting(16, "LoRA scaling numerator: updates are scaled by lora_alpha / lora_r")
    lora_dropout: float = setting(0.0, "dropout on the LoRA input, during training steps only")
    lora_target_modules: str = setting("all-linear",
        'comma-separated module names (e.g. "q_proj,v_proj") or "all-linear"')
    # The embeddings and lower blocks stay as pretrained: fewer weights to fit a few thousand pairs with,
    # and the backward pass stops at the lowest trainable block (bench/RESULTS.md, real-data runs).
    trainable_layers: int = setting(0,
        "train only the top N transformer blocks, the final norm and the head; 0 = all")
    # Speed: none of these changes a batch's loss (tests/rlhf/test_reward_packing.py); measured by
    # bench/reward_throughput.py. Length bucketing changes which pairs share a batch.
    packing: bool = setting(True,
        "padding-free rows: positions restart at 0, each sequence scored at its own last token")
    share_prefix: bool = setting(True,
        "run the tokens chosen and rejected share (the prompt, at least) once per pair")
    pack_length: int = setting(0,
        "tokens per packed row; 0 = the batch's longest pair (attention work grows with its square)")
    length_bucketing: bool = setting(False, "batches of pairs of similar length (less padding; batches less random)")
    torch_compile: bool = setting(False, "torch.compile the transformer (GPU; the first steps pay the compile time)")
    gradient_checkpointing: bool = setting(False, "recompute activations in backward: less memory, ~30% slower")
    # Rubric aspects (the issue-19 data contract): rows may carry {"aspects": {name: 1 | -1 | 0}}.
    aspects: list[str] = field(default_factory=list, metadata={"help":
        "aspect names that get a reward head each; empty = the overall preference only"})
    aspect_weights: dict[str, float] = field(default_factory=dict, metadata={"help":
        'the saved score is sum(w * head): {"overall": w, "<aspect>": w}; missing: overall 1, aspects 0'})


@dataclass
class RLOOConfig:
    k: int = setting(4, "samples per prompt; the baseline of each is the mean of the other k-1")
    beta: float = setting(0.05, "KL coefficient: reward' = reward - beta * sum_t(logp_old - logp_ref)")
    lr: float = setting(1e-6, "AdamW learning rate (TRL's RLOO default; tiny test models need ~1e-3)")
    num_iterations: int = setting(10, "sample-then-update rounds")
    prompts_per_iteration: int = setting(8, "prompts sampled per round (k completions each)")
    ppo_epochs: int = setting(1, "optimisation passes over each round's samples")
    minibatch_size: int = setting(16, "sequences per optimizer step")
    cliprange: float = setting(0.2, "PPO clip on the importance ratio: [1 - c, 1 + c]")
    ratio_level: str = setting("sequence", '"sequence" (TRL RLOO: exp of summed token log-ratios) or "token"')
    normalize_advantages: bool = setting(False, "rescale advantages to unit std per round")
    max_new_tokens: int = setting(64, "completion length cap, in tokens")
    temperature: float = setting(1.0, "sampling temperature; log-probs use the same temperature")
    generation_batch_size: int = setting(0, "sequences per generate call; 0 = all of a round's prompts x k at once")
    generation_compile: bool = setting(False,
        "CUDA: static KV cache + compiled decode step (CUDA graphs); round 1 compiles")
    generation_backend: str = setting("auto",
        '"transformers", "vllm", or "auto" (vLLM when installed and on a GPU)')
    vllm_gpu_memory_utilization: float = setting(0.3, "share of GPU memory the colocated vLLM engine may take")
    logprob_batch_size: int = setting(32, "sequences per no-grad log-prob forward")
    max_grad_norm: float = setting(1.0, "gradient clipping threshold (L2 norm)")
    reward_batch_size: int = setting(16,
        "samples per reward-model forward, at most (run longest first, under a 16,384-token budget)")
    seed: int = setting(0, "sampling and prompt order")
    lora_r: int = setting(0, "LoRA rank; 0 = full fine-tuning (LoRA needs `pip install peft`)")
    lora_alpha: int = setting(16, "LoRA scaling numerator: updates are scaled by lora_alpha / lora_r")
    lora_dropout: float = setting(0.0, "dropout on the LoRA input, during training steps only")
    lora_target_modules: str = setting("all-linear",
        'comma-separated module names (e.g. "q_proj,v_proj") or "all-linear"')
    # The campaign's KL budget (rlhf/kl.py), checked on each round's own samples and after the last update.
    kl_budget: float | None = setting(None,
        "nats per answer the policy may move from the reference; over it, the step stops and keeps the last weights "
        "inside it; None = no budget")


@dataclass
class DPOConfig:
    beta: float = setting(0.1,
        "implicit-KL strength: loss = -logsigmoid(beta * (chosen log-ratio - rejected log-ratio))")
    label_smoothing: float = setting(0.0,
        "assumed share of flipped labels (conservative DPO); 0 = plain DPO, must be < 0.5")
    lr: float = setting(1e-6, "AdamW learning rate (TRL's DPO default; tiny test models need ~1e-3)")
    epochs: int = setting(1, "passes over the preference pairs")
    batch_size: int = setting(8, "pairs per optimizer step (2x sequences per forward)")
    max_length: int = setting(512,
        "tokens per prompt+response; the prompt loses its start first, then the response its end")
    ref_batch_size: int = setting(16, "pairs per no-grad reference forward (computed once, before training)")
    weight_decay: float = setting(0.0, "AdamW decoupled weight decay")
    max_grad_norm: float = setting(1.0, "gradient clipping threshold (L2 norm)")
    log_every: int = setting(10, "optimizer steps between policy/* metric reports")
    seed: int = setting(0, "data order")
    # 1 is online iterative DPO: each round's fresh pairs, sampled from the
    # current policy, update that policy once; older pairs are not trained again.
    last_rounds: int = setting(0, "train on the pairs of the last N rounds only (each row's round); 0 = every pair")
    # The campaign's KL budget (rlhf/kl.py). DPO draws no samples of its own,
    # so a check samples one answer to each of kl_prompts training prompts.
    kl_budget: float | None = setting(None,
        "nats per answer the policy may move from the reference; over it, the step stops and keeps the last weights "
        "inside it; None = no budget")
    kl_check_every: int = setting(8,
        "optimizer steps between KL checks (and always after the last step); only with kl_budget")
    kl_prompts: int = setting(32, "training prompts a KL check samples an answer to")
    kl_max_new_tokens: int = setting(64,
        "answer length of a KL check's samples (the platform sets the campaign's generate length)")
    lora_r: int = setting(0, "LoRA rank; 0 = full fine-tuning (LoRA needs `pip install peft`)")
    lora_alpha: int = setting(16, "LoRA scaling numerator: updates are scaled by lora_alpha / lora_r")
    lora_dropout: float = setting(0.0, "dropout on the LoRA input, during training steps only")
    lora_target_modules: str = setting("all-linear",
        'comma-separated module names (e.g. "q_proj,v_proj") or "all-linear"')


@dataclass
class SFTConfig:
    lr: float = setting(2e-5, "AdamW learning rate (TRL's SFT default; tiny test models need ~1e-3)")
    epochs: int = setting(1, "passes over the training conversations")
    batch_size: int = setting(8, "conversations per optimizer step; the loss is the mean over all their assistant tokens")
    max_length: int = setting(1024,
        "tokens per conversation; longer ones keep their start (TRL's keep_start), and one left with no "
        "assistant token is dropped")
    eval_fraction: float = setting(0.1, "share of prompts (not conversations) held out for eval/sft/*")
    seed: int = setting(0, "data order and split")
    weight_decay: float = setting(0.0, "AdamW decoupled weight decay")
    max_grad_norm: float = setting(1.0, "gradient clipping threshold (L2 norm)")
    log_every: int = setting(10, "optimizer steps between sft/* metric reports")
    eval_every: int = setting(0, "optimizer steps between evals; 0 = once, after the last step")
    # Speed only: packed and padded batches give the same loss (tests/rlhf/test_sft.py).
    packing: bool = setting(True,
        "padding-free rows: several conversations a row, positions restarting at 0, no attention across them")
    pack_length: int = setting(0,
        "tokens per packed row; 0 = the batch's longest conversation (attention work grows with its square)")
    lora_r: int = setting(0, "LoRA rank; 0 = full fine-tuning (LoRA needs `pip install peft`)")
    lora_alpha: int = setting(16, "LoRA scaling numerator: updates are scaled by lora_alpha / lora_r")
    lora_dropout: float = setting(0.0, "dropout on the LoRA input, during training steps only")
    lora_target_modules: str = setting("all-linear",
        'comma-separated module names (e.g. "q_proj,v_proj") or "all-linear"')


@dataclass
class GenerateConfig:
    max_new_tokens: int = setting(64, "completion length cap, in tokens")
    temperature: float = setting(0.8, "softmax temperature; ignored when do_sample is False")
    top_p: float = setting(0.95, "nucleus sampling mass; 1.0 = off")
    do_sample: bool = setting(True, "False = greedy decoding")
    seed: int = setting(0, "torch RNG seed set once before the first batch")
    batch_size: int = setting(16, "sequences (prompts x samples) per generate call")


# The sections of a training config as the platform stores it per run.
# "dpo" holds the settings of the DPO policy step, for campaigns that train
# the policy straight from the human pairs instead of with RLOO.
# "sft" holds the settings of supervised fine-tuning on curated answers
# (rlhf.sft): the platform's sft stage, before the policy step.
SECTIONS = {"reward": RewardConfig, "policy": RLOOConfig, "dpo": DPOConfig, "sft": SFTConfig,
            "generate": GenerateConfig}
# How a campaign's policy step is trained: top-level key "method" of the
# stored config. "rloo" samples and scores with the reward model ("policy"
# section); "dpo" learns straight from the human pairs ("dpo" section).
POLICY_METHODS = ("rloo", "dpo")


def policy_method(config: dict) -> str:
    """The stored config's policy method; "rloo" when it names none."""
    method = config.get("method", "rloo")
    if method not in POLICY_METHODS:
        raise ValueError(f"method must be one of {', '.join(POLICY_METHODS)}, got {method!r}")
    return method


# What each setting may hold beyond its type (the type alone lets 0, negatives,
# NaN and unknown words in, and a negative learning rate trains backwards
# without an error): (test, the words an error uses). A (section, name) key
# overrides the plain name where a section means something else by it. None
# (the off value of the optional settings) is never tested.
_MORE_THAN_0 = (lambda v: v > 0, "more than 0")  # NaN fails every comparison: refused too
_AT_LEAST_0 = (lambda v: v >= 0, "0 or more")
_AT_LEAST_1 = (lambda v: v >= 1, "1 or more")


def _one_of(*choices: str) -> tuple:
    return (lambda v: v in choices, "one of " + ", ".join(repr(c) for c in choices))


RULES: dict = {
    # shared by the trainers
    "seed": _AT_LEAST_0, "lr": _MORE_THAN_0, "epochs": _AT_LEAST_1, "batch_size": _AT_LEAST_1,
    "max_length": _AT_LEAST_1,
    "weight_decay": _AT_LEAST_0, "max_grad_norm": _MORE_THAN_0, "log_every": _AT_LEAST_1,
    "lora_r": _AT_LEAST_0, "lora_alpha": _MORE_THAN_0, "lora_dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "max_new_tokens": _AT_LEAST_1, "temperature": _MORE_THAN_0,
    "kl_budget": _MORE_THAN_0, "kl_check_every": _AT_LEAST_1, "kl_prompts": _AT_LEAST_1,
    "kl_max_new_tokens": _AT_LEAST_1,
    # reward
    "eval_fraction": (lambda v: 0 <= v < 1, "in [0, 1) (0: no held-out split)"),
    "val_fraction": (lambda v: 0 <= v < 1, "in [0, 1) (0: no validation split)"),
    "center_rewards_coefficient": _AT_LEAST_0, "eval_every": _AT_LEAST_0, "patience": _AT_LEAST_1,
    "trainable_layers": _AT_LEAST_0, "pack_length": _AT_LEAST_0,
    # policy (RLOO)
    "k": (lambda v: v >= 2, "2 or more (the leave-one-out baseline needs another sample)"),
    "beta": _AT_LEAST_0, "num_iterations": _AT_LEAST_1, "prompts_per_iteration": _AT_LEAST_1,
    "ppo_epochs": _AT_LEAST_1, "minibatch_size": _AT_LEAST_1, "cliprange": _MORE_THAN_0,
    "ratio_level": _one_of("sequence", "token"), "generation_batch_size": _AT_LEAST_0,
    "generation_backend": _one_of("auto", "transformers", "vllm"),
    "vllm_gpu_memory_utilization": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "logprob_batch_size": _AT_LEAST_1, "reward_batch_size": _AT_LEAST_1,
    # dpo
    ("dpo", "beta"): _MORE_THAN_0,  # at 0 every pair's loss is log 2 and nothing trains
    "label_smoothing": (lambda v: 0 <= v < 0.5, "in [0, 0.5) (at 0.5 the labels say nothing)"),
    "ref_batch_size": _AT_LEAST_1, "last_rounds": _AT_LEAST_0,
    # generate
    "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
}


def _rule_error(section: str, key: str, value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{section}.{key} must be a finite number, not {value!r}"
    rule = RULES.get((section, key)) or RULES.get(key)
    if rule and not rule[0](value):
        return f"{section}.{key} must be {rule[1]}, not {value!r}"
    return None


def check_config(section: str, config) -> None:
    """Raise ValueError naming every bad setting of a trainer's config dataclass:
    the trainers' entry check, the same rules the API answers 400 with."""
    errors = config_errors({section: dataclasses.asdict(config)})
    if errors:
        raise ValueError("; ".join(errors))


def from_dict(cls, values: dict):
    """cls(**values), with a message naming the unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; known: {sorted(names)}")
    return cls(**values)


def _type_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp)


def config_errors(config: dict) -> list[str]:
    """Every problem with a {"reward": {...}, "policy": {...}, "dpo": {...}, "generate": {...}} dict."""
    sections = SECTIONS
    errors = []
    for section, values in config.items():
        if section == "method":
            if values not in POLICY_METHODS:
                errors.append(f"method must be one of {', '.join(POLICY_METHODS)}, not {values!r}")
            continue
        cls = sections.get(section)
        if cls is None:
            errors.append(f"unknown section '{section}' (use {', '.join(sections)} or method)")
            continue
        if not isinstance(values, dict):
            errors.append(f"'{section}' must be an object")
            continue
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            if key not in hints:
                errors.append(f"{section}.{key} is not a setting (known: {', '.join(sorted(hints))})")
            elif not _type_ok(value, hints[key]):
                errors.append(f"{section}.{key} must be {_type_name(hints[key])}, not {value!r}")
            elif (error := _rule_error(section, key, value)) is not None:
                errors.append(error)
        if values.get("trainable_layers") and values.get("lora_r"):
            # LoRA freezes every base weight itself; which blocks train would be ambiguous.
            errors.append(f"{section}: set trainable_layers or lora_r, not both")
        if section == "reward" and values.get("patience") is not None and \
                values.get("val_fraction", RewardConfig.val_fraction) == 0:
            # Stopping on the test split would make the reported accuracy a chosen one.
            errors.append("reward: patience needs val_fraction > 0 (early stopping reads the validation split, "
                          "never the test split)")
    return errors
