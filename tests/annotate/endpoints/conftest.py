import pytest

from tests.annotate.endpoints.servers import fault_proxy, live_llama, llama_server  # noqa: F401  (fixtures)


@pytest.fixture
def quick_retries(settings):
    """Back-offs of tenths of a second, so the failure tests take seconds."""
    settings.ENDPOINT_MAX_ATTEMPTS = 3
    settings.ENDPOINT_BACKOFF_S = 0.05
    settings.ENDPOINT_BACKOFF_MAX_S = 0.5
    settings.ENDPOINT_UNAVAILABLE_GIVE_UP_S = 60
    settings.ENDPOINT_GIVE_UP_STREAK = 10
    return settings
