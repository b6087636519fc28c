#!/usr/bin/env bash
# Issue 5's GPU figures in one go: reward training and RLOO step throughput,
# Ratchet against TRL 1.16, on a random-weight SmolLM2-135M-shaped model.
# Written for the lent H200 (bench/RESULTS.md, "Training throughput against
# TRL", says how to call it); at most about 9 minutes (the budgets below).
# Every run is its own process with its own timeout, and each bench rewrites
# its JSON after every run, so a run that fails or hangs costs only itself.
#
#   bash bench/device/run.sh            # results in $OUT (the device tool's), else bench/out/device
#   SMOKE=1 bash bench/device/run.sh    # the same steps on the tiny shape, a few minutes on a CPU
#
# Needs, beside the working tree: .whl/ (trl 1.16.0, datasets 5.2.0, dill
# 0.4.1, multiprocess 0.70.19: TRL is not on the GPU image) and
# bench/out/smollm2-tokenizer/ (3.5 MB; the weights stay behind, the shape
# sets the cost).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench/out/device}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1

# TRL from the carried wheels where it is missing (the GPU image has no TRL).
if ! python3 -c "import trl" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false \
       TRANSFORMERS_VERBOSITY=error
python3 - <<'PY'
import torch, transformers
try:
    import trl
    version = trl.__version__
except Exception as exc:  # the benches still run Ratchet's side and record TRL's runs as errors
    version = f"not importable: {exc}"
print("torch", torch.__version__, "transformers", transformers.__version__, "trl", version,
      "gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None, flush=True)
PY
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.draw --format=csv | tee "$OUT/gpu.csv" || true
start=$(date +%s)
# The issue's settings; SMOKE=1 shrinks everything to check the script itself.
# Runs in order of importance: a run that no longer fits the --budget is skipped.
SHAPE=smollm2 PAIRS=640 EVAL_PAIRS=256 NEW_TOKENS=128 STEPS=4 SCALE=1
REWARD_RUNS=ours,trl-best,trl-default,ours-b64,ours-compile-b64,ours-b128
RLOO_RUNS=trl-default,ours-compile,ours-compile-p64,ours-p64,ours,trl-best
if [ "${SMOKE:-0}" = 1 ]; then
  # No compiled or continuous-batching runs: on a CPU they only cost time (and trl-cb takes ~10 GB of RAM).
  SHAPE=tiny PAIRS=96 EVAL_PAIRS=16 NEW_TOKENS=8 STEPS=3 SCALE=3
  REWARD_RUNS=ours,trl-best,trl-default,ours-b32 RLOO_RUNS=trl-default,ours,ours-p16
fi

# Reward: batch 16 (the issue's TRL setting) for both, then Ratchet's larger
# batches. 640 training pairs (40 steps at 16), 256 held-out pairs scored.
# --budget stops starting runs in time; the outer timeout is a safety net.
timeout $((225 * SCALE)) python3 -m bench.reward_throughput --shape $SHAPE --batch 16 --max-length 512 \
  --pairs $PAIRS --eval-pairs $EVAL_PAIRS --warmup $((5 / SCALE)) --timeout $((110 * SCALE)) --budget $((210 * SCALE)) \
  --runs $REWARD_RUNS --out "$OUT/reward.json"
echo "reward bench done after $(( $(date +%s) - start )) s"

# RLOO: 4 prompts x 4 samples, 128 new tokens, beta 0.05; then 64 prompts x 4.
# The compiled decode pays its compile in the first (untimed) step. TRL's
# step is ~92% generate (the issue), which its speed settings do not touch:
# trl-best comes last, if time is left.
timeout $((305 * SCALE)) python3 -m bench.rloo_throughput --shape $SHAPE --prompts-per-step 4 --k 4 \
  --new-tokens $NEW_TOKENS --beta 0.05 --steps $STEPS --warmup 1 --timeout $((120 * SCALE)) --budget $((290 * SCALE)) \
  --runs $RLOO_RUNS --out "$OUT/rloo.json"
echo "rloo bench done after $(( $(date +%s) - start )) s"

python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for name in ("reward.json", "rloo.json"):
    path = out / name
    if not path.is_file():
        print(name, "missing"); continue
    report = json.loads(path.read_text())
    print(f"== {name}: TRL best run {report.get('trl_best_run')}")
    for run, r in report["runs"].items():
        if "error" in r:
            print(f"{run:20s} ERROR {r['error']} {r.get('stderr_tail', '')[-300:]!r}"); continue
        keys = ("pairs_per_s", "real_tokens_per_s", "real_share_of_processed", "real_tokens_per_s_vs_trl_best_same_batch",
                "real_tokens_per_s_vs_trl_best", "heldout_accuracy") if "pairs_per_s" in r else (
                "completions_per_s", "generate_share", "decode_ms_per_step", "completions_per_s_vs_trl_best_same_batch",
                "completions_per_s_vs_trl_best")
        cells = " ".join(f"{k}={r[k]:.4g}" for k in keys if isinstance(r.get(k), (int, float)))
        print(f"{run:20s} {cells} mfu={r.get('mfu', 0):.3f} mem_mb={r['peak_memory_mb']:.0f}")
PY
