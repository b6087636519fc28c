import pytest

from tests.annotate.simulation.campaigns import LONG, SHORT


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory) -> str:
    """A tiny scalar-head model saved as a reward model folder (random weights, seeded)."""
    import torch
    from transformers import AutoConfig, LlamaForSequenceClassification

    from rlhf.tiny import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("rm") / "rm", [SHORT, LONG, "Question?"] * 30, seed=0)
    config = AutoConfig.from_pretrained(path)
    config.num_labels = 1
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight *= 1000  # scores apart by whole units, so the raters' picks are not coin flips
    model.save_pretrained(path)
    return path
