"""What a training run's console page and the compare-two-runs page show,
read from the run's own JSON (no query beyond the run itself): each stage on
a timeline (queue wait, work, ETA), the metrics laid out as an experiment
tracker does (the few that say whether the loop works first, each with what
it means; a metric reported too few times to draw as a small table of
values), two runs' shared metrics and config differences, and model
versions' metrics as short tables (the models page)."""
import math
from datetime import datetime

from django.utils import timezone

from annotate.models import TrainingRun
from annotate.training.stages import FINISHED, STAGES

# The metrics that say at a glance whether the loop works, in this order,
# each with a one-line meaning (the full table: rlhf/__init__.py). The rest
# of a run's metrics are folded away on the page.
KEY_METRICS: dict[str, str] = {
    "sft/loss": "SFT: loss per assistant token of the demonstrations; falls as the model learns to write them",
    "eval/sft/loss": "SFT: the same loss on held-out prompts' demonstrations (on the training ones when too few)",
    "eval/sft/token_accuracy": "SFT: held-out assistant tokens the model predicts exactly; should rise",
    "eval/reward/accuracy": "held-out pairs the reward model orders as the raters did (0.5 is chance)",
    "reward/loss": "Bradley–Terry loss on the training pairs; falls as the reward model learns",
    "eval/reward/loss": "the same loss on the held-out pairs; rising while training falls is overfitting",
    "policy/reward_mean": "RLOO: mean reward-model score of the policy's samples; should rise",
    "policy/kl": "distance of the policy from its reference (the base, or the SFT model when the campaign's "
                 "KL anchor is sft), nats per answer (the KL budget caps it)",
    "policy/loss": "policy loss per step (RLOO: clipped surrogate; DPO: DPO loss)",
    "policy/accuracy": "DPO: pairs whose chosen answer gets the higher implicit reward",
    "policy/kl_to_base": "KL estimate of the weights the step kept",
}
# A metric with fewer reports than this is a number, not a curve: a lone
# dot says nothing a value in a table does not say better.
MIN_POINTS_FOR_CHART = 3
# A stage's ETA is guessed from its rate so far only once it has done this
# much: the first percent is mostly loading.
ETA_FROM_FRACTION = 0.02


def unit_range(name: str) -> list | None:
    """[0, 1] for a share (an accuracy, a rate), None where the quantity has no fixed range."""
    quantity = name.rsplit("/", 1)[-1]
    if "accuracy" in quantity or quantity.endswith("_rate") or quantity in {"win_rate", "agreement"}:
        return [0, 1]
    return None


