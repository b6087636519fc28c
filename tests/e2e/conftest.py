import pytest

from config.platform import Platform


@pytest.fixture
def services_platform(tmp_path):
    """The platform on PostgreSQL and a Redis database of its own, stopped (and its database dropped) after the test."""
    p = Platform(tmp_path, backend="services")
    try:
        yield p.start()
    finally:
        p.stop()
