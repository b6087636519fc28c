"""Browser tests: real Chromium (Debian's `chromium` package; `.ci/run`
installs it when missing) driven by Playwright's Python package against
pytest-django's live_server. Screenshots go to tests/artifacts/screenshots/."""
import os
import shutil
from pathlib import Path

import pytest

# Playwright's sync API keeps an asyncio loop in this thread; the ORM calls
# the tests make between browser steps are ordinary blocking calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
PASSWORD = "pw-browser-annotator"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("Chromium is missing: `apt-get install -y chromium` (.ci/run does it when it is missing).")
    return path


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server, transactional_db):
    # Depending on the database and the server, the page closes before the
    # tables are flushed: no request of a still-open page races the flush.
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    # Shown with a failing test's output.
    page.on("console", lambda msg: print(f"console.{msg.type}: {msg.text}"))
    page.on("pageerror", lambda err: print(f"page error: {err}"))
    yield page
    context.close()
    _wait_for_server_requests_to_finish()


def _wait_for_server_requests_to_finish(timeout: float = 15.0) -> None:
    """A request the page sent just before closing may still run in a live
    server thread; its row locks would deadlock the TRUNCATE that flushes the
    tables after the test. Wait until no other connection is mid-query."""
    import time

    from django.db import connection

    if connection.vendor != "postgresql":
        time.sleep(0.5)
        return
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')"
            )
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.05)


@pytest.fixture
def rating_campaign(transactional_db):
    """An active campaign with a collecting round 0 of 8 comparisons (k=1),
    built without ML, and an annotator with a password in its pool."""
    from annotate.services.rounds import round_open
    from tests.factories import CampaignFactory, PolicyVersionFactory, PromptFactory, AnswerFactory, UserFactory

    user = UserFactory(username="rater", roles=["annotator"])
    user.set_password(PASSWORD)
    user.save()
    campaign = CampaignFactory(
        name="Browser test campaign", overlap=1, comparisons_per_round=8, auto_train=False, annotators=[user],
        instructions="# How to rate\n\nPrefer the **correct** answer; then the clearer one.",
    )
    v0 = PolicyVersionFactory(campaign=campaign, version=0)
    long_answer = "\n\n".join(f"Paragraph {i}: " + "a long answer goes on. " * 12 for i in range(40))
    for i in range(8):
        if i == 0:
            prompt = PromptFactory(campaign=campaign, external_id="chat", text="", turns=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Write a Python function that adds two numbers."},
            ])
            a = "Here it is:\n\n```python\ndef add(a, b):\n    return a  +  b   # spaces kept\n```\n\n<script>alert(1)</script>"
            b = long_answer
        else:
            prompt = PromptFactory(campaign=campaign, external_id=f"q{i}", text=f"Question {i}: *why* is the sky blue?")
            a, b = f"Answer one to question {i}: Rayleigh scattering.", f"Answer two to question {i}: **because**."
        AnswerFactory(prompt=prompt, policy_version=v0, sample_index=0, text=a)
        AnswerFactory(prompt=prompt, policy_version=v0, sample_index=1, text=b)
    round_open(campaign=campaign, index=0, candidate=v0, baseline=v0)
    return campaign, user


@pytest.fixture
def logged_in(page, live_server, rating_campaign):
    """The annotator's session cookie in the browser (no login form)."""
    from django.test import Client

    campaign, user = rating_campaign
    client = Client()
    client.force_login(user)
    page.context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )
    return campaign, user


def rate_url(live_server, campaign) -> str:
    return f"{live_server.url}/campaigns/{campaign.pk}/rate/"


def wait_for_comparison(page, other_than=None) -> int:
    """Wait until a comparison (not `other_than`) is on screen; its id."""
    if other_than is None:
        page.wait_for_selector("main[data-state=rating][data-comparison]")
    else:
        page.wait_for_function(
            "prev => { const m = document.querySelector('main'); "
            "return m.dataset.state === 'rating' && m.dataset.comparison && m.dataset.comparison !== String(prev); }",
            arg=other_than,
        )
    return int(page.get_attribute("main", "data-comparison"))


def wait_until(page, predicate, *, timeout=15.0, what="condition"):
    """Poll `predicate` (a database read, say). Waits through the page, not
    time.sleep: Playwright's sync API runs route handlers and events only
    while the test is inside one of its calls."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if result := predicate():
            return result
        page.wait_for_timeout(100)
    raise AssertionError(f"timed out waiting for {what}")
