"""Train the policy with DPO straight from a preference JSONL file.

    python -m rlhf.train_dpo --data pairs.jsonl --policy PATH --ref PATH --out DIR [--beta 0.1 --lora-r 16]
    torchrun --nproc_per_node 2 -m rlhf.train_dpo ...   # data parallel; rank 0 prints and saves

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
    from rlhf.dpo import DPOConfig, dpo_train

    parser = argparse.ArgumentParser(prog="python -m rlhf.train_dpo", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="preference JSONL (prompt, chosen, rejected[, weight])")
    parser.add_argument("--policy", required=True, help="policy folder (or hub id) to start from")
    parser.add_argument("--ref", required=True, help="frozen reference folder; usually the same as --policy")
    parser.add_argument("--out", required=True, help="folder to write the new policy to")
    add_dataclass_args(parser, DPOConfig)
    args = parser.parse_args(argv)
    config = dataclass_from_args(DPOConfig, args)
    rows = read_preferences(args.data)
    final = dpo_train(config, rows, args.policy, args.ref, args.out, on_metrics=print_metrics,
                      meta={"dataset_sha256": file_sha256_of(args.data)})
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one copy of the result
        print(json.dumps({"final": final}))
    close_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
