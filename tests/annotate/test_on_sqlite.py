"""The rating paths that differ by database, run on the embedded default's
SQLite too. The suite runs on PostgreSQL (.ci/run); services/ratings.py
writes a rating in one raw statement there (::jsonb, FOR UPDATE OF) and
through the ORM on SQLite, so these tests run again, in a pytest of their
own, with no DATABASE_URL: the settings then take SQLite, as `make run`
does."""
import os
import subprocess
import sys

from config.platform import ROOT

# The files whose rating paths depend on the database: rankings (k-sets,
# JSON answers and tie groups), rubric aspects (JSON judgments, key lookups),
# a rating made on an older form, and the overview's ranking tally.
ON_BOTH = [
    "tests/annotate/test_rankings.py",
    "tests/annotate/test_aspects_api.py",
    "tests/annotate/test_aspects_stats.py",
    "tests/annotate/test_rating_form_changed.py",
    "tests/annotate/test_rankings_overview.py",
]


def test_rankings_aspects_and_changed_forms_pass_on_sqlite(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(RATCHET_DATA_DIR=str(tmp_path / "var"), HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *ON_BOTH],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    tail = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, tail
    assert "sqlite" in subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings_test';"
         "django.setup(); from django.db import connection; print(connection.vendor)"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    ).stdout, "the run above did not use SQLite"
    assert " passed" in tail and " failed" not in tail
