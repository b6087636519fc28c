"""Every page of the product in real Chromium, wide (1400x900) and on a phone
(390x844), over a campaign a few rounds into the loop (world.py): it
answers 200, logs no JavaScript error, does not scroll sideways (an element
may scroll inside its own box, the page may not), and no element covers
another's text (overlap.py). A full-page screenshot of each goes to
tests/artifacts/screenshots/<page>-<width>.png.

PAGES lists the pages and ACTIONS the URLs that only take a POST (a GET
must answer 405); a URL of frontend/urls.py or frontend/console/ in
neither fails test_every_url_is_a_page_or_an_action, so a new page gets
these checks by being added here."""
from dataclasses import dataclass, field

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, reverse

from annotate.models import TrainingRun

from tests.browser.conftest import SCREENSHOTS
from tests.browser.overlap import covered_text
from tests.browser.world import World, world  # noqa: F401  (the fixture)

WIDTHS = {1400: {"width": 1400, "height": 900}, 390: {"width": 390, "height": 844}}


@dataclass(frozen=True)
class Page:
    name: str  # the screenshot's name
    url_name: str
    user: str | None = "lead"  # World attribute of who is logged in; None: nobody
    kwargs: dict = field(default_factory=dict)  # World attributes for URL arguments, over url_kwargs' defaults
    query: str = ""
    ready: str | None = None  # a selector to wait for once the network is quiet


PAGES = [
    Page("login", "login", user=None),
    Page("home", "home", user="rater"),
    Page("home-staff", "home"),
    Page("rate", "rate", user="rater", ready="main[data-state=rating][data-comparison]"),
    # nothing left to rate there
    Page("rate-done", "rate", user="rater", kwargs={"campaign_id": "evaluation"},
         ready="main[data-state]:not([data-state=loading])"),
    Page("campaigns", "console-campaigns"),
    Page("campaign-new", "console-campaign-new"),
    Page("campaign", "console-campaign"),
    Page("evaluation-campaign", "console-campaign", kwargs={"campaign_id": "evaluation"}),
    Page("pool", "console-pool"),
    Page("prompts", "console-prompts"),
    Page("answers", "console-answers"),
    Page("gold", "console-gold"),
    Page("quality", "console-quality"),
    Page("models", "console-models"),
    Page("evaluation-models", "console-models", kwargs={"campaign_id": "evaluation"}),
    Page("exports", "console-exports"),
    Page("endpoints", "console-endpoints"),
    Page("endpoint", "console-endpoint"),
    Page("generation-job", "console-generation-job"),
    Page("runs", "console-runs"),
    Page("run", "console-run"),
    Page("lineage", "console-lineage"),
    Page("compare", "console-compare", query="?a=2&b=3"),
    Page("runs-compare", "console-runs-compare", query="?a={previous_run}&b={run}"),
    Page("demonstrations", "console-demonstrations"),
]

# Forms post here and are redirected back to a page above.
ACTIONS = {
    "console-campaign-action", "console-evaluation", "console-pool-create", "console-pool-add", "console-pool-member",
    "console-admins-add", "console-admin-remove", "console-endpoint-delete", "console-generation-start",
    "console-generation-job-cancel", "console-run-cancel", "console-campaign-run-action",
    "console-demonstration-review", "logout",
}
# An action URL's own word where the default ("pause") is not one it takes.
ACTION_WORDS = {"console-campaign-run-action": "train"}
# Not pages: the static files the pages load (checked by every page loading them without an error).
# Nor the overview's *Now* panel: a fragment the overview page polls (checked
# as part of that page).
NOT_PAGES = {"frontend-static", "console-campaign-now"}

# Page and width where a check fails today, with why and whose work fixes it:
# xfail(strict=True), so the test says when the fix lands and the mark must go.
KNOWN: dict = {}


def url_patterns():
    """(route, name) of every URL of the product's pages: frontend/urls.py and what it includes."""
    from frontend import urls

    def walk(patterns, prefix):
        for p in patterns:
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                yield prefix + str(p.pattern), p.name

    return list(walk(urls.urlpatterns, ""))


