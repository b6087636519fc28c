"""Train a Bradley–Terry reward model from a preference JSONL file.

    python -m rlhf.train_reward --data pairs.jsonl --base PATH --out DIR [--epochs 2 --lr 1e-5 --no-margin]
    torchrun --nproc_per_node 2 -m rlhf.train_reward ...   # data parallel; rank 0 prints and saves

Prints one JSON line of metrics per report and the final metrics last.
"""

from __future__ import annotations

import sys

from rlhf.cli import preference_file, trainer_main
from rlhf.configs import RewardConfig


def _train(args, config: RewardConfig, on_metrics) -> dict:
    from rlhf.reward import train_reward

    rows, meta = preference_file(args.data)
    return train_reward(config, rows, args.base, args.out, on_metrics=on_metrics, meta=meta)


def main(argv: list[str] | None = None) -> int:
    return trainer_main(argv, prog="python -m rlhf.train_reward", doc=__doc__, config_cls=RewardConfig, paths={
        "data": "preference JSONL (prompt, chosen, rejected[, margin, weight, prompt_id])",
        "base": "local model folder or hub id to start from",
        "out": "folder to write the reward model to",
    }, train=_train)


if __name__ == "__main__":
    sys.exit(main())
