"""The overview's "now": what a campaign is doing at this moment and what
is stuck, said in words (annotate/selectors/overview.py reads the rows and
calls campaign_now). The rules for "stuck" are in docs/console.md, and the
thresholds below:

- a running stage with no heartbeat for MISSED_BEATS beats;
- a queued run with runs running or queued before it on the gpu queue;
- a queued run nothing is ahead of that no worker took in QUEUED_UNTAKEN_S;
- a stage message the broker refused; a stage retrying after an error;
- the latest run failed; a complete round that nothing trains on; a
  collecting round no one is rating; a paused campaign."""
from collections import defaultdict
from datetime import datetime, timedelta
from statistics import median

from django.conf import settings
from django.db.models import Count, Max, Q

from annotate.models import Campaign, Lease, Rating, TrainingRun
from annotate.training.stages import FINISHED, STAGES

# A running stage beats every TRAINING_HEARTBEAT_S; this many beats missed
# and the page says it has no heartbeat (the beat sweep queues it again after
# TRAINING_STALE_AFTER_S).
MISSED_BEATS = 3
# A queued run that nothing is ahead of should be taken by a gpu worker at
# once; after this long the page says no worker took it.
QUEUED_UNTAKEN_S = 60.0
# "Who is rating": an annotator with a comparison on screen, or a rating in
# this window.
RECENT_RATING_S = 15 * 60


def parse_time(value: str | None) -> datetime | None:
    """A stage record's ISO 8601 time (annotate/training/stages.py)."""
    return datetime.fromisoformat(value) if value else None


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def seconds_between(a: datetime | None, b: datetime | None) -> float | None:
    return (b - a).total_seconds() if a and b else None


def _duration(seconds: float) -> str:
    """A duration as people say it: 40 s, 3 min, 2 h 5 min."""
    seconds = max(0, int(round(seconds)))
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _stage_history(runs: list[TrainingRun], live: TrainingRun) -> dict[str, float]:
    """Median seconds of each stage of the live run's kind over this
    campaign's earlier runs that finished it."""
    seen = defaultdict(list)
    for run in runs:
        if run.pk == live.pk or run.kind != live.kind:
            continue
        for stage, record in run.stages.items():
            if record.get("status") == "succeeded" and record.get("seconds") is not None:
                seen[stage].append(float(record["seconds"]))
    return {stage: median(values) for stage, values in seen.items()}


def _eta(live: TrainingRun, runs: list[TrainingRun], now: datetime) -> dict:
    """Seconds left, and what that rests on; None where some stage left has
    never been timed here (the page then says so instead of guessing). The
    current stage: from its progress once it reports some, else from earlier
    runs; the stages after it: from earlier runs of this campaign."""
    history = _stage_history(runs, live)
    stages = STAGES[live.kind]
    at = stages.index(live.stage) if live.stage in stages else 0
    record = live.stages.get(live.stage, {})
    untimed, left, basis = [], 0.0, []
    elapsed = seconds_between(parse_time(record.get("started_at")), now) if live.status == TrainingRun.Status.RUNNING else None
    if elapsed is not None and live.progress >= 0.05:
        left += elapsed * (1 - live.progress) / live.progress
        basis.append(f"{live.stage} from its progress ({live.progress:.0%} in {_duration(elapsed)})")
    elif live.stage in history:
        left += max(0.0, history[live.stage] - (elapsed or 0.0))
        basis.append(f"{live.stage} from earlier runs")
    else:
        untimed.append(live.stage)
    rest = stages[at + 1:]
    for stage in rest:
        if stage in history:
            left += history[stage]
        else:
            untimed.append(stage)
    if rest and not set(rest) & set(untimed):
        basis.append(f"{', '.join(rest)} from the median of this campaign's earlier runs")
    if untimed:
        why = f"this campaign has never finished {', '.join(untimed)}"
        if live.stage in untimed and elapsed is not None:
            why += f", and {live.stage} has reported too little progress to go by"
        return {"seconds": None, "text": f"no ETA yet: {why}"}
    if live.status == TrainingRun.Status.QUEUED:
        basis.append("not counting the wait for a gpu worker")
    return {"seconds": left, "text": f"about {_duration(left)} left ({'; '.join(basis)})"}


