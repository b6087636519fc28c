"""Settings, all read from the environment here and nowhere else.

With no environment set, Ratchet runs on the embedded default that `make run`
uses: SQLite, a Celery broker in a local folder and the model store in a local
folder, all under RATCHET_DATA_DIR (./var). Set DATABASE_URL and
CELERY_BROKER_URL to run on PostgreSQL and Redis (docker compose, CI).
"""
import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("RATCHET_DATA_DIR", BASE_DIR / "var")).resolve()


def _bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


# Off unless asked for: a server started without DJANGO_DEBUG must not show
# tracebacks and settings to whoever reaches it. `make run` and the test suite
# (config/settings_test.py) turn it on for development.
DEBUG = _bool("DJANGO_DEBUG", False)
# Development only (DEBUG on); with DEBUG off a real key is required below.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-insecure-key-change-me")
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

# --- Production security (DEBUG off) --------------------------------------
# With DEBUG off Ratchet is assumed to face the internet behind TLS:
# `manage.py check --deploy --fail-level WARNING` passes. DJANGO_SECURE_SSL=0
# turns off only the HTTPS redirect and secure cookies, for a production-like
# server on plain-http loopback (config/platform.py: tests/e2e, bench/).
if not DEBUG:
    from django.core.exceptions import ImproperlyConfigured

    if len(SECRET_KEY) < 50 or SECRET_KEY.startswith("dev-only-"):
        raise ImproperlyConfigured(
            "DJANGO_DEBUG is off (the default): set DJANGO_SECRET_KEY to a random value of 50 or more characters "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))'), or, for development on your own "
            "machine, DJANGO_DEBUG=1 (make run sets it)."
        )
    _secure_ssl = _bool("DJANGO_SECURE_SSL", True)
    SECURE_SSL_REDIRECT = _secure_ssl
    SESSION_COOKIE_SECURE = _secure_ssl
    CSRF_COOKIE_SECURE = _secure_ssl
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
    if _bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "annotate",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# --- Database -------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{DATA_DIR / 'ratchet.sqlite3'}"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "0")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # IMMEDIATE takes the write lock at BEGIN, so two requests leasing the
        # last slot of a comparison serialise instead of both reading "free"
        # (SQLite has no SELECT ... FOR UPDATE).
        "transaction_mode": "IMMEDIATE",
        # Web and worker are separate processes on one file: wait for the
        # other's write instead of failing with "database is locked".
        "timeout": 30,
        # WAL lets readers run while one process writes.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"].setdefault("TEST", {})
    # A file, not :memory:, so a worker process can share the test database.
    DATABASES["default"]["TEST"]["NAME"] = str(DATA_DIR / "test-ratchet.sqlite3")
elif os.environ.get("DATABASE_SERVER_SIDE_BINDING", "1") == "1":
    # PostgreSQL: parameters travel apart from the statement, so the same
    # statement text repeats, and psycopg prepares it on its fifth run on a
    # connection: the server parses and plans each hot-path statement once
    # per connection, not on every call. Django leaves psycopg's
    # prepare_threshold off unless it is set here; planning was then about
    # half of PostgreSQL's CPU per annotator loop (bench/load.py). Pays off
    # with persistent connections (DATABASE_CONN_MAX_AGE). 0 turns both off
    # (e.g. behind a pgbouncer in transaction mode, which cannot keep
    # prepared statements).
    DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"

