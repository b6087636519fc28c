"""Campaigns for simulated raters to rate: a round of one short and one long
answer per prompt (the shorter preference has a clear pick each time), gold
pairs whose chosen answer is the short one, and the next round as training
would open it."""
import json
import random

from annotate.models import Campaign, PolicyVersion
from annotate.services.gold import gold_import
from annotate.services.rounds import round_open, round_prompts
from annotate.services.simulation import simulation_run
from annotate.simulation.raters import SimulationConfig, SimulationResult
from tests.factories import CampaignFactory, PolicyVersionFactory, PromptFactory, AnswerFactory

SHORT = "Paris."
LONG = "The capital of France is Paris, a large city on the Seine with many museums and old bridges."


def campaign_with_round(*, prompts: int, gold: int = 0, **fields) -> Campaign:
    """Round 0 open: each prompt answered twice by v0, one short answer and one
    long (on a random sample index), plus `gold` gold pairs whose chosen
    answer is the short one, mixed in at gold_frequency."""
    campaign = CampaignFactory(comparisons_per_round=prompts, **fields)
    v0 = PolicyVersionFactory(campaign=campaign, version=0)
    rng = random.Random(7)
    for i, prompt in enumerate(PromptFactory.create_batch(prompts, campaign=campaign)):
        texts = [f"Answer {i}.", f"Answer {i}: " + LONG]
        rng.shuffle(texts)
        AnswerFactory(prompt=prompt, policy_version=v0, sample_index=0, text=texts[0])
        AnswerFactory(prompt=prompt, policy_version=v0, sample_index=1, text=texts[1])
    if gold:
        lines = b"".join(
            json.dumps({"external_id": f"g{i}", "prompt": f"Gold question {i}?", "chosen": f"Right {i}.",
                        "rejected": f"Wrong {i}: " + LONG}).encode() + b"\n"
            for i in range(gold)
        )
        gold_import(campaign=campaign, data=lines)
    round_open(campaign=campaign, index=0, candidate=v0, baseline=v0)
    return campaign


def open_next_round(campaign: Campaign, index: int):
    """What the training run's generate and open stages leave: v<index> answered the round's prompts."""
    previous = PolicyVersion.objects.get(campaign=campaign, version=index - 1)
    new = PolicyVersionFactory(campaign=campaign, version=index, parent=previous)
    for prompt in round_prompts(campaign=campaign, index=index):
        AnswerFactory(prompt=prompt, policy_version=new, sample_index=0, text="Short.")
        if not previous.answers.filter(prompt=prompt, sample_index=0).exists():
            AnswerFactory(prompt=prompt, policy_version=previous, sample_index=0, text=LONG)
    return round_open(campaign=campaign, index=index, candidate=new, baseline=previous)


def run(campaign: Campaign, **config) -> SimulationResult:
    """A pool rating the round open now, in this process, until nothing is left in it for them."""
    config.setdefault("rounds", None)
    return simulation_run(campaign=campaign, config=SimulationConfig(**config), until_round=None)
