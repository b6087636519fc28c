"""Fixtures with a real llama.cpp server (config/llama_server.py) and the
fault proxy in front of it, shared by tests/annotate/endpoints/ and
tests/reliability/ (each conftest imports them).

The server requires SERVER_KEY, so every endpoint in these tests carries a
key, and the tests that read logs and error texts for it have one to find."""
import secrets

import pytest

from config.llama_server import LlamaServer
from tests.annotate.endpoints.proxy import FaultProxy

# Unique per run, so finding it in a log or an answer can only be a leak.
SERVER_KEY = "sk-ratchet-test-" + secrets.token_hex(16)
# Short answers keep the tests quick on 2 CPU cores.
GENERATION = {"max_tokens": 8, "temperature": 0.7, "seed": 7}


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """llama.cpp's OpenAI-compatible server with SmolLM2-135M, for the whole session."""
    server = LlamaServer(tmp_path_factory.mktemp("llama"), api_key=SERVER_KEY, n_ctx=1024).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def live_llama(llama_server):
    """The session's server, started again after a test that killed it."""
    if not llama_server.ready():
        llama_server.stop()
        llama_server.start()
    yield llama_server
    if not llama_server.ready():
        llama_server.stop()
        llama_server.start()


@pytest.fixture
def fault_proxy(live_llama):
    proxy = FaultProxy(upstream=f"http://127.0.0.1:{live_llama.port}").start()
    try:
        yield proxy
    finally:
        proxy.stop()
