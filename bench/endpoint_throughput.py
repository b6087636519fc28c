"""Endpoint generation throughput: Ratchet's generation job in a real
`endpoints` worker against a plain asyncio client, with the same
concurrency, the same prompts and settings, against the same llama.cpp
server (SmolLM2-135M, config/llama_server.py).

    .venv/bin/python -m bench.endpoint_throughput --prompts 64 --concurrency 4 --max-tokens 32 --repeats 3

Ratchet: the platform's processes (config/platform.py: gunicorn and a
Celery worker on PostgreSQL + Redis, or `--backend embedded`); each repeat
saves a new endpoint over the API and starts a job on every prompt; its
rate is over the job's own time (started_at to finished_at, as the worker
recorded them: claiming it, reading the prompts, every request, storing
each answer, the last progress write). The peer: aiohttp, a semaphore of
`--concurrency`, the same request bodies, timed from the first request to
the last answer, storing nothing. The two alternate, repeat by repeat, so
a busy machine weighs on both. Printed: answers/s and completion tokens/s
of each (median of the repeats) and Ratchet's ratio to the peer (target:
within 10%, a ratio of 0.9 or more).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.data import questions
from config.llama_server import LlamaServer
from config.platform import Platform

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-bench-endpoint"



async def plain_client(url: str, prompts: list[str], generation: dict, concurrency: int) -> dict:
    """Every prompt once, `concurrency` at a time; (seconds, answers, completion tokens)."""
    limit = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {KEY}"}
    tokens = 0

    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def ask(prompt: str) -> None:
            nonlocal tokens
            body = {**generation, "model": "smollm2-135m", "messages": [{"role": "user", "content": prompt}]}
            async with limit, session.post(url + "/chat/completions", json=body) as answer:
                data = await answer.json()
                assert answer.status == 200 and data["choices"][0]["message"]["content"], data
                tokens += data["usage"]["completion_tokens"]

        started = time.perf_counter()
        await asyncio.gather(*(ask(p) for p in prompts))
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "answers": len(prompts), "tokens": tokens}


def ratchet_job(platform: Platform, engineer, campaign_id: int, url: str, generation: dict, concurrency: int,
                name: str) -> dict:
    status, endpoint = engineer.post(f"/api/campaigns/{campaign_id}/endpoints/", {
        "name": name, "base_url": url, "model_name": "smollm2-135m", "generation": generation,
        "max_concurrency": concurrency, "timeout_s": 300, "api_key": KEY,
    })
    assert status == 201, endpoint
    status, job = engineer.post(f"/api/endpoints/{endpoint['id']}/generate/", {})
    assert status == 202, job
    job = platform.wait_for(
        lambda: (j := engineer.get(f"/api/generation-jobs/{job['id']}/")[1])["status"] in ("succeeded", "failed")
        and j, timeout=3600, what="the generation job", interval=0.2)
    assert job["status"] == "succeeded", job["error"]
    seconds = (dt.datetime.fromisoformat(job["finished_at"]) - dt.datetime.fromisoformat(job["started_at"])).total_seconds()
    return {"seconds": seconds, "answers": job["answered"], "tokens": job["completion_tokens"],
            "requests": job["requests"]}


def rates(runs: list[dict]) -> dict:
    return {
        "answers_per_s": statistics.median(r["answers"] / r["seconds"] for r in runs),
        "tokens_per_s": statistics.median(r["tokens"] / r["seconds"] for r in runs),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp's threads")
    parser.add_argument("--backend", choices=["services", "embedded"], default="services")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()

    prompts = questions(args.prompts)
    # Temperature 0: both sides get the same answers, so the same tokens to generate.
    generation = {"max_tokens": args.max_tokens, "temperature": 0.0, "seed": 1}
    with tempfile.TemporaryDirectory(prefix="endpoint-bench-") as tmp:
        server = LlamaServer(Path(tmp) / "llama", api_key=KEY, n_ctx=2048, threads=args.threads).start()
        platform = Platform(Path(tmp), backend=args.backend).start()
        try:
            engineer = platform.user("bench", "campaign_admin", "ml_engineer")
            status, campaign = engineer.post("/api/campaigns/create/", {"name": "endpoint bench", "base_model": "x"})
            assert status == 201, campaign
            jsonl = "\n".join(json.dumps({"external_id": f"q{i}", "prompt": p}) for i, p in enumerate(prompts))
            assert engineer.post(f"/api/campaigns/{campaign['id']}/prompts/import/", raw=jsonl.encode(),
                                 content_type="application/x-ndjson")[0] == 200
            asyncio.run(plain_client(server.base_url, prompts[:4], generation, args.concurrency))  # warm-up
            plain, ratchet = [], []
            for repeat in range(args.repeats):
                plain.append(asyncio.run(plain_client(server.base_url, prompts, generation, args.concurrency)))
                ratchet.append(ratchet_job(platform, engineer, campaign["id"], server.base_url, generation,
                                           args.concurrency, name=f"smollm2-{repeat}"))
                print(f"repeat {repeat}: plain {plain[-1]['seconds']:.2f} s, ratchet {ratchet[-1]['seconds']:.2f} s",
                      flush=True)
        finally:
            platform.stop()
            server.stop()

    figures = {"args": vars(args) | {"out": str(args.out) if args.out else None},
               "plain": rates(plain), "ratchet": rates(ratchet)}
    figures["ratio_answers"] = figures["ratchet"]["answers_per_s"] / figures["plain"]["answers_per_s"]
    figures["ratio_tokens"] = figures["ratchet"]["tokens_per_s"] / figures["plain"]["tokens_per_s"]
    print(f"\n{args.prompts} prompts, concurrency {args.concurrency}, max_tokens {args.max_tokens}, "
          f"llama.cpp SmolLM2-135M Q4_1 on {args.threads} threads, median of {args.repeats}")
    print(f"{'':>14} {'answers/s':>10} {'tokens/s':>10}")
    for side in ("plain", "ratchet"):
        print(f"{side:>14} {figures[side]['answers_per_s']:>10.2f} {figures[side]['tokens_per_s']:>10.1f}")
    print(f"{'ratchet/plain':>14} {figures['ratio_answers']:>10.3f} {figures['ratio_tokens']:>10.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