# --- Ratchet --------------------------------------------------------------
# Where published model versions and dataset snapshots live (a local folder;
# on several machines, a shared mount).
MODEL_STORE = os.environ.get("RATCHET_MODEL_STORE", str(DATA_DIR / "store"))
# Data exports (preference pairs, raw ratings) for download: a local folder,
# since the web process serves them from disk.
EXPORT_DIR = os.environ.get("RATCHET_EXPORT_DIR", str(DATA_DIR / "exports"))
# Largest JSONL import accepted in one request, in bytes, and the longest
# single text: both keep a bad upload from filling memory or the database.
IMPORT_MAX_BYTES = int(os.environ.get("RATCHET_IMPORT_MAX_BYTES", str(20 * 1024 * 1024)))
# Longest line of an import, in bytes: a longer one is refused by its number
# without being read into memory. 1 MiB holds a gold pair of three texts at
# TEXT_MAX_CHARS each, even with every character escaped as JSON \uXXXX.
IMPORT_MAX_LINE_BYTES = int(os.environ.get("RATCHET_IMPORT_MAX_LINE_BYTES", str(1024 * 1024)))
TEXT_MAX_CHARS = int(os.environ.get("RATCHET_TEXT_MAX_CHARS", "20000"))
# A stage that raised is retried this many times in all before its run fails.
TRAINING_MAX_ATTEMPTS = int(os.environ.get("RATCHET_TRAINING_MAX_ATTEMPTS", "3"))
# A running stage writes a heartbeat this often (seconds); a run whose
# heartbeat is older than TRAINING_STALE_AFTER_S lost its worker and the beat
# task (every TRAINING_REQUEUE_EVERY_S) queues its stage again. Much shorter
# than the broker's visibility timeout, which must stay longer than any stage.
TRAINING_HEARTBEAT_S = float(os.environ.get("RATCHET_HEARTBEAT_S", "15"))
TRAINING_STALE_AFTER_S = float(os.environ.get("RATCHET_STALE_AFTER_S", "120"))
TRAINING_REQUEUE_EVERY_S = float(os.environ.get("RATCHET_REQUEUE_EVERY_S", "60"))
# Seconds before a failed stage is tried again (doubles with each attempt).
TRAINING_RETRY_DELAY = int(os.environ.get("RATCHET_TRAINING_RETRY_DELAY", "5"))
# How often the beat task looks for collecting rounds that are complete but
# not training: the rating that completed one could not queue its check
# (the broker was down at that moment, or lost the message in a restart).
ROUND_SWEEP_EVERY_S = float(os.environ.get("RATCHET_ROUND_SWEEP_EVERY_S", "60"))
# Leftovers of a publish or a stage that was killed (<store>/.tmp, .scratch)
# are removed once nothing holds them and nothing in them changed for this
# long: a live publish holds a lock on its folder, the age is a second guard
# for filesystems where locks don't reach other machines.
STORE_LEFTOVER_AGE_S = float(os.environ.get("RATCHET_STORE_LEFTOVER_AGE_S", str(6 * 3600)))
STORE_SWEEP_EVERY_S = float(os.environ.get("RATCHET_STORE_SWEEP_EVERY_S", "900"))
# Which hosts an endpoint's base URL may point at (annotate/endpoints/hosts.py):
# host names, IPs, CIDRs, `*` (public addresses), `private`, `loopback`.
# Link-local and cloud metadata addresses are refused unless listed by IP.
# Default: model servers usually share Ratchet's private network (docs/configuration.md).
ENDPOINT_ALLOWED_HOSTS = os.environ.get("RATCHET_ENDPOINT_ALLOWED_HOSTS", "*,private,loopback")
# Generation jobs (annotate/endpoints/runner.py RetryPolicy): requests one
# prompt may spend on its own errors (5xx, timeouts, garbage); the first
# back-off and its ceiling (seconds, doubling in between); how long the
# endpoint may be unavailable (refused connections, 429, 502-504) before
# the job stops; how many prompts may fail in a row before it stops.
ENDPOINT_MAX_ATTEMPTS = int(os.environ.get("RATCHET_ENDPOINT_MAX_ATTEMPTS", "5"))
ENDPOINT_BACKOFF_S = float(os.environ.get("RATCHET_ENDPOINT_BACKOFF_S", "1"))
ENDPOINT_BACKOFF_MAX_S = float(os.environ.get("RATCHET_ENDPOINT_BACKOFF_MAX_S", "30"))
ENDPOINT_UNAVAILABLE_GIVE_UP_S = float(os.environ.get("RATCHET_ENDPOINT_UNAVAILABLE_GIVE_UP_S", "600"))
ENDPOINT_GIVE_UP_STREAK = int(os.environ.get("RATCHET_ENDPOINT_GIVE_UP_STREAK", "10"))
# One Celery task runs a job for at most this long, then queues its next
# part, well inside the task time limit (a job of many prompts takes longer).
ENDPOINT_TASK_BUDGET_S = float(os.environ.get("RATCHET_ENDPOINT_TASK_BUDGET_S", "3600"))

# --- REST framework -------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # DRF's Token and Session authentication, reading the user's roles
        # once per request (annotate/apis/authentication.py).
        "annotate.apis.authentication.RoleTokenAuthentication",
        "annotate.apis.authentication.SessionRoleAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "annotate.apis.schema.RatchetAutoSchema",
    "EXCEPTION_HANDLER": "annotate.apis.errors.exception_handler",
    # Scoped throttles only: the token endpoint ("login") limits password guessing.
    "DEFAULT_THROTTLE_RATES": {"login": os.environ.get("RATCHET_LOGIN_RATE", "10/min")},
}
# The HTML login form: failed attempts per client IP + username within the
# window before it answers 429 (frontend/views.ThrottledLoginView).
LOGIN_FAILURE_LIMIT = int(os.environ.get("RATCHET_LOGIN_FAILURE_LIMIT", "10"))
LOGIN_FAILURE_WINDOW_S = int(os.environ.get("RATCHET_LOGIN_FAILURE_WINDOW_S", "300"))
SPECTACULAR_SETTINGS = {
    "TITLE": "Ratchet API",
    "DESCRIPTION": "Pairwise human feedback in, a better model out.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # served locally: no CDN needed
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "CampaignStatusEnum": "annotate.models.Campaign.Status",
        "TrainingRunStatusEnum": "annotate.models.TrainingRun.Status",
        "TrainingRunKindEnum": "annotate.models.TrainingRun.Kind",
        "ExportKindEnum": "annotate.models.Export.Kind",
        "CampaignKindEnum": "annotate.models.Campaign.Kind",
        "LeaderboardModelKindEnum": [("policy", "policy"), ("external", "external")],
    },
}

