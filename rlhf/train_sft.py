"""Supervised fine-tuning of the policy on curated answers, from a conversation JSONL file.

    python -m rlhf.train_sft --data conversations.jsonl --base PATH --out DIR [--epochs 2 --lora-r 16]
    torchrun --nproc_per_node 2 -m rlhf.train_sft ...   # data parallel; rank 0 prints and saves

Each line is {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}
(TRL's conversational SFT schema); the loss is on the assistant turns only.
Prints one JSON line of metrics per report and the final metrics last.
"""

from __future__ import annotations

import sys

from rlhf.cli import trainer_main
from rlhf.configs import SFTConfig


def _train(args, config: SFTConfig, on_metrics) -> dict:
    from rlhf.data import read_conversations
    from rlhf.sft import train_sft
    from rlhf.store import file_sha256

    rows = read_conversations(args.data)
    return train_sft(config, rows, args.base, args.out, on_metrics=on_metrics,
                     meta={"dataset_sha256": file_sha256(args.data)})


def main(argv: list[str] | None = None) -> int:
    return trainer_main(argv, prog="python -m rlhf.train_sft", doc=__doc__, config_cls=SFTConfig, paths={
        "data": "conversation JSONL ({\"messages\": [{role, content}, ...]} a line)",
        "base": "model folder (or hub id) to fine-tune",
        "out": "folder to write the fine-tuned policy to",
    }, train=_train)


if __name__ == "__main__":
    sys.exit(main())
