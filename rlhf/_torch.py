"""Device and precision choices shared by the trainers (imports torch)."""

from __future__ import annotations

import contextlib
import random

import torch


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")



def autocast(dev: torch.device):
    # bf16 autocast on GPU keeps fp32 master weights (stable AdamW) while the
    # matmuls run at bf16 speed; CPU stays plain fp32, where bf16 is slow.
    if dev.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def same_checkpoint(a: str, b: str) -> bool:
    """Whether two model references (folders or hub ids) name the same checkpoint."""
    from pathlib import Path

    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a == b


def seed_all(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def load_tokenizer(path: str, padding_side: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    # Many causal LMs ship no pad token; EOS is the usual stand-in, which is
    # why pooling and masking here never look for pad ids to find sequence ends.
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.eos_token is None:
        raise ValueError(f"tokenizer at {path} has no eos_token; set one before training (chat formatting appends it)")
    tok.padding_side = padding_side
    return tok


# --- several processes (torchrun / accelerate launch): data parallel by hand ---
# Each rank takes its share of every global batch, gradients are summed across
# ranks, and every rank steps the same optimizer on the same gradient, so the
# weights stay identical without wrapping the model (the trainers call the
# backbone and the score head directly, which DDP's forward hooks would miss).


class Dist:
    """World size, rank and the few collectives the trainers need; a no-op for one process."""

    def __init__(self):
        import os

        import torch.distributed as dist

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            # gloo runs on any CPU; NCCL is the fast path between GPUs.
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if torch.cuda.is_available():
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group(backend=backend)
        self._dist = dist

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank if self.world > 1 else torch.cuda.current_device())
        return torch.device("cpu")

    def shard(self, items: list) -> list:
        """This rank's share of a global batch (every world-th item)."""
        return items[self.rank :: self.world]

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            self._dist.all_reduce(tensor, op=self._dist.ReduceOp.SUM)
        return tensor

    def sum_grads(self, params) -> None:
        if self.world == 1:
            return
        params = list(params)
        for p in params:
            if p.grad is None:  # a rank whose share of the batch was empty still joins the sum
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        # One flat buffer: one collective per step instead of one per tensor.
        flat = torch.cat([g.reshape(-1) for g in grads])
        self._dist.all_reduce(flat, op=self._dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def barrier(self) -> None:
        if self.world > 1:
            self._dist.barrier()


def close_process_group() -> None:
    """Tear down the process group before the interpreter exits. Left to the
    exit hooks, gloo's threads can outlive their sockets once the other rank
    is gone, and the process aborts ("terminate called without an active
    exception") after its work is done: torchrun then reports the run failed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# --- LoRA through peft (optional dependency) ---


def add_lora(model, config, task_type: str, modules_to_save: list[str] | None = None):
    """Wrap `model` in a fresh LoRA adapter per the config's lora_* fields.

    Returns the PeftModel; its get_base_model() is the same transformers model
    with the adapter layers injected, so callers keep calling that directly.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError(
            f"lora_r={config.lora_r} needs the 'peft' package: pip install peft (or set lora_r=0 for full fine-tuning)"
        ) from None
    targets = config.lora_target_modules.strip()
    target_modules = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=target_modules, task_type=task_type, modules_to_save=modules_to_save)
    return get_peft_model(model, lora)