# --- Celery ---------------------------------------------------------------
# The longest a task may run: a training stage on a real model and GPU takes
# hours. The hard limit kills the stage's process; its run is then retried
# (attempts counted) like a stage whose worker died.
CELERY_TASK_TIME_LIMIT = int(os.environ.get("RATCHET_TASK_TIME_LIMIT_S", str(5 * 3600)))
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 60
BROKER_DIR = DATA_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # The serverless broker: each message is a file in this folder, shared by
    # the web process and the worker on one machine.
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Longer than any task's time limit, so Redis never re-delivers a
        # training stage that is still running on a live worker.
        "visibility_timeout": CELERY_TASK_TIME_LIMIT + 3600,
        # A web request that enqueues (a rating completing a comparison, a
        # training trigger) must not hang on a broker that is gone: connect
        # and socket timeouts bound each try (redis-py waits forever by
        # default on a half-open connection)...
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
    }
# ...and publishing tries three times in all. Measured: 0.3-0.6 s when Redis
# refuses connections, 5.3 s when it accepts and never answers; three
# connect timeouts (~7 s) when its host is gone. Then the caller logs it and
# goes on, and a beat sweep sends what was lost (round checks:
# rounds_progress_sweep; training stages: training_runs_requeue_stale).
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.25, "interval_max": 0.5}
# The cache holds the memoized statistics (annotate/selectors/memo.py: the
# leaderboard, quality, reward weights), which the web processes and the
# workers must share, so never Django's per-process default. Redis where the
# project runs on it (CACHE_URL, else a redis:// CELERY_BROKER_URL: its keys
# are prefixed, beside the broker's); otherwise a file cache under the data
# folder, which every process on the machine sees (docs/configuration.md).
CACHE_URL = os.environ.get("CACHE_URL", "")
if not CACHE_URL and CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CACHE_URL = CELERY_BROKER_URL
if CACHE_URL.startswith(("redis://", "rediss://")):
    CACHES = {"default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL, "KEY_PREFIX": "ratchet",
        # As the broker's: a Redis that is gone costs a request seconds, not forever (memo.py then computes).
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 5},
    }}
else:
    CACHES = {"default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(Path(CACHE_URL.removeprefix("file://")) if CACHE_URL else DATA_DIR / "cache"),
        "OPTIONS": {"MAX_ENTRIES": 2000},
    }}
CELERY_TASK_DEFAULT_QUEUE = "default"
# Results live in the database (TrainingRun); Celery keeps none.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# A task is acknowledged only when it finished, and re-queued if its worker
# died, so a killed worker loses no training stage. Stages are idempotent,
# and a stage that keeps killing its worker is stopped by the attempt counter
# in the database (TRAINING_MAX_ATTEMPTS), not by the broker.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message at a time per process: a gpu worker must not hoard stages
# (the gpu worker also runs with --concurrency 1 --prefetch-multiplier 1).
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A Redis restart must not throw away hours of training: a running stage goes
# on; if its acknowledgement is lost with the connection, the redelivered
# message finds the stage succeeded and is a no-op.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker that lost the broker reconnects (every 2 s, backing off to 30 s)
# for as long as it takes: Celery's default, 100 tries, would make every
# worker exit during an outage of about 50 minutes.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_TASK_ALWAYS_EAGER = _bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ROUTES = {
    "annotate.tasks.training_stage_task": {"queue": "gpu"},
    "annotate.tasks.generation_job_task": {"queue": "endpoints"},
}
# Run by `celery beat` (or a worker started with -B, as `make run` does).
CELERY_BEAT_SCHEDULE = {
    "requeue-stale-training-runs": {
        "task": "annotate.tasks.training_runs_requeue_stale_task",
        "schedule": TRAINING_REQUEUE_EVERY_S,
    },
    "check-complete-rounds": {
        "task": "annotate.tasks.rounds_progress_sweep_task",
        "schedule": ROUND_SWEEP_EVERY_S,
    },
    # Generation jobs whose worker died, or whose message the broker lost.
    "requeue-stale-generation-jobs": {
        "task": "annotate.tasks.generation_jobs_requeue_stale_task",
        "schedule": TRAINING_REQUEUE_EVERY_S,
    },
    "sweep-store-leftovers": {
        "task": "annotate.tasks.store_leftovers_sweep_task",
        "schedule": STORE_SWEEP_EVERY_S,
    },
}
# Beat keeps its schedule in a file there and dies at start if the folder is
# missing (with PostgreSQL and Redis nothing else creates it). A read-only
# image is left alone: there, point RATCHET_DATA_DIR at a writable volume.
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
try:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
except OSError:
    pass

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
