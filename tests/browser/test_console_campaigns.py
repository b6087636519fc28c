"""The campaign admin's console in real Chromium: log in, create a campaign
with a live markdown preview, edit it, add an annotator with a daily limit,
pause and reinstate them; the annotator's rating page tells them why there
is no work. Screenshots: tests/artifacts/screenshots/console-*.png."""
import pytest

from annotate.models import Campaign, Membership
from tests.browser.conftest import SCREENSHOTS, rate_url

ADMIN_PASSWORD = "pw-browser-admin"


@pytest.fixture
def admin(transactional_db):
    from tests.factories import UserFactory

    user = UserFactory(username="boss", roles=["campaign_admin"])
    user.set_password(ADMIN_PASSWORD)
    user.save()
    return user


def test_admin_creates_and_edits_a_campaign_and_manages_its_pool(page, live_server, admin):
    from tests.factories import UserFactory

    UserFactory(username="rita", roles=["annotator"])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # given: the admin logs in and lands on the console
    page.goto(f"{live_server.url}/login/?next=/console/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", ADMIN_PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/console/")
    # when: a new campaign, instructions typed in markdown
    page.get_by_role("link", name="New campaign").click()
    page.fill("#id_name", "Helpfulness")
    page.fill("#id_base_model", "HuggingFaceTB/SmolLM2-135M-Instruct")
    page.fill("#id_instructions", "# How to rate\n\nPrefer the **correct** answer.\n\n<script>window.pwned=1</script>")
    # then: the preview renders it, sanitised
    page.wait_for_selector("#instructions-preview h1")
    assert page.text_content("#instructions-preview h1") == "How to rate"
    assert page.text_content("#instructions-preview strong") == "correct"
    assert page.locator("#instructions-preview script").count() == 0
    assert page.evaluate("window.pwned") is None
    # a bad number is shown next to its field and nothing is created
    page.fill("#id_overlap", "0")
    page.get_by_role("button", name="Create campaign").click()
    page.wait_for_selector("#err-overlap")
    assert "between 1 and 50" in page.text_content("#err-overlap")
    assert not Campaign.objects.exists()
    assert page.input_value("#id_name") == "Helpfulness"  # what was typed stays
    page.fill("#id_overlap", "2")
    page.get_by_role("button", name="Create campaign").click()
    page.wait_for_selector("text=Campaign 'Helpfulness' created.")
    campaign = Campaign.objects.get()
    assert (campaign.overlap, campaign.status) == (2, "draft")
    assert campaign.instructions.startswith("# How to rate")
    # edit: the preview follows, the save sticks
    page.fill("#id_instructions", "## Updated\n\n- one\n- two")
    page.wait_for_selector("#instructions-preview h2")
    page.fill("#id_comparisons_per_round", "16")
    page.fill("#id_training_config", '{"reward": {"epochs": 2}}')
    page.get_by_role("button", name="Save settings").click()
    page.wait_for_selector("text=Settings saved.")
    campaign.refresh_from_db()
    assert (campaign.comparisons_per_round, campaign.training_config) == (16, {"reward": {"epochs": 2}})
    assert campaign.instructions.startswith("## Updated")
    # the pool: add an existing annotator with a daily limit
    page.get_by_role("link", name="Annotators").click()
    page.fill("#add-usernames", "rita")
    page.fill("#add-daily-limit", "25")
    page.get_by_role("button", name="Add to the pool").click()
    page.wait_for_selector("tr[data-username=rita]")
    assert page.text_content("tr[data-username=rita] .daily-limit").strip() == "25"
    membership = Membership.objects.get(annotator__username="rita")
    assert (membership.status, membership.daily_limit) == ("active", 25)
    # pause with a reason, then reinstate
    page.get_by_label("Why pause rita").fill("Read the new guidelines first")
    page.get_by_role("button", name="Pause rita").click()
    page.wait_for_selector("tr[data-username=rita].member-paused")
    assert "Read the new guidelines first" in page.text_content("tr[data-username=rita] .paused-reason")
    membership.refresh_from_db()
    assert (membership.status, membership.paused_reason) == ("paused", "Read the new guidelines first")
    page.screenshot(path=str(SCREENSHOTS / "console-pool.png"), full_page=True)
    page.get_by_role("button", name="Reinstate rita").click()
    page.wait_for_selector("tr[data-username=rita].member-active")
    membership.refresh_from_db()
    assert (membership.status, membership.paused_reason) == ("active", "")
    # create an account: the generated password shows once
    page.fill("#create-username", "newbie")
    page.get_by_role("button", name="Create and add").click()
    page.wait_for_selector("#generated-password")
    assert len(page.text_content("#generated-password")) >= 12
    # the campaigns list
    page.get_by_role("link", name="Campaigns").click()
    page.wait_for_selector("table.campaigns")
    assert "Helpfulness" in page.text_content("table.campaigns")
    page.screenshot(path=str(SCREENSHOTS / "console-campaigns.png"), full_page=True)
    assert (SCREENSHOTS / "console-campaigns.png").stat().st_size > 0
    assert (SCREENSHOTS / "console-pool.png").stat().st_size > 0


def test_a_paused_annotator_sees_the_reason_on_the_rating_page(page, live_server, logged_in):
    campaign, user = logged_in
    Membership.objects.filter(campaign=campaign, annotator=user).update(status="paused", paused_reason="Too fast")
    page.goto(rate_url(live_server, campaign))
    page.wait_for_selector("main[data-state=stopped]")
    assert "Too fast" in page.text_content("#done-text")
    assert "Nothing left" not in page.text_content("#done-heading")


def test_a_paused_campaign_says_so_on_the_rating_page(page, live_server, logged_in):
    campaign, _ = logged_in
    Campaign.objects.filter(pk=campaign.pk).update(status="paused")
    page.goto(rate_url(live_server, campaign))
    page.wait_for_selector("main[data-state=stopped]")
    assert "paused" in page.text_content("#done-text")
