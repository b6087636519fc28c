"""The models page in real Chromium, wide (1400x900) and on a phone
(390x844): the leaderboard's interval plot, each model's score after each
round drawn by charts.js (uPlot), the versions' metrics as short tables; no
console errors and nothing wider than the viewport. Ratings are stored
directly: no ML runs. Screenshots: tests/artifacts/screenshots/<test>-<width>.png."""
import pytest

from annotate.models import PolicyVersion, RewardModelVersion, Role
from tests.browser.conftest import SCREENSHOTS
from tests.browser.test_console_runs import SIZES, assert_fits, watch_errors


@pytest.fixture
def rated_campaign(page, live_server, transactional_db):
    from django.test import Client

    from tests.factories import UserFactory, ratings_bulk_create, version_chain_rounds

    engineer = UserFactory(username="models-engineer", roles=[Role.ML_ENGINEER])
    annotators = [UserFactory(username=f"models-rater{i}", roles=[Role.ANNOTATOR]) for i in range(3)]
    rounds = version_chain_rounds(versions=4, prompts=10, annotators=annotators, overlap=3)
    ratings_bulk_create(
        {"comparison": c, "annotator": a, "strength": 1,
         "choice": ("A" if c.candidate_is_a else "B") if (c.pk + a.pk) % 3 else ("B" if c.candidate_is_a else "A")}
        for r in rounds for c in r.comparisons.all() for a in annotators
    )
    campaign = rounds[0].campaign
    for version in (1, 2, 3):
        reward = RewardModelVersion.objects.create(
            campaign=campaign, version=version, path=f"/r{version}", sha256="e" * 64,
            metrics={"eval/reward/accuracy": 0.6 + version / 20, "eval/reward/loss": 0.6, "reward/loss": 0.5,
                     "reward/steps": 40, **{f"eval/reward/accuracy_margin_{i}": 0.5 for i in range(8)}})
        PolicyVersion.objects.filter(campaign=campaign, version=version).update(
            reward_model=reward, metrics={"policy/kl": 0.01 * version, "policy/reward_mean": 0.1 * version,
                                          "policy/loss": -0.01, "policy/advantage_std": 0.9,
                                          "policy/completion_length": 31.5})
    client = Client()
    client.force_login(engineer)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return campaign


@pytest.mark.parametrize("width,height", SIZES)
def test_models_page_draws_scores_by_round_and_short_metric_tables(page, live_server, rated_campaign, width, height):
    page.set_viewport_size({"width": width, "height": height})
    errors = watch_errors(page)
    page.goto(f"{live_server.url}/console/campaigns/{rated_campaign.pk}/models/")
    page.wait_for_selector("#score-by-round-chart[data-drawn] .uplot")
    assert page.evaluate("typeof window.uPlot") == "function"
    # one series per model that has a score (v0..v3), over rounds 0..3
    assert page.get_attribute("#score-by-round-chart", "data-drawn") == "4"
    assert page.locator("#leaderboard-plot g.version").count() == 4
    # the versions' metrics: one row each, key metrics as columns, the rest folded
    rewards = page.locator("#reward-versions tbody tr")
    assert rewards.count() == 3
    assert page.locator("#reward-versions thead th").all_text_contents()[2:6] == [
        "eval/reward/accuracy", "eval/reward/loss", "reward/loss", "reward/steps"]
    assert "8 more" in rewards.first.text_content()
    assert not rewards.first.locator("details").get_attribute("open")
    row_height = rewards.first.bounding_box()["height"]
    assert row_height < 3 * page.locator("#reward-versions thead").bounding_box()["height"]
    assert_fits(page, width)
    page.screenshot(path=str(SCREENSHOTS / f"test_models_page-{width}.png"), full_page=True)
    assert errors == []
