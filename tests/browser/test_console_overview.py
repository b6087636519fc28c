"""A campaign's overview in real Chromium, wide (1400x900) and on a phone
(390x844): the five loop charts drawn by uPlot with no console error, the
"now" panel refreshed by its poll, Pause then Resume through the buttons,
and the settings unfolded from their link. Rounds, runs and versions are
built directly (tests/factories.py, loop_campaign_with_history): no ML runs.
Screenshots: tests/artifacts/screenshots/<test>-<width>.png."""
import pytest
from django.utils import timezone

from annotate.models import Campaign, Role, TrainingRun
from tests.browser.conftest import SCREENSHOTS

SIZES = [(1400, 900), (390, 844)]


@pytest.fixture
def overview(page, live_server, transactional_db):
    """A loop campaign with three rounds of history, and a user who
    administers it and trains (sees Pause, Resume and Train now), logged in."""
    from django.test import Client

    from tests.factories import UserFactory, loop_campaign_with_history

    annotators = [UserFactory(username=f"overview-rater-{i}", roles=[Role.ANNOTATOR]) for i in range(2)]
    campaign = loop_campaign_with_history(annotators, versions=3, prompts=4)
    boss = UserFactory(username="overview-boss", roles=[Role.CAMPAIGN_ADMIN, Role.ML_ENGINEER])
    campaign.admins.add(boss)
    client = Client()
    client.force_login(boss)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    errors = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda err: errors.append(str(err)))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return campaign, errors


@pytest.mark.parametrize("width,height", SIZES)
def test_the_overview_draws_its_charts_and_keeps_now_current(page, live_server, overview, width, height, request):
    campaign, errors = overview
    page.set_viewport_size({"width": width, "height": height})
    page.goto(f"{live_server.url}/console/campaigns/{campaign.pk}/")
    # one uPlot canvas per chart: win rate, KL, held-out accuracy, ratings per hour, time per stage
    page.wait_for_function("() => document.querySelectorAll('.overview-charts .uplot canvas').length === 5")
    for chart in ("win", "kl", "heldout", "rate", "time"):
        box = page.locator(f"#chart-{chart}")
        assert box.locator("canvas").count() == 1
        assert box.bounding_box()["width"] <= width
    # nothing runs over the side of a phone, the figures' table unfolded or not
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width
    page.click(".overview-table summary")
    page.wait_for_selector("#overview-rounds tr[data-round='2']", state="visible")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width
    assert "Nothing is stuck" in page.text_content("#now") or page.locator("#now-problems li").count() >= 1
    # a run the worker starts shows up in the panel without a reload
    run = TrainingRun.objects.create(
        campaign=campaign, round=campaign.rounds.order_by("-index").first(), kind="train", status="running",
        stage="reward", progress=0.3, heartbeat_at=timezone.now(),
        stages={"snapshot": {"status": "succeeded", "seconds": 1.0},
                "reward": {"status": "running", "started_at": timezone.now().isoformat()}},
    )
    page.wait_for_selector(f"#now-run[data-run='{run.pk}']", timeout=20_000)
    assert "at reward" in page.text_content("#now-run")
    page.screenshot(path=str(SCREENSHOTS / f"{request.node.originalname}-{width}.png"), full_page=True)
    assert errors == []


def test_pause_then_resume_through_the_buttons(page, live_server, overview, request):
    campaign, errors = overview
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{live_server.url}/console/campaigns/{campaign.pk}/")
        page.click("#pause-button")
        page.wait_for_selector("text=Campaign paused: no new work is given out.")
        campaign.refresh_from_db()
        assert campaign.status == Campaign.Status.PAUSED
        assert "The campaign is paused" in page.text_content("#now-problems")
        page.screenshot(path=str(SCREENSHOTS / f"{request.node.originalname}-{width}.png"), full_page=True)
        page.click("#resume-button")
        page.wait_for_selector("text=Campaign resumed.")
        campaign.refresh_from_db()
        assert campaign.status == Campaign.Status.ACTIVE
        assert page.locator("#pause-button").count() == 1
    # the settings are folded once the campaign has started; their link unfolds them
    assert not page.is_visible("#id_name")
    page.click("#settings-link")
    page.wait_for_selector("#id_name", state="visible")
    assert errors == []


def test_the_kl_chart_is_titled_by_the_campaigns_kl_anchor(page, live_server, overview):
    campaign, errors = overview
    for anchor, title in ((Campaign.SFTAnchor.BASE, "KL to the base (nats per answer)"),
                          (Campaign.SFTAnchor.SFT, "KL to the SFT model (nats per answer)")):
        Campaign.objects.filter(pk=campaign.pk).update(sft_anchor=anchor)
        page.goto(f"{live_server.url}/console/campaigns/{campaign.pk}/")
        page.wait_for_selector("#chart-kl .uplot canvas")
        assert page.text_content("#chart-kl .u-title").strip() == title
    assert errors == []


@pytest.mark.parametrize("width,height", SIZES)
def test_the_overview_draws_how_each_rounds_comparisons_were_chosen(page, live_server, overview, width, height,
                                                                    request):
    from annotate.models import Comparison

    campaign, errors = overview
    # given: the last round was picked by uncertainty (a fifth kept random), the first rounds at random
    last = campaign.rounds.order_by("-index").first()
    last.selection_strategy = "uncertainty"
    last.save(update_fields=["selection_strategy"])
    for i, c in enumerate(last.comparisons.filter(gold_choice="").order_by("pk")):
        Comparison.objects.filter(pk=c.pk).update(selection_reason="exploration" if i == 0 else "uncertainty",
                                                  selection_score=None if i == 0 else 0.1 * i)
    # when
    page.set_viewport_size({"width": width, "height": height})
    page.goto(f"{live_server.url}/console/campaigns/{campaign.pk}/")
    # then: one uPlot chart of comparisons by reason, a legend entry per reason seen, the table by round
    page.wait_for_selector("#chart-selection .uplot canvas")
    legend = page.text_content("#chart-selection .u-legend")
    assert "uncertainty" in legend and "exploration" in legend and "random" in legend
    assert page.locator("#chart-selection").bounding_box()["width"] <= width
    row = page.text_content(f"#selection-rounds tr[data-round='{last.index}']")
    assert "uncertainty" in row and "exploration 1" in row and "mean" in row
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width
    page.screenshot(path=str(SCREENSHOTS / f"{request.node.originalname}-{width}.png"), full_page=True)
    assert errors == []