def url_kwargs(world: World, overrides: dict) -> dict:
    values = {
        "campaign_id": world.campaign.pk, "run_id": world.run.pk, "endpoint_id": world.endpoint.pk,
        "job_id": world.job.pk, "username": world.rater.username, "action": "pause",
        "demonstration_id": world.demonstration.pk,
    }
    values.update({k: getattr(world, v).pk for k, v in overrides.items()})
    return values


def page_url(world: World, page: Page, pattern_args) -> str:
    kwargs = url_kwargs(world, page.kwargs)
    runs = TrainingRun.objects.filter(campaign=world.campaign, kind=world.run.kind).exclude(pk=world.run.pk)
    previous = runs.order_by("-pk").values_list("pk", flat=True).first()
    query = page.query.format(run=world.run.pk, previous_run=previous)
    return reverse(page.url_name, kwargs={k: kwargs[k] for k in pattern_args}) + query


def route_args(url_name: str) -> list[str]:
    from django.urls import get_resolver

    [(possibilities, *_)] = get_resolver().reverse_dict.getlist(url_name)
    return possibilities[0][1]  # the URL's parameter names


def test_every_url_is_a_page_or_an_action():
    names = [name for _, name in url_patterns()]
    assert None not in names, f"a URL without a name: {[r for r, n in url_patterns() if n is None]}"
    listed = {p.url_name for p in PAGES} | ACTIONS | NOT_PAGES
    assert set(names) - listed == set(), "add these URLs to PAGES (pages) or ACTIONS (POST only) in this file"
    assert listed - set(names) == set(), "these are listed here but no URL has their name"


def test_actions_take_only_a_post(world):
    client = Client()
    client.force_login(world.lead)
    for name in sorted(ACTIONS):
        kwargs = {**url_kwargs(world, {}), **({"action": ACTION_WORDS[name]} if name in ACTION_WORDS else {})}
        path = reverse(name, kwargs={k: kwargs[k] for k in route_args(name)})
        assert client.get(path).status_code == 405, f"{name} ({path}) answers a GET: list it in PAGES"


def cases():
    for page in PAGES:
        for width in WIDTHS:
            reason = KNOWN.get((page.name, width))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(page, width, id=f"{page.name}-{width}", marks=marks)


@pytest.mark.parametrize("spec, width", list(cases()))
def test_page_renders_cleanly(page, live_server, world, spec, width):
    if spec.user:
        client = Client()
        client.force_login(getattr(world, spec.user))
        page.context.add_cookies(
            [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
        )
    errors = []
    page.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda err: errors.append(f"page error: {err}"))
    page.set_viewport_size(WIDTHS[width])
    response = page.goto(live_server.url + page_url(world, spec, route_args(spec.url_name)))
    page.wait_for_load_state("networkidle")
    if spec.ready:
        page.wait_for_selector(spec.ready)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")  # painted
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{spec.name}-{width}.png"), full_page=True)

    overflow = page.evaluate("""() => {
      const page = document.scrollingElement.scrollWidth, view = innerWidth;
      // What reaches past the right edge without a scrolling box around it, to say what overflows.
      const inScrollBox = (e) => {
        for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
          if (getComputedStyle(a).overflowX !== 'visible') return true;
        }
        return false;
      };
      const wide = [...document.querySelectorAll('body *')]
        .filter(e => e.getBoundingClientRect().right > view + 1 && e.checkVisibility() && !inScrollBox(e))
        .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
                  (typeof e.className === 'string' && e.className ? '.' + e.className.trim().split(/\\s+/).join('.') : '') +
                  ' ' + Math.round(e.getBoundingClientRect().right) + 'px')
        .slice(0, 8);
      return { page, view, wide };
    }""")
    covered = covered_text(page)
    problems = []
    if response.status != 200:
        problems.append(f"HTTP {response.status}")
    if errors:
        problems.append(f"JavaScript errors: {errors}")
    if overflow["page"] > overflow["view"] + 1:
        problems.append(f"the page scrolls sideways: {overflow['page']} px wide in {overflow['view']} px; {overflow['wide']}")
    if covered["checked"] == 0:
        problems.append("no text was checked for overlap")
    if covered["coveredCount"]:
        problems.append(f"{covered['coveredCount']} of {covered['checked']} text points covered: {covered['covered']}")
    assert problems == [], f"{spec.name} at {width} px: " + "; ".join(problems)
