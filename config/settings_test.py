"""Settings for the test suite: the development settings (DEBUG on, as `make
run` has them; pytest-django still runs each test with DEBUG off), unless the
environment says otherwise. Processes a test starts (config/platform.py) set
their own production-like environment and use config.settings."""
import os

os.environ.setdefault("DJANGO_DEBUG", "1")

from config.settings import *  # noqa: E402,F403  (one place for every setting)
