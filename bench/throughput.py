"""What the throughput benches (bench/reward_throughput.py,
bench/rloo_throughput.py) share: the model shapes and the SmolLM2
tokenizer, machine facts (device, peak FLOP/s, peak memory, clocks), and the
runner that does each named run in a fresh subprocess and writes the JSON."""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "finegrainedrlhf_qa_feedback_dev.jsonl"
SMOLLM2 = ROOT / "bench" / "out" / "smollm2-135m-instruct"
# The SmolLM2 tokenizer alone (3.5 MB): what a GPU machine needs to be sent, without the weights.
TOKENIZER = ROOT / "bench" / "out" / "smollm2-tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")

# Llama shapes. smollm2 is SmolLM2-135M-Instruct's (LlamaConfig of the shipped model);
# small runs on a CPU in minutes.
SHAPES = {
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2),
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, rope_theta=100000.0),
}
# Dense bf16 matrix rate of an H200 (SXM) by the datasheet, for MFU beside the measured peak.
H200_BF16_DATASHEET = 989e12



def tokenizer_dir() -> Path:
    if (TOKENIZER / "tokenizer.json").is_file():
        return TOKENIZER
    if not (SMOLLM2 / "tokenizer.json").is_file():
        from rlhf.smollm2 import import_smollm2

        import_smollm2(SMOLLM2)
    TOKENIZER.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (SMOLLM2 / name).is_file():
            shutil.copy(SMOLLM2 / name, TOKENIZER / name)
    return TOKENIZER


def build_shape_model(shape: str, out: Path, seed: int = 0) -> str:
    """A random-weight LlamaForCausalLM of the shape, with the SmolLM2 tokenizer, saved to out."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (out / "config.json").is_file():
        return str(out)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir())
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    config = LlamaConfig(vocab_size=len(tok), tie_word_embeddings=True, max_position_embeddings=2048,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                         **SHAPES[shape])
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def flop_params(model) -> int:
    """Parameters a token's forward multiplies through: all but the input embedding table."""
    embed = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not embed) + (
        embed.numel() if getattr(model.config, "tie_word_embeddings", False) and hasattr(model, "lm_head") else 0)


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})"


def measure_peak_flops() -> float:
    """FLOP/s of a large matmul: bf16 8192^3 on GPU, fp32 1024^3 on CPU (the best of a few)."""
    import torch

    cuda = torch.cuda.is_available()
    n, dtype, dev = (8192, torch.bfloat16, "cuda") if cuda else (1024, torch.float32, "cpu")
    a, b = torch.randn(n, n, dtype=dtype, device=dev), torch.randn(n, n, dtype=dtype, device=dev)
    best = math.inf
    for _ in range(3 if cuda else 5):
        reps = 10 if cuda else 2
        sync()
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n**3 / best


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def run_subprocess(module: str, argv: list[str], timeout: float) -> dict:
    """One run in a fresh interpreter; its last stdout line is its JSON result."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    result = {}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode == 0 and lines:
        result = json.loads(lines[-1])
    else:
        result = {"error": f"exit {done.returncode}", "stderr_tail": done.stderr[-2500:]}
    result["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def run_all(module: str, runs: str, child: list[str], model: str, timeout: float, budget: float, write) -> dict:
    """Each named run in turn, in a fresh subprocess; `write(results)` after each, so partial results survive.

    A run gets at most `timeout` seconds and what is left of `budget`; runs
    that no longer fit are recorded as skipped.
    """
    results: dict = {}
    deadline = time.perf_counter() + (budget or math.inf)
    for name in [r.strip() for r in runs.split(",") if r.strip()]:
        left = deadline - time.perf_counter()
        if left < 30:
            results[name] = {"error": "skipped: the --budget was spent"}
        else:
            results[name] = run_subprocess(module, [*child, "--run", name, "--model", model], min(timeout, left))
        print(json.dumps({name: results[name]}, default=str), file=sys.stderr, flush=True)
        write(results)
    return results


def add_runner_args(parser: argparse.ArgumentParser) -> None:
    """The options every throughput bench shares: which runs, how they are
    timed and where the JSON goes (and, hidden, what a run's subprocess gets)."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="ours,trl-default,trl-best", help="comma-separated runs, in this order")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU; 0 = measure a matmul")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads per run; 0 = torch's default")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--budget", type=float, default=0, help="seconds for all runs; later runs are skipped; 0 = none")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)  # inside a subprocess: the run to do
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)


def run_bench(args, argv: list[str] | None, *, module: str, run_one, summarise, settings: dict) -> int:
    """A throughput bench's main once its arguments are parsed: inside a
    run's subprocess, that one run; otherwise build the model, measure the
    peak, and each run in turn (run_all), printing and writing the summary
    (`settings`: the bench's own figures for the JSON head)."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.run:
        print(json.dumps(run_one(args), default=str))
        return 0

    import torch

    model = build_shape_model(args.shape, ROOT / "bench" / "out" / f"shape-{args.shape}")
    peak = args.peak_tflops * 1e12 or measure_peak_flops()
    args.datasheet_peak = H200_BF16_DATASHEET if "H200" in device_name() else 0.0
    head = {
        "bench": module.rsplit(".", 1)[-1], "shape": args.shape, "device": device_name(), "torch": torch.__version__,
        "peak_flops": peak, "peak_flops_source": "given" if args.peak_tflops else "measured matmul",
        "datasheet_peak_flops": args.datasheet_peak or None, **settings, "seed": args.seed,
    }

    def write(results: dict) -> str:
        text = json.dumps({**head, **summarise(results, peak, args)}, indent=2, default=str)
        if args.out:
            Path(args.out).write_text(text)
        return text

    child = list(argv if argv is not None else sys.argv[1:])
    results = run_all(module, args.runs, child, model, args.timeout, args.budget, write)
    print(write(results))
    return 0


def parse_run(name: str, default: int, suffix: str = "-b") -> tuple[str, int]:
    """A run's name and the size its suffix gives: 'ours-b64' -> ('ours', 64),
    'trl-best' -> ('trl-best', default), with suffix "-p": 'ours-compile-p64'
    -> ('ours-compile', 64); a '#2' suffix names a repeat."""
    name = name.split("#")[0]
    base, _, tail = name.rpartition(suffix)
    if base and tail.isdigit():
        return base, int(tail)
    return name, default


def clock() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds). On a shared CPU the second
    counts the work done rather than the waiting for a core."""
    return time.perf_counter(), time.process_time()


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def add_ratios_to_trl(run: dict, trl_runs: dict, rates: tuple[str, ...], size_key: str) -> None:
    """Set run["<rate>_vs_trl_best"] (its rate over the best of TRL's runs)
    and run["<rate>_vs_trl_best_same_batch"] (over the best TRL run of the
    same size, `size_key`: pairs or completions a step) for each rate the
    run has."""
    for rate in rates:
        if rate not in run:
            continue
        run[f"{rate}_vs_trl_best"] = run[rate] / max(v[rate] for v in trl_runs.values())
        same = [v[rate] for v in trl_runs.values() if v[size_key] == run[size_key]]
        if same:
            run[f"{rate}_vs_trl_best_same_batch"] = run[rate] / max(same)