def _raters(current: dict, now: datetime) -> list[dict]:
    """Annotators with a comparison of the current round on screen (a live
    lease) or a rating in it in the last RECENT_RATING_S seconds."""
    on_screen = dict(
        Lease.objects.filter(comparison__round_id=current["pk"], status=Lease.Status.LEASED, leased_until__gt=now)
        .values_list("annotator__username").annotate(n=Count("pk")).order_by()
    )
    recent = {
        row["annotator__username"]: row
        for row in Rating.objects.filter(
            comparison__round_id=current["pk"], created_at__gte=now - timedelta(seconds=RECENT_RATING_S)
        ).values("annotator__username").annotate(n=Count("pk"), last=Max("created_at")).order_by()
    }
    return [
        {"username": name, "on_screen": on_screen.get(name, 0),
         "recent_ratings": recent[name]["n"] if name in recent else 0,
         "last_rating_at": iso(recent[name]["last"]) if name in recent else None}
        for name in sorted(set(on_screen) | set(recent))
    ]


def _live_run_problems(live: TrainingRun, now: datetime) -> list[dict]:
    """What keeps the live run from moving, in words."""
    problems = []
    record = live.stages.get(live.stage, {})
    beats = settings.TRAINING_HEARTBEAT_S
    if live.status == TrainingRun.Status.RUNNING:
        silent = seconds_between(live.heartbeat_at, now)
        if silent is None or silent > MISSED_BEATS * beats:
            problems.append({"kind": "heartbeat", "text": (
                f"Run {live.pk}'s {live.stage} stage has had no heartbeat for "
                f"{_duration(silent) if silent is not None else 'ever'} (a worker beats every {beats:g} s): its "
                f"worker may be lost. The beat sweep queues the stage again after {settings.TRAINING_STALE_AFTER_S:g} s "
                f"without one (attempt {live.attempts} of {settings.TRAINING_MAX_ATTEMPTS})."
            )})
        return problems
    # queued
    if record.get("send_failed_at"):
        problems.append({"kind": "unsent", "text": (
            f"Run {live.pk}'s {live.stage} stage was never queued: the broker refused its message at "
            f"{record['send_failed_at'][:19].replace('T', ' ')}. The beat sweep sends it again every "
            f"{settings.TRAINING_REQUEUE_EVERY_S:g} s while the broker is down."
        )})
    ahead = list(
        TrainingRun.objects.filter(status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING])
        .exclude(pk=live.pk)
        .filter(Q(status=TrainingRun.Status.RUNNING) | Q(created_at__lt=live.created_at))
        .values("pk", "campaign_id", "status", "stage")
        .order_by("created_at")
    )
    waited = seconds_between(parse_time(record.get("queued_at")), now)
    if ahead:
        named = ", ".join(
            f"run {a['pk']} ({a['status']}, {a['stage'] or 'first stage'})" if a["campaign_id"] == live.campaign_id
            else f"another campaign's run ({a['status']})"
            for a in ahead[:5]
        )
        problems.append({"kind": "queue", "text": (
            f"Run {live.pk} ({live.stage}) waits behind {len(ahead)} run{'s' if len(ahead) != 1 else ''} on the "
            f"gpu queue: {named}{' and more' if len(ahead) > 5 else ''}. A gpu worker runs one stage at a time."
        )})
    elif waited is not None and waited > QUEUED_UNTAKEN_S and not record.get("send_failed_at"):
        problems.append({"kind": "no_worker", "text": (
            f"Run {live.pk}'s {live.stage} stage has been queued for {_duration(waited)} with nothing ahead of it: "
            "no gpu worker has taken it. Is a worker on the gpu queue running?"
        )})
    if record.get("status") == "error":
        problems.append({"kind": "retry", "text": (
            f"{live.stage} failed on attempt {record.get('attempts', live.attempts)} of "
            f"{settings.TRAINING_MAX_ATTEMPTS} and is queued to try again: {(record.get('last_error') or '').strip()[-300:]}"
        )})
    return problems


