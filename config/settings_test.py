"""Settings for the test suite: the development settings (DEBUG on, as `make
run` has them; pytest-django still runs each test with DEBUG off), unless the
environment says otherwise. Processes a test starts (config/platform.py) set
their own production-like environment and use config.settings."""
import os

os.environ.setdefault("DJANGO_DEBUG", "1")

from config.settings import *  # noqa: E402,F403  (one place for every setting)

# The tests' cache is a file cache under the data folder even where the
# broker is Redis: some tests clear() the cache (login throttles), which on
# Redis flushes the whole database, the broker's queues with it. Each test
# gets its own key prefix (tests/conftest.py); the Redis cache has its own
# test (tests/annotate/test_stats_memo.py).
if not os.environ.get("CACHE_URL"):
    CACHES = {"default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(DATA_DIR / "cache-test"),  # noqa: F405
    }}
