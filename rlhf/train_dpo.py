"""Train the policy with DPO straight from a preference JSONL file.

    python -m rlhf.train_dpo --data pairs.jsonl --policy PATH --ref PATH --out DIR [--beta 0.1 --lora-r 16]
    torchrun --nproc_per_node 2 -m rlhf.train_dpo ...   # data parallel; rank 0 prints and saves

Prints one JSON line of metrics per report and the final metrics last.
"""

from __future__ import annotations

import sys

from rlhf.cli import preference_file, trainer_main
from rlhf.configs import DPOConfig


def _train(args, config: DPOConfig, on_metrics) -> dict:
    from rlhf.dpo import dpo_train

    rows, meta = preference_file(args.data)
    return dpo_train(config, rows, args.policy, args.ref, args.out, on_metrics=on_metrics, meta=meta)


def main(argv: list[str] | None = None) -> int:
    return trainer_main(argv, prog="python -m rlhf.train_dpo", doc=__doc__, config_cls=DPOConfig, paths={
        "data": "preference JSONL (prompt, chosen, rejected[, weight])",
        "policy": "policy folder (or hub id) to start from",
        "ref": "frozen reference folder; usually the same as --policy",
        "out": "folder to write the new policy to",
    }, train=_train)


if __name__ == "__main__":
    sys.exit(main())