def campaign_now(
    *, campaign: Campaign, rounds: list[dict], rows: list[dict], runs: list[TrainingRun], now: datetime
) -> dict:
    """What is happening now: a sentence (`state`), the current round's
    progress, who is rating, the run in progress with its ETA, and what is
    stuck (`problems`: [{kind, text}]). `rounds`: the campaign's rounds
    (values, oldest first); `rows`: overview figures of at least the last
    one; `runs`: the campaign's runs, oldest first."""
    current_row = rounds[-1] if rounds else None
    current = rows[-1] if rows else None
    live = next((r for r in reversed(runs) if r.status not in FINISHED), None)
    latest = runs[-1] if runs else None
    problems, run, state = [], None, ""
    if live is not None:
        problems += _live_run_problems(live, now)
        record = live.stages.get(live.stage, {})
        run = {
            "id": live.pk, "kind": live.kind, "status": live.status, "stage": live.stage, "progress": live.progress,
            "attempts": live.attempts, "round": next((r["index"] for r in rounds if r["pk"] == live.round_id), None),
            "stages": [{"name": s, "status": live.stages.get(s, {}).get("status") or "pending"} for s in STAGES[live.kind]],
            "stage_started_at": record.get("started_at"),
            "heartbeat_at": iso(live.heartbeat_at),
            "eta": _eta(live, runs, now),
        }
    if live is not None and live.kind == TrainingRun.Kind.BOOTSTRAP:
        doing = "queued for a gpu worker" if live.status == TrainingRun.Status.QUEUED else f"at {live.stage}"
        state = (f"Starting: the base model is imported and answers round 0's prompts (run {live.pk}, {doing}); "
                 "round 0 opens when it is done.")
    elif live is not None:
        doing = "queued for a gpu worker" if live.status == TrainingRun.Status.QUEUED else f"at {live.stage}"
        state = f"Training on round {run['round']}'s ratings (run {live.pk}, {doing}); the next round opens when it is done."
    elif current is None:
        if latest is not None and latest.status == TrainingRun.Status.FAILED:
            state = f"Not started: the start (run {latest.pk}) failed at {latest.stage}."
        elif campaign.kind == Campaign.Kind.EVALUATION:
            state = "Not started: import prompts and at least two models' answers, then Start."
        else:
            state = "Not started: import prompts, then Start (the base model is imported and answers round 0)."
    else:
        state = f"Round {current['round']} is {current['status']}: {current['ratings']} ratings."
    if live is None and latest is not None and latest.status == TrainingRun.Status.FAILED:
        problems.append({"kind": "failed", "text": (
            f"Run {latest.pk} failed at {latest.stage} after {latest.attempts} attempt(s): "
            f"{latest.error.strip()[-300:]}"
            + (" Train now starts it again from that stage." if latest.kind == TrainingRun.Kind.TRAIN else
               " Start tries again.")
        )})
    target = 0
    raters = []
    if current is not None:
        target = current["comparisons"] * campaign.overlap
        complete = current["comparisons"] > 0 and current["complete_comparisons"] == current["comparisons"]
        if current["status"] == "collecting":
            raters = _raters(current_row, now)
            if complete and live is None and campaign.kind == Campaign.Kind.LOOP:
                problems.append({"kind": "complete", "text": (
                    f"Round {current['round']} has all its ratings"
                    + (f"; training should start within {settings.TRAINING_REQUEUE_EVERY_S:g} s (the round's check, "
                       "or the beat sweep if the check was lost)." if campaign.auto_train else
                       ": auto-train is off, so nothing trains until an ML engineer presses Train now.")
                )})
            elif not complete and campaign.status == Campaign.Status.ACTIVE and not raters:
                problems.append({"kind": "idle", "text": (
                    f"No one is rating: no comparison of round {current['round']} is on anyone's screen and none was "
                    f"rated in the last {RECENT_RATING_S // 60} minutes."
                )})
    if campaign.status == Campaign.Status.PAUSED:
        problems.append({"kind": "paused", "text": "The campaign is paused: annotators get no new comparisons."})
    return {
        "state": state,
        "round": None if current is None else {
            **{key: current[key] for key in ("round", "status", "comparisons", "complete_comparisons", "ratings")},
            "target_ratings": target,
            "fraction": current["ratings"] / target if target else 0.0,
        },
        "raters": raters,
        "run": run,
        "problems": problems,
        "at": now.isoformat(),
    }
