"""Run an RLOO policy step against a reward model.

    python -m rlhf.train_policy --prompts p.jsonl --policy PATH --ref PATH --reward PATH --out DIR [--num-iterations 20 --k 4]
    torchrun --nproc_per_node 2 -m rlhf.train_policy ...   # data parallel; rank 0 prints and saves

p.jsonl rows need a "prompt" (str or chat turns). Prints one JSON line of metrics per iteration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    from rlhf._torch import close_process_group
    from rlhf.cli import add_dataclass_args, dataclass_from_args, print_metrics
    from rlhf.data import read_jsonl
    from rlhf.rloo import RLOOConfig, rloo_train

    parser = argparse.ArgumentParser(prog="python -m rlhf.train_policy", description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", required=True, help="JSONL with a 'prompt' per row")
    parser.add_argument("--policy", required=True, help="policy folder to start from")
    parser.add_argument("--ref", required=True, help="frozen reference folder for the KL term")
    parser.add_argument("--reward", required=True, help="reward model folder (from rlhf.train_reward)")
    parser.add_argument("--out", required=True, help="folder to write the new policy to")
    add_dataclass_args(parser, RLOOConfig)
    args = parser.parse_args(argv)
    config = dataclass_from_args(RLOOConfig, args)
    rows = read_jsonl(args.prompts)
    for n, row in enumerate(rows, start=1):
        if "prompt" not in row:
            raise SystemExit(f"{args.prompts}: row {n} has no 'prompt'")
    final = rloo_train(config, [r["prompt"] for r in rows], args.policy, args.ref, args.out,
                       reward_path=args.reward, on_metrics=print_metrics)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one copy of the result
        print(json.dumps({"final": final}))
    close_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
