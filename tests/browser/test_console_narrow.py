"""The console at 390 px (a phone) in real Chromium: on every page, tables
scroll sideways inside their own box and the page itself never does; and
one focus ring on every page, site and console, that is not the look of a
selected input. Screenshots: tests/artifacts/screenshots/console-<page>-390.png."""
import pytest

from annotate.models import Role, TrainingRun
from tests.browser.conftest import SCREENSHOTS

PHONE = {"width": 390, "height": 844}
FOCUS_RING = "rgb(194, 65, 12)"  # base.html's --focus-ring, #c2410c


@pytest.fixture
def staff_world(page, live_server, transactional_db):
    """A staff user's session, and a campaign with three rounds rated by
    three annotators with long names, an external model, a finished train
    run with long paths: wide tables on every page."""
    from django.test import Client

    from tests.factories import (ExternalModelFactory, UserFactory, external_answers, ratings_bulk_create,
                                 version_chain_rounds)

    staff = UserFactory(username="browser-staff", is_staff=True)
    raters = [UserFactory(username=f"annotator-with-a-long-name-{i}", roles=[Role.ANNOTATOR]) for i in range(3)]
    rounds = version_chain_rounds(versions=3, prompts=12, annotators=raters, overlap=3,
                                  name="A campaign with a rather long name for a narrow screen")
    campaign = rounds[0].campaign
    ratings_bulk_create(
        {"comparison": c, "annotator": a, "choice": "B" if (c.pk + a.pk) % 3 else "A", "strength": 2}
        for r in rounds for c in r.comparisons.all() for a in raters
    )
    model = ExternalModelFactory(campaign=campaign, name="an-external-model-with-a-very-long-name-v2-instruct")
    external_answers(model, list(campaign.prompts.all()))
    run = TrainingRun.objects.create(
        campaign=campaign, round=rounds[-1], kind=TrainingRun.Kind.TRAIN, stage="open",
        status=TrainingRun.Status.SUCCEEDED, config={"method": "rloo"},
        dataset_path="/a/rather/long/store/path/campaign-1/datasets/run-1-snapshot-of-every-rating", dataset_sha256="5" * 64,
        stages={n: {"status": "succeeded", "seconds": 3.5} for n in ("snapshot", "reward", "policy", "generate", "open")},
    )
    client = Client()
    client.force_login(staff)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return campaign, run


def test_every_console_page_fits_a_phone_with_its_tables_scrolling_in_their_own_box(page, live_server, staff_world):
    campaign, run = staff_world
    c = f"/console/campaigns/{campaign.pk}"
    pages = {
        "campaigns": "/console/", "campaign": f"{c}/", "pool": f"{c}/pool/", "prompts": f"{c}/prompts/",
        "answers": f"{c}/answers/", "gold": f"{c}/gold/", "quality": f"{c}/quality/", "models": f"{c}/models/",
        "endpoints": f"{c}/endpoints/", "runs": f"{c}/runs/", "lineage": f"{c}/lineage/", "compare": f"{c}/compare/",
        "exports": f"{c}/exports/", "run": f"/console/runs/{run.pk}/", "new-campaign": "/console/campaigns/new/",
    }
    page.set_viewport_size(PHONE)
    tables_seen = 0
    for name, path in pages.items():
        answer = page.goto(live_server.url + path)
        assert answer.status == 200, (name, answer.status)
        page.wait_for_load_state("networkidle")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{name}: the page scrolls sideways ({width} px)"
        # every table inside the viewport's width, scrolling in its own box when wider than it
        tables = page.evaluate("""[...document.querySelectorAll('main table')].filter(t => t.checkVisibility()).map(t => {
            const r = t.getBoundingClientRect(), s = getComputedStyle(t);
            return {id: t.id, left: r.left, right: r.right, scroll: t.scrollWidth, client: t.clientWidth,
                    overflow: s.overflowX};
        })""")
        for t in tables:
            assert t["left"] >= 0 and t["right"] <= PHONE["width"], (name, t)
            assert t["scroll"] <= t["client"] + 1 or t["overflow"] == "auto", (name, t)
        tables_seen += len(tables)
        page.screenshot(path=str(SCREENSHOTS / f"console-{name}-390.png"), full_page=True)
    assert tables_seen >= 10  # the pages had tables to check
    # a wide table is there to be scrolled: the quality page's per-annotator table is wider than the phone
    page.goto(live_server.url + f"{c}/quality/")
    assert page.evaluate("[...document.querySelectorAll('main table')].some(t => t.scrollWidth > t.clientWidth + 1)")


def focused_ring(page) -> dict:
    return page.evaluate("""(() => { const s = getComputedStyle(document.activeElement);
        return {tag: document.activeElement.tagName.toLowerCase(), type: document.activeElement.type || '',
                color: s.outlineColor, style: s.outlineStyle, width: s.outlineWidth, offset: s.outlineOffset}; })()""")


def test_one_focus_ring_on_links_buttons_and_inputs_of_the_site_and_the_console(page, live_server, staff_world):
    campaign, _ = staff_world
    rings = []
    for path in (f"/console/campaigns/{campaign.pk}/pool/", "/console/campaigns/new/"):
        page.goto(live_server.url + path)
        for _ in range(40):  # Tab through the page: links, buttons, inputs, selects, checkboxes
            page.keyboard.press("Tab")
            rings.append(focused_ring(page))
    page.context.clear_cookies()
    page.goto(live_server.url + "/login/")
    for i in range(2):
        page.keyboard.press("Tab")
        rings.append(focused_ring(page))
        if i == 0:  # the password field, focused from the keyboard
            page.screenshot(path=str(SCREENSHOTS / "login-focus-1280.png"))
    kinds = {r["tag"] + (":" + r["type"] if r["tag"] == "input" else "") for r in rings}
    assert {"a", "button", "input:text"} <= kinds, kinds
    for r in rings:
        if r["tag"] == "body":
            continue
        assert (r["color"], r["style"], r["width"]) == (FOCUS_RING, "solid", "3px"), r
        assert float(r["offset"].removesuffix("px")) >= 1, r
