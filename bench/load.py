"""Annotators looping "next comparison → submit" against the real platform,
with Label Studio as the peer (issue 6): throughput, latency per call,
errors, and the invariants checked in SQL afterwards.

    # saturation: N annotators in closed loops (no pause), 60 s each level
    .venv/bin/python -m bench.load --targets ratchet label-studio --db postgres --annotators 8 32 128
    # open load: 500 annotators, each starting a loop about every 10 s (Poisson; 50 loops/s in all)
    .venv/bin/python -m bench.load --targets ratchet --db postgres --open-rate 50 --annotators 500
    # rankings: every comparison a k-set of 4 answers, every rating a ranking (Ratchet only)
    .venv/bin/python -m bench.load --targets ratchet --db postgres --annotators 32 --rank-k 4
    # the embedded default (SQLite, folder broker), and Label Studio on SQLite
    .venv/bin/python -m bench.load --targets ratchet label-studio --db sqlite --annotators 32

Ratchet (bench/load_ratchet.py) runs as config/platform.py starts it:
gunicorn (see WEB there for the worker count and why) and a Celery worker
with beat, on PostgreSQL + Redis (`--db postgres`) or SQLite + the folder
broker (`--db sqlite`), DEBUG off. Each level gets a fresh campaign:
overlap k = 3, `--comparisons` comparisons made from the shipped
human-preference pairs (data/, the same texts Label Studio gets), seeded
through the services an admin's import uses (bench/seed.py); every
annotator has an account, a token and a place in the pool.

Label Studio (bench/peers/label_studio.py; `label-studio` from PyPI, in its
own venv: bench/peers/label_studio.sh) runs under uWSGI with the settings
of its own image (bench/peers/label_studio_uwsgi.ini), on its own database;
a project per level with a <Pairwise> labeling config, maximum_annotations
= 3 and the same tasks; annotators are organization members with legacy
API tokens. Both are LoadTargets (bench/load_target.py).

Both are driven by the same asyncio + aiohttp client (one process; its CPU
time is reported): closed loop = each annotator calls next, then submits a
rating of what it got, at once, again; open load = each annotator starts a
loop at Poisson times, mean gap annotators / open-rate seconds, whatever
the previous calls took (a late start is counted). Latency is per call,
for calls started in the measured window (after `--warmup`); a loop counts
when its submit was acknowledged inside the window.

Then, in SQL on each target's database: comparisons (tasks) with more than
k ratings, duplicate (comparison, annotator) ratings, acknowledged ratings
missing (or changed), comparisons given to more than k annotators (what the
clients saw; Ratchet's leases also in SQL), and Ratchet's rating_count
against the rows; with `--rank-k` 3 or 4, also that every rating of a k-set
is a ranking of all k answers (rankings_malformed). The JSON goes to stdout and bench/out/load-*.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from bench.load_ratchet import Ratchet
from bench.load_target import DATA_PAIRS, OVERLAP, ROOT
from bench.peers.label_studio import LabelStudio

OUT = ROOT / "bench" / "out"


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def pids_cpu_s(pids: list[int]) -> float:
    """CPU seconds used so far by these processes (gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgids: list[int]) -> float:
    """CPU seconds (user + system) used so far by the processes of these
    process groups, with the finished children their leaders waited for."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) in pgids:
            total += int(fields[11]) + int(fields[12])
            if int(entry.name) in pgids:
                total += int(fields[13]) + int(fields[14])
    return total / tick


# --- the load -------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


async def drive(target, campaign: int, annotators: list[list], *, duration: float, warmup: float,
                open_rate: float | None, seed: int) -> dict:
    """Run the annotators against one campaign; returns figures, what the
    clients were given, and the ratings they saw acknowledged."""
    import aiohttp

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    start, stop = t0 + warmup, t0 + warmup + duration
    lat = {"next": [], "submit": []}
    statuses: Counter = Counter()
    samples: dict[str, str] = {}
    given: dict[int, set] = defaultdict(set)
    acked: list[tuple] = []
    counts = Counter()
    mean_gap = len(annotators) / open_rate if open_rate else 0.0
    timeout = aiohttp.ClientTimeout(total=120)
    # Idle connections are dropped before the server's keep-alive timeout
    # (gunicorn: 2 s) can close them under a request being sent.
    connector = (aiohttp.TCPConnector(limit=0, keepalive_timeout=1.0) if target.keepalive
                 else aiohttp.TCPConnector(limit=0, force_close=True))

    async with aiohttp.ClientSession(base_url=target.base, connector=connector, timeout=timeout) as session:

        async def call(kind: str, method: str, path: str, payload, headers):
            began = loop.time()
            try:
                async with session.request(method, path, json=payload, headers=headers) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raw, status = str(exc).encode(), type(exc).__name__
            ended = loop.time()
            if start <= began < stop:
                lat[kind].append(ended - began)
                statuses[f"{kind} {status}"] += 1
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            if status not in (200, 201, 204) and f"{kind} {status}" not in samples:
                samples[f"{kind} {status}"] = raw[:300].decode(errors="replace")
            return status, body, ended

        async def annotator(i: int, user_id: int, token: str):
            rng = random.Random(seed * 1_000_003 + i)
            headers = {"Authorization": f"Token {token}"}
            due = t0 + (rng.expovariate(1 / mean_gap) if open_rate else 0.0)
            while True:
                if open_rate:
                    now = loop.time()
                    if due > now:
                        await asyncio.sleep(due - now)
                    elif now - due > 0.01 and start <= now < stop:
                        counts["late_starts"] += 1  # the previous loop ran past this one's arrival
                    due += rng.expovariate(1 / mean_gap)
                if loop.time() >= stop:
                    return
                method, path, payload = target.next_call(campaign)
                status, body, _ = await call("next", method, path, payload, headers)
                item = target.item_of(status, body) if isinstance(status, int) else None
                if item == "no work":
                    counts["no_work"] += 1
                    return
                if item is None:
                    await asyncio.sleep(0.1)  # as a page would, instead of hammering
                    continue
                given[item].add(user_id)
                method, path, payload, key = target.submit_call(campaign, item, rng)
                status, body, ended = await call("submit", method, path, payload, headers)
                rating = target.acked_id(status, body) if isinstance(status, int) else None
                if rating is not None:
                    acked.append((user_id, item, key, rating))
                    if start <= ended <= stop:
                        counts["loops"] += 1
                elif isinstance(status, int) and status < 500:
                    await asyncio.sleep(0.1)

        pgids = target.server_pgids()
        load_start = loadavg()
        tasks = [asyncio.create_task(annotator(i, uid, tok)) for i, (uid, tok) in enumerate(annotators)]
        await asyncio.sleep(max(0.0, start - loop.time()))
        busy1, total1 = cpu_times()
        rusage1 = resource.getrusage(resource.RUSAGE_SELF)
        server1 = {name: group_cpu_s([pg]) for name, pg in pgids.items()}
        db_pids = await loop.run_in_executor(None, target.db_pids)  # not on the loop: the calls go on
        db1 = pids_cpu_s(db_pids)
        await asyncio.sleep(max(0.0, stop - loop.time()))
        busy2, total2 = cpu_times()
        rusage2 = resource.getrusage(resource.RUSAGE_SELF)
        server2 = {name: group_cpu_s([pg]) for name, pg in pgids.items()}
        db2 = pids_cpu_s(db_pids)
        load_end = loadavg()
        await asyncio.gather(*tasks)  # calls in flight finish, so every acknowledgement is recorded

    def calls(kind: str) -> dict:
        values = sorted(lat[kind])
        return {"n": len(values), **{f"p{q}_ms": round(percentile(values, q) * 1000, 1) if values else None
                                     for q in (50, 95, 99)},
                "max_ms": round(values[-1] * 1000, 1) if values else None}

    client_cpu = (rusage2.ru_utime + rusage2.ru_stime) - (rusage1.ru_utime + rusage1.ru_stime)
    return {
        "figures": {
            "loops_per_s": round(counts["loops"] / duration, 2),
            "next": calls("next"),
            "submit": calls("submit"),
            "statuses": dict(sorted(statuses.items())),
            "errors": {k: v for k, v in statuses.items() if k.split()[1] not in ("200", "201", "204")},
            "error_samples": samples,
            "no_work_answers": counts["no_work"],
            "late_starts": counts["late_starts"],
            "load_average_1m": {"start": load_start, "end": load_end},
            "machine_cpu_busy": round((busy2 - busy1) / max(1.0, total2 - total1), 3),
            "client_cpu_s_per_s": round(client_cpu / duration, 3),
            # The web server's processes (and Ratchet's Celery worker), not
            # PostgreSQL's: CPU milliseconds per loop in the window.
            "server_cpu_ms_per_loop": {
                name: round((server2[name] - server1[name]) * 1000 / counts["loops"], 1) if counts["loops"] else None
                for name in pgids
            } | ({"postgres": round((db2 - db1) * 1000 / counts["loops"], 1) if counts["loops"] else None} if db_pids else {}),
        },
        "given": given,
        "acked": acked,
    }


async def warm_up(target, annotators: list[list], *, rounds: int = 5, width: int = 48) -> None:
    """Read requests until every server process and thread has loaded the
    application and opened its database connection, so that no level pays
    for that."""
    import aiohttp

    async with aiohttp.ClientSession(base_url=target.base, timeout=aiohttp.ClientTimeout(total=300)) as session:

        async def get(i: int):
            token = annotators[i % len(annotators)][1]
            async with session.get(target.warm_path, headers={"Authorization": f"Token {token}"}) as resp:
                await resp.read()

        for _ in range(rounds):
            await asyncio.gather(*(get(i) for i in range(width)))


def run_target(kind: str, *, db: str, levels: list[tuple[str, int, float | None]], args) -> list[dict]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-load-{kind}-"))
    web = {k: v for k, v in (("web_workers", args.web_workers), ("web_threads", args.web_threads)) if v}
    target = (Ratchet(workdir, db, web, rank_k=args.rank_k) if kind == "ratchet"
              else LabelStudio(workdir, db, processes=args.ls_processes))
    results = []
    try:
        t = time.perf_counter()
        target.start()
        seeded = target.seed(annotators=max(n for _, n, _ in levels), levels=[name for name, _, _ in levels],
                             comparisons=args.comparisons)
        print(f"[{kind}/{db}] started and seeded in {time.perf_counter() - t:.0f} s "
              f"({args.comparisons} comparisons per level)", file=sys.stderr)
        asyncio.run(warm_up(target, seeded["annotators"]))
        for (name, n, rate), campaign in zip(levels, seeded["campaigns"]):
            time.sleep(args.settle)  # let the load from seeding die down
            out = asyncio.run(drive(target, campaign, seeded["annotators"][:n], duration=args.duration,
                                    warmup=args.warmup, open_rate=rate, seed=args.seed))
            invariants = target.check(campaign, out["acked"], out["given"])
            violations = sum(v for k, v in invariants.items() if k not in ("ratings_in_db", "acknowledged"))
            row = {"target": kind, "db": db, "level": name, "annotators": n, "open_rate": rate, "rank_k": args.rank_k,
                   "duration_s": args.duration, "comparisons": args.comparisons, "overlap": OVERLAP,
                   **out["figures"], "invariants": invariants, "violations": violations}
            results.append(row)
            f = row
            print(f"[{kind}/{db}] {name}: {f['loops_per_s']} loops/s ({f['server_cpu_ms_per_loop']} ms server CPU/loop), next p50/p95/p99 "
                  f"{f['next']['p50_ms']}/{f['next']['p95_ms']}/{f['next']['p99_ms']} ms, submit "
                  f"{f['submit']['p50_ms']}/{f['submit']['p95_ms']}/{f['submit']['p99_ms']} ms, errors {f['errors']}, "
                  f"violations {violations}, load {f['load_average_1m']}", file=sys.stderr)
        for row in results:
            row["server"] = target.describe()
    finally:
        target.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", choices=["ratchet", "label-studio"], default=["ratchet"])
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--annotators", nargs="+", type=int, default=[8, 32, 128])
    parser.add_argument("--open-rate", type=float, help="loops/s in all: open load (Poisson arrivals) instead of closed loops")
    parser.add_argument("--duration", type=float, default=60, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of load before measuring")
    parser.add_argument("--settle", type=float, default=5, help="seconds of quiet before each level")
    # 8,000: the round must outlast the measured minute. With the shipped
    # 2,616 pairs (7,848 ratings at k = 3) a server doing 100+ loops/s rated
    # nearly all of it, and the last free comparisons, scarce and contended,
    # slowed it: the figure measured the round's end, not the server.
    parser.add_argument("--comparisons", type=int, default=8000,
                        help=f"comparisons (tasks) per level, cycling through the {DATA_PAIRS} shipped pairs (default 8000)")
    parser.add_argument("--web-workers", type=int, help="gunicorn processes for Ratchet (default: see WEB)")
    parser.add_argument("--web-threads", type=int, help="threads per gunicorn process (default: see WEB)")
    parser.add_argument("--ls-processes", type=int, help="uWSGI processes for Label Studio (default: its own, cores x 2)")
    parser.add_argument("--rank-k", type=int, choices=[2, 3, 4], default=2,
                        help="answers per comparison: 2 pairs; 3 or 4 k-sets rated by rankings (Ratchet only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    args = parser.parse_args()
    if args.open_rate:
        levels = [(f"open {args.open_rate:g}/s, {n} annotators", n, args.open_rate) for n in args.annotators]
    else:
        levels = [(f"closed, {n} annotators", n, None) for n in args.annotators]
    results = []
    if args.rank_k > 2 and args.targets != ["ratchet"]:
        parser.error("--rank-k 3 or 4 loads Ratchet only (the peer has no k-set rankings here)")
    for kind in args.targets:
        results += run_target(kind, db=args.db, levels=levels, args=args)

    ratios = {}
    for row in results:
        if row["target"] != "ratchet":
            continue
        peer = next((r for r in results if r["target"] == "label-studio" and r["level"] == row["level"]), None)
        if peer and peer["loops_per_s"]:
            ratios[row["level"]] = round(row["loops_per_s"] / peer["loops_per_s"], 1)
    report = {"machine": {"cpus": os.cpu_count(), "load_average_1m_before": loadavg()},
              "results": results, "throughput_ratio_ratchet_to_label_studio": ratios}
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"written to {path}", file=sys.stderr)
    if ratios:
        for level, ratio in ratios.items():
            print(f"{level}: Ratchet / Label Studio = {ratio}x", file=sys.stderr)


if __name__ == "__main__":
    main()
