"""Shared fixtures for the rlhf tests: a tiny model built on the spot (no hub)."""

import os
import random
import sys
from pathlib import Path

import pytest

# Tests must never reach a model hub; set before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The repo root on sys.path so `import rlhf` works without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

COLOURS = ["blue", "green", "red", "grey", "black", "white"]
THINGS = ["sky", "sea", "grass", "road", "cloud", "snow"]


def synthetic_texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        thing, colour = rng.choice(THINGS), rng.choice(COLOURS)
        lines.append(f"question {i}: is the {thing} {colour}? answer: {rng.choice(['yes', 'no'])}, the {thing} is {colour}.")
    return lines


def separable_pairs(n_prompts: int = 30, per_prompt: int = 3, seed: int = 0) -> list[dict]:
    """Chosen answers start with 'yes', rejected with 'no': trivially separable."""
    rng = random.Random(seed)
    rows = []
    for i in range(n_prompts):
        thing, colour = rng.choice(THINGS), rng.choice(COLOURS)
        prompt = f"question {i}: is the {thing} {colour}?"
        for _ in range(per_prompt):
            tail = f"the {rng.choice(THINGS)} is {rng.choice(COLOURS)}."
            rows.append({"prompt": prompt, "chosen": f"yes, {tail}", "rejected": f"no, {tail}", "prompt_id": str(i)})
    return rows


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    from rlhf.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", synthetic_texts(), seed=0)
