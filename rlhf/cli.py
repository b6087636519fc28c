"""Turn a config dataclass into argparse flags, so CLIs and the platform share
one definition of every hyperparameter. No torch here."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import types
import typing


def _base_type(tp):
    # `float | None` -> float; the flag stays optional because its default is None.
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def field_comments(cls) -> dict[str, str]:
    """The trailing `# comment` of each field: the one place its meaning is written."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.+)$", source, flags=re.M))


def add_dataclass_args(parser: argparse.ArgumentParser, cls) -> None:
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        help_text = f"{comments.get(f.name, '')} (default: {f.default})".replace("%", "%%")
        if tp is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif tp in (int, float, str):
            parser.add_argument(flag, dest=f.name, type=tp, default=None, help=help_text)


def dataclass_from_args(cls, args: argparse.Namespace):
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    return cls(**given)


def print_metrics(step: int, metrics: dict) -> None:
    print(json.dumps({"step": step, **metrics}, default=str), flush=True)
