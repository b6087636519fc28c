"""Train a Bradley–Terry reward model from a preference JSONL file.

    python -m rlhf.train_reward --data pairs.jsonl --base PATH --out DIR [--epochs 2 --lr 1e-5 --no-margin]
    torchrun --nproc_per_node 2 -m rlhf.train_reward ...   # data parallel; rank 0 prints and saves

Prints one JSON line of metrics per report and the final metrics last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    from rlhf._torch import close_process_group
    from rlhf.cli import add_dataclass_args, dataclass_from_args, print_metrics
    from rlhf.data import file_sha256_of, read_preferences
    from rlhf.reward import RewardConfig, train_reward

    parser = argparse.ArgumentParser(prog="python -m rlhf.train_reward", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="preference JSONL (prompt, chosen, rejected[, margin, weight, prompt_id])")
    parser.add_argument("--base", required=True, help="local model folder or hub id to start from")
    parser.add_argument("--out", required=True, help="folder to write the reward model to")
    add_dataclass_args(parser, RewardConfig)
    args = parser.parse_args(argv)
    config = dataclass_from_args(RewardConfig, args)
    rows = read_preferences(args.data)
    final = train_reward(config, rows, args.base, args.out, on_metrics=print_metrics,
                         meta={"dataset_sha256": file_sha256_of(args.data)})
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one copy of the result
        print(json.dumps({"final": final}))
    close_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
