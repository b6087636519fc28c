"""Run an RLOO policy step against a reward model.

    python -m rlhf.train_policy --prompts p.jsonl --policy PATH --ref PATH --reward PATH --out DIR [--num-iterations 20 --k 4]
    torchrun --nproc_per_node 2 -m rlhf.train_policy ...   # data parallel; rank 0 prints and saves

p.jsonl rows need a "prompt" (str or chat turns). Prints one JSON line of metrics per iteration.
"""

from __future__ import annotations

import sys

from rlhf.cli import trainer_main
from rlhf.configs import RLOOConfig


def _train(args, config: RLOOConfig, on_metrics) -> dict:
    from rlhf.data import read_jsonl
    from rlhf.rloo import rloo_train

    rows = read_jsonl(args.prompts)
    for n, row in enumerate(rows, start=1):
        if "prompt" not in row:
            raise SystemExit(f"{args.prompts}: row {n} has no 'prompt'")
    return rloo_train(config, [r["prompt"] for r in rows], args.policy, args.ref, args.out,
                      reward_path=args.reward, on_metrics=on_metrics)


def main(argv: list[str] | None = None) -> int:
    return trainer_main(argv, prog="python -m rlhf.train_policy", doc=__doc__, config_cls=RLOOConfig, paths={
        "prompts": "JSONL with a 'prompt' per row",
        "policy": "policy folder to start from",
        "ref": "frozen reference folder for the KL term",
        "reward": "reward model folder (from rlhf.train_reward)",
        "out": "folder to write the new policy to",
    }, train=_train)


if __name__ == "__main__":
    sys.exit(main())
