"""A private Redis server per test, for the tests that kill the broker or a
worker: the shared one on 6379 serves other processes and is never touched."""
import subprocess
import time
from pathlib import Path

import pytest
import redis

from config.platform import Platform, free_port


class PrivateRedis:
    """redis-server on a free port of 127.0.0.1, without persistence: a kill
    loses everything it held, the harshest restart there is."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> "PrivateRedis":
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=open(self.workdir / "redis.log", "ab"), stderr=subprocess.STDOUT,
        )
        client = redis.Redis(port=self.port)
        deadline = time.time() + 20
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start; see {self.workdir / 'redis.log'}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save, connections dropped."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@pytest.fixture
def private_redis(tmp_path_factory):
    server = PrivateRedis(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def private_redis_platform(tmp_path, private_redis):
    """The platform on PostgreSQL and the private Redis: a killed worker's
    unacked message would come back in hours in whatever else used a shared
    Redis database; this one dies with the test."""
    p = Platform(tmp_path, backend="services", extra_env={"CELERY_BROKER_URL": private_redis.url})
    try:
        yield p.start()
    finally:
        p.stop()
