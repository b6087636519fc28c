"""The command-line shell of the trainers: a config dataclass becomes argparse
flags (so CLIs and the platform share one definition of every
hyperparameter), and `trainer_main` is what every `python -m rlhf.train_*`
does around its trainer. No torch here until a trainer runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from typing import Callable


def _base_type(tp):
    # `float | None` -> float; the flag stays optional because its default is None.
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def add_dataclass_args(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field of `cls` (--lr for lr, --no-margin for a bool), its help from the field's metadata."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{f.metadata.get('help', '')} (default: {default})".replace("%", "%%")
        if tp is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif tp in (int, float, str):
            parser.add_argument(flag, dest=f.name, type=tp, default=None, help=help_text)
        elif typing.get_origin(tp) is list:  # --aspects correctness,safety
            parser.add_argument(flag, dest=f.name, type=lambda v: [x.strip() for x in v.split(",") if x.strip()],
                                default=None, help=help_text)
        elif typing.get_origin(tp) is dict:  # --aspect-weights '{"overall": 1, "safety": 0.5}'
            parser.add_argument(flag, dest=f.name, type=json.loads, default=None, help=help_text)


def dataclass_from_args(cls, args: argparse.Namespace):
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    return cls(**given)


def print_metrics(step: int, metrics: dict) -> None:
    print(json.dumps({"step": step, **metrics}, default=str), flush=True)


def preference_file(path: str) -> tuple[list[dict], dict]:
    """The rows of a preference JSONL and the meta.json entry that names the file (its sha256)."""
    from rlhf.data import read_preferences
    from rlhf.store import file_sha256

    return read_preferences(path), {"dataset_sha256": file_sha256(path)}


TrainFn = Callable[[argparse.Namespace, typing.Any, Callable[[int, dict], None]], dict]


def trainer_main(argv: list[str] | None, *, prog: str, doc: str, config_cls, paths: dict[str, str],
                 train: TrainFn) -> int:
    """Parse the required path flags (`paths`: name -> help) and one flag per
    field of `config_cls`, then run train(args, config, print_metrics): one
    JSON line per report, then {"final": metrics} once. Under torchrun every
    rank runs this; rank 0 alone prints the final line, and the process group
    is closed before exit."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    for name, help_text in paths.items():
        parser.add_argument("--" + name, required=True, help=help_text)
    add_dataclass_args(parser, config_cls)
    args = parser.parse_args(argv)
    config = dataclass_from_args(config_cls, args)
    final = train(args, config, print_metrics)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one copy of the result
        print(json.dumps({"final": final}))
    from rlhf._torch import close_process_group

    close_process_group()
    return 0
