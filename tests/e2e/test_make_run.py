"""`make run` as a newcomer meets it: its three commands (migrate,
demo_setup, runplatform) on the embedded default (SQLite and the folder
broker in a temporary folder, a tiny base model instead of SmolLM2). The
terminal shows the setup's steps in order and ends with the "up" banner;
Celery's banners, log lines and warnings go to var/log/<process>.log; a
second start says which round is open."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config.platform import ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BANNER_END = "Ctrl-C stops the web server and the workers."
NOISE = ("celery@", "WARNING", "Warning", "[tasks]", " ready.", "Task annotate", "Traceback", "-------------- ")


@pytest.fixture
def tiny_base(tmp_path_factory) -> str:
    from rlhf.tiny import build_tiny_model

    texts = ["What is the capital of France?", "Paris is the capital of France.", "Bees make honey."] * 20
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts, seed=0)


@pytest.fixture
def embedded_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "RATCHET_MODEL_STORE")}
    env.update(RATCHET_DATA_DIR=str(tmp_path / "var"), DJANGO_DEBUG="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def manage(env, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_until_up(env, port: int, timeout: float = 240) -> list[str]:
    """Start runplatform, read its terminal until the banner's last line,
    then Ctrl-C it; its terminal lines (stdout and stderr together)."""
    proc = subprocess.Popen([sys.executable, "manage.py", "runplatform", "--addr", f"127.0.0.1:{port}"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, deadline = [], time.time() + timeout
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.strip() == BANNER_END or time.time() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
    assert lines and lines[-1] == BANNER_END, "\n".join(lines)
    assert proc.returncode == 0, (proc.returncode, rest)
    return lines + [line for line in (rest or "").splitlines() if line.strip()]


def test_make_run_prints_its_steps_in_order_and_the_banner_last_with_the_noise_in_var_log(
    tiny_base, embedded_env, tmp_path
):
    env = embedded_env
    log = Path(env["RATCHET_DATA_DIR"]) / "log"
    migrated = manage(env, "migrate", "--no-input", "-v0")
    assert migrated.returncode == 0, migrated.stderr
    # the setup: its steps, in order, one line each; nothing else on the terminal
    setup = manage(env, "demo_setup", "--base-model", tiny_base)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    terminal = setup.stdout.splitlines() + setup.stderr.splitlines()
    assert not [line for line in terminal if any(n in line for n in NOISE)], terminal
    steps = [line.split(":")[0] for line in terminal]
    assert steps[:3] == ["Demo users", "Base model", "Round 0"]
    assert [line.split(":")[0] for line in terminal if line.startswith("Round 0, ")] == [
        "Round 0, import", "Round 0, generate", "Round 0, open"]
    assert terminal[-1] == "Demo campaign 'Demo: long-form questions (ASQA)': round 0 is open: 0 of 8 ratings."
    assert "training_stage_task" in (log / "setup.log").read_text()  # the stages' log lines went there
    # the platform: the banner last, clean
    port = free_port()
    lines = run_until_up(env, port)
    banner = lines.index(f"Ratchet is up: http://127.0.0.1:{port}/")
    before = lines[:banner]
    assert [line for line in before if line.strip()] == [
        f"Starting the web server and two workers (their output: {log}/)..."]
    assert not [line for line in lines if any(n in line for n in NOISE)], lines
    assert "  Demo: long-form questions (ASQA): round 0 is open: 0 of 8 ratings" in lines[banner:]
    # and each process's own output is in its log
    worker, gpu, web = ((log / f"{name}.log").read_text() for name in ("worker", "gpu-worker", "web"))
    assert "default@" in worker and " ready." in worker and "[tasks]" in worker
    assert "gpu@" in gpu and " ready." in gpu
    assert f"Starting development server at http://127.0.0.1:{port}/" in web
    # a second start (make run again): no setup steps run again, and it says which round is open
    again = manage(env, "demo_setup", "--base-model", tiny_base)
    assert again.returncode == 0, again.stderr
    assert not any(line.startswith("Round 0") for line in again.stdout.splitlines()), again.stdout
    assert again.stdout.splitlines()[-1].endswith("round 0 is open: 0 of 8 ratings.")
    port = free_port()
    lines = run_until_up(env, port)
    assert "  Demo: long-form questions (ASQA): round 0 is open: 0 of 8 ratings" in lines
    assert worker.count(" ready.") < (log / "worker.log").read_text().count(" ready.")  # appended, not replaced
