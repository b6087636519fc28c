"""Turn a campaign's base-model reference into a folder of safetensors.

A reference is a local folder (what tests and `make run` use) or a hub id
such as `HuggingFaceTB/SmolLM2-135M-Instruct` (where the hub is reachable).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from rlhf.store import FORBIDDEN_SUFFIXES


def materialize(reference: str, out_dir: str | Path) -> str:
    """Write the model and tokenizer named by `reference` into out_dir as
    safetensors; returns out_dir."""
    out = Path(out_dir)
    src = Path(reference).expanduser()
    if reference.startswith(("/", "./", "../", "~")) and not src.is_dir():
        raise FileNotFoundError(f"The base model folder {reference} does not exist on this worker.")
    if src.is_dir():
        pickles = [p.name for p in src.rglob("*") if p.name.lower().endswith(FORBIDDEN_SUFFIXES)]
        if not list(src.glob("*.safetensors")):
            raise ValueError(
                f"{src} holds no *.safetensors weights{' (found ' + ', '.join(pickles) + ')' if pickles else ''}: "
                "Ratchet never unpickles weights. Convert it with save_pretrained(safe_serialization=True)."
            )
        shutil.copytree(src, out, ignore=shutil.ignore_patterns("manifest.json", *[f"*{s}" for s in FORBIDDEN_SUFFIXES]))
        return str(out)
    # A hub id: transformers fetches it (the platform then owns a copy, so
    # later rounds never depend on the hub again).
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(reference, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(reference)
    model.save_pretrained(out)  # safetensors is transformers' default
    tokenizer.save_pretrained(out)
    return str(out)
