"""An evaluation campaign in real Chromium: a campaign admin creates one in
the console (the loop's training settings hide themselves), starts it once
the models' answers are in, adds comparisons, and reads the leaderboard
with both scores (plain and length-controlled) and the length coefficient.
Screenshots go to tests/artifacts/screenshots/."""
import random

import pytest

from annotate.models import Campaign, Comparison, Role
from tests.browser.conftest import SCREENSHOTS


@pytest.fixture
def admin_in_browser(page, live_server, transactional_db):
    from django.test import Client

    from tests.factories import UserFactory

    admin = UserFactory(username="eval-admin", roles=[Role.CAMPAIGN_ADMIN])
    client = Client()
    client.force_login(admin)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return admin


def answers_and_ratings_arrive(campaign: Campaign, *, rate: bool):
    """What the other parts of the platform bring: prompts and three models'
    answers (the import), or the annotators' ratings of the open round
    ("wordy" writes long answers and wins by them)."""
    from tests.factories import ExternalModelFactory, UserFactory, external_answers, ratings_bulk_create

    if not rate:
        prompts = [campaign.prompts.create(external_id=f"q{i}", text=f"Question {i}?") for i in range(20)]
        for name, words in (("terse", 20), ("plain", 40), ("wordy", 120)):
            external_answers(ExternalModelFactory(campaign=campaign, name=name), prompts,
                             text=lambda m, p, words=words: " ".join(["word"] * words))
        return
    raters = [UserFactory(username=f"eval-rater{i}", roles=[Role.ANNOTATOR]) for i in range(3)]
    rng = random.Random(0)

    def choice(c) -> str:
        longer = "A" if len(c.response_a.text) > len(c.response_b.text) else "B"
        return longer if rng.random() < 0.75 else "AB".replace(longer, "")

    ratings_bulk_create(
        {"comparison": c, "annotator": a, "strength": 2, "choice": choice(c)}
        for c in Comparison.objects.filter(round__campaign=campaign).select_related("response_a", "response_b")
        for a in raters
    )


def test_admin_creates_an_evaluation_campaign_and_reads_both_scores(page, live_server, admin_in_browser):
    # given: the new-campaign form
    page.goto(f"{live_server.url}/console/campaigns/new/")
    assert page.locator("fieldset.loop-settings").is_visible()
    # when: an evaluation campaign, no base model
    page.select_option("#id_kind", "evaluation")
    assert page.locator("fieldset.loop-settings").is_hidden()
    page.fill("#id_name", "Which assistant?")
    page.fill("#id_comparisons_per_round", "30")
    page.fill("#id_gold_frequency", "0")
    page.click("button.primary")
    page.wait_for_url("**/console/campaigns/*/")
    campaign = Campaign.objects.get(name="Which assistant?")
    assert (campaign.kind, campaign.base_model) == (Campaign.Kind.EVALUATION, "")
    assert page.text_content("#campaign-kind").startswith("Evaluation")

    # and: once the answers are in, start it from the overview
    answers_and_ratings_arrive(campaign, rate=False)
    page.reload()
    page.click("#evaluation-start button")
    page.wait_for_selector("p.message")
    assert "Round 0 is open with 30 comparisons" in page.text_content("p.message")
    assert "3 models" in page.text_content("#rounds-heading + p")  # the overview's Rounds section
    page.fill("#id_count", "15")
    page.click("#evaluation-add button")
    page.wait_for_selector("p.message")
    assert "Added 15 comparisons" in page.text_content("p.message")
    assert Comparison.objects.filter(round__campaign=campaign).count() == 45
    page.screenshot(path=str(SCREENSHOTS / "console-evaluation-overview.png"), full_page=True)

    # then: after the ratings, the leaderboard shows both scores for every model
    answers_and_ratings_arrive(campaign, rate=True)
    page.goto(f"{live_server.url}/console/campaigns/{campaign.pk}/models/")
    plot = page.locator("svg#leaderboard-plot")
    assert plot.locator("circle.mark").count() == 3
    assert plot.locator("rect.mark-lc").count() == 3
    rows = page.locator("#leaderboard-table tbody tr")
    assert rows.count() == 3
    assert rows.first.get_attribute("data-model") == "wordy"  # long answers won, plainly
    for n in range(3):
        assert 500 < int(rows.nth(n).locator("td.score").text_content()) < 1500
        assert 500 < int(rows.nth(n).locator("td.lc-score").text_content()) < 1500
    assert "Length coefficient" in page.text_content("#length-coefficient")
    assert page.locator("#pair-win-rates tbody tr").count() == 3
    page.screenshot(path=str(SCREENSHOTS / "console-evaluation-models.png"), full_page=True)