def duration_label(seconds: float | None) -> str:
    """12.5 s, 3 min 20 s, 1 h 5 min; an en dash for none."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    return f"{minutes // 60} h {minutes % 60} min"


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def stage_eta_s(run: TrainingRun, stage: str, now: datetime | None = None) -> float | None:
    """Seconds left in the running stage at the rate of its work so far
    (progress grows with work done: annotate/training/reporter.py), or None
    when it is not running or has done too little to tell."""
    if run.status in FINISHED or run.stage != stage or run.progress < ETA_FROM_FRACTION or run.progress >= 1:
        return None
    started = _time(run.stages.get(stage, {}).get("started_at"))
    if started is None:
        return None
    elapsed = ((now or timezone.now()) - started).total_seconds()
    return max(0.0, elapsed * (1 - run.progress) / run.progress)


def run_timeline(run: TrainingRun, now: datetime | None = None) -> dict:
    """Each stage of the run's kind as a bar on one time axis from the run's
    creation to its end (now, while it runs): `wait` from queued to started
    (time in the broker's queue or a retry's delay), `work` from started to
    finished (or now, while it runs); left and width in percent of the axis.
    A stage that never started has neither."""
    now = now or timezone.now()
    origin = run.created_at
    rows, last = [], origin
    for name in STAGES[run.kind]:
        info = run.stages.get(name, {})
        queued, started, finished = _time(info.get("queued_at")), _time(info.get("started_at")), _time(info.get("finished_at"))
        running = info.get("status") == "running" and run.status not in FINISHED
        if started and not finished:
            # Running: up to now; ended without a finish (error, cancelled): up to the run's end.
            finished = now if running else (run.finished_at or started)
        rows.append({"name": name, "status": info.get("status") or "pending", "queued": queued, "started": started,
                     "finished": finished, "running": running})
        last = max([last] + [t for t in (queued, started, finished) if t])
    # The axis covers every recorded time: a run re-created from records (an
    # import, a restored backup) may say it was created after its stages ran.
    origin = min([origin] + [t for row in rows for t in (row["queued"], row["started"]) if t])
    end = max(run.finished_at, last) if run.status in FINISHED and run.finished_at else max(last, now)
    span = max((end - origin).total_seconds(), 1e-9)

    def pct(t: datetime) -> float:
        return round(100 * min(max((t - origin).total_seconds() / span, 0.0), 1.0), 2)

    for row in rows:
        queued, started, finished = row.pop("queued"), row.pop("started"), row.pop("finished")
        row["wait"] = row["work"] = None
        row["wait_s"] = round((started - queued).total_seconds(), 1) if queued and started else None
        row["work_s"] = round((finished - started).total_seconds(), 1) if started and finished else None
        if queued:
            wait_end = started or (now if run.status not in FINISHED else end)
            row["wait"] = {"left": pct(queued), "width": max(pct(wait_end) - pct(queued), 0.0)}
        if started and finished:
            row["work"] = {"left": pct(started), "width": max(pct(finished) - pct(started), 0.3)}
        eta = stage_eta_s(run, row["name"], now) if row["running"] else None
        row["eta_s"] = round(eta) if eta is not None else None
        row["wait_label"], row["work_label"] = duration_label(row["wait_s"]), duration_label(row["work_s"])
        row["eta_label"] = duration_label(row["eta_s"]) if eta is not None else ""
    return {"stages": rows, "seconds": round(span, 1), "label": duration_label(span), "origin": origin.isoformat(),
            "live": run.status not in FINISHED}


def metric_series(history: list[dict]) -> dict[str, list[list[float]]]:
    """Each numeric metric's [step, value] points in step order, one point
    per step (a later report of the same step replaces the earlier); a
    value that is not finite is None."""
    series: dict[str, dict[int, float]] = {}
    for row in history:
        for name, value in row.items():
            if "/" in name and isinstance(value, (int, float)) and not isinstance(value, bool):
                # A diverged loss (NaN, inf) is a gap: JSON has no NaN, and the page's JSON.parse would fail.
                series.setdefault(name, {})[int(row.get("step", 0))] = float(value) if math.isfinite(value) else None
    return {name: [[step, value] for step, value in sorted(points.items())] for name, points in series.items()}


def metric_layout(history: list[dict]) -> dict:
    """The page's metrics: `key` (KEY_METRICS a run reported, in that order,
    with their meaning) and `other` (the rest, by stage then name), each
    split into `charts` (reported at MIN_POINTS_FOR_CHART steps or more:
    curves over the step) and `values` (fewer: a table of step and value)."""
    series = metric_series(history)
    stage_of = {}
    for row in history:
        for name in row:
            stage_of.setdefault(name, row.get("stage", ""))

    def entry(name: str) -> dict:
        points = series[name]
        return {"name": name, "meaning": KEY_METRICS.get(name, ""), "stage": stage_of.get(name, ""),
                "range": unit_range(name), "points": points, "last": points[-1][1]}

    def split(names: list[str]) -> dict:
        entries = [entry(n) for n in names]
        return {"charts": [e for e in entries if len(e["points"]) >= MIN_POINTS_FOR_CHART],
                "values": [e for e in entries if len(e["points"]) < MIN_POINTS_FOR_CHART], "count": len(entries)}

    key = [n for n in KEY_METRICS if n in series]
    other = sorted((n for n in series if n not in KEY_METRICS), key=lambda n: (stage_of.get(n, ""), n))
    return {"key": split(key), "other": split(other), "count": len(series)}


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in config.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def config_differences(a: dict, b: dict) -> list[dict]:
    """The settings (dotted paths) whose values differ between two run
    configs, a missing one shown as None."""
    fa, fb = _flatten(a), _flatten(b)
    return [{"key": k, "a": fa.get(k), "b": fb.get(k)} for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def runs_compared(*, a: TrainingRun, b: TrainingRun) -> dict:
    """Two runs' shared metrics as overlaid series (`metrics`: {name, range,
    a, b}, both runs' points) or, reported too few times to draw, as values
    (`values`, the same shape), the metrics of one run only, and their
    config differences."""
    sa, sb = metric_series(a.metrics_history), metric_series(b.metrics_history)
    shared = [n for n in KEY_METRICS if n in sa and n in sb]
    shared += sorted(n for n in sa if n in sb and n not in KEY_METRICS)
    both = [{"name": n, "meaning": KEY_METRICS.get(n, ""), "range": unit_range(n), "a": sa[n], "b": sb[n]}
            for n in shared]
    # As on a run's page: a metric too few reports of either run can draw is a value each, side by side.
    drawn = [m for m in both if max(len(m["a"]), len(m["b"])) >= MIN_POINTS_FOR_CHART]
    return {
        "metrics": drawn,
        "values": [m for m in both if m not in drawn],
        "only_a": sorted(set(sa) - set(sb)),
        "only_b": sorted(set(sb) - set(sa)),
        "config": config_differences(a.config, b.config),
    }


# A model version's metrics on the models page: these columns where any
# version has them, in this order; the rest folded in the row.
POLICY_COLUMNS = ("policy/kl", "policy/kl_to_base", "policy/reward_mean", "policy/accuracy", "policy/loss", "policy/steps")
REWARD_COLUMNS = ("eval/reward/accuracy", "eval/reward/loss", "reward/accuracy", "reward/loss", "reward/steps")
SFT_COLUMNS = ("eval/sft/loss", "eval/sft/token_accuracy", "sft/loss", "sft/token_accuracy", "sft/steps")


def metric_table(versions, columns: tuple[str, ...]) -> dict:
    """The versions' metrics as a short table: `columns` (those of `columns`
    any version reported) and per version its `cells` (a value or None per
    column) and `rest` (its other numeric metrics, name and value)."""
    present = [c for c in columns if any(c in (v.metrics or {}) for v in versions)]
    rows = []
    for v in versions:
        metrics = v.metrics or {}
        rest = [(k, val) for k, val in sorted(metrics.items()) if k not in present and isinstance(val, (int, float))]
        rows.append({"version": v, "cells": [metrics.get(c) for c in present], "rest": rest})
    return {"columns": present, "rows": rows}
