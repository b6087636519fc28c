"""The console's demonstrations page in real Chromium: a campaign admin
rejects one with a reason (the form will not go without one), edits and
accepts another, and the page fits a phone. Screenshots go to
tests/artifacts/screenshots/."""
import uuid

from playwright.sync_api import expect

from annotate.models import Campaign, Demonstration, DemonstrationReview, Role
from tests.browser.conftest import SCREENSHOTS


def _written(campaign, user, texts):
    """Demonstrations by `user`, through the annotator API: lease, rate both bad, write."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    for text in texts:
        comparison = client.post(f"/api/campaigns/{campaign.pk}/next/").data["comparison"]
        answer = client.post("/api/ratings/", {
            "comparison": comparison, "choice": "both_bad", "idempotency_key": str(uuid.uuid4()),
            "demonstration": {"text": text, "origin": ""},
        }, format="json")
        assert answer.status_code == 201, answer.content
    return list(Demonstration.objects.order_by("pk"))


def test_admin_rejects_with_a_reason_and_edits_and_accepts(page, live_server, rating_campaign):
    from django.test import Client

    from tests.factories import UserFactory

    campaign, rater = rating_campaign
    Campaign.objects.filter(pk=campaign.pk).update(demonstrations=Campaign.Demonstrations.OPTIONAL)
    first, second = _written(campaign, rater, ["Copied from *nowhere*.", "A good answer wiht a typo."])
    admin = UserFactory(username="reviewer", roles=[Role.CAMPAIGN_ADMIN])
    campaign.admins.add(admin)
    client = Client()
    client.force_login(admin)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    # given: the page, reached from the console's nav
    page.goto(f"{live_server.url}/console/campaigns/{campaign.pk}/")
    page.get_by_role("link", name="Demonstrations").click()
    expect(page.locator(f"#demo-{first.pk} .demo-text")).to_have_text("Copied from *nowhere*.")
    # when: Reject with no reason: the browser keeps the form (reason is required)
    row = page.locator(f"#demo-{first.pk}")
    row.get_by_role("button", name="Reject").click()
    assert DemonstrationReview.objects.count() == 0
    row.get_by_label("Reason").fill("not an answer to the prompt")
    row.get_by_role("button", name="Reject").click()
    expect(page.locator(".message")).to_contain_text(f"Demonstration {first.pk} rejected")
    # and edit the other, then accept it
    row = page.locator(f"#demo-{second.pk}")
    row.get_by_text("Edit and accept", exact=True).click()
    row.locator("textarea").fill("A good answer with no typo.")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "console-demonstrations.png"), full_page=True)
    row.get_by_role("button", name="Save the edit and accept").click()
    expect(page.locator(".message")).to_contain_text(f"Demonstration {second.pk} accepted")
    # then
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.reviews.get().reason) == ("rejected", "not an answer to the prompt")
    assert (second.status, second.text, second.submitted_text) == (
        "accepted", "A good answer with no typo.", "A good answer wiht a typo.")
    expect(page.locator("#demo-list")).to_contain_text("No pending demonstrations")
    # and the accepted one is listed under its status, and fits a phone
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/console/campaigns/{campaign.pk}/demonstrations/?status=accepted")
    expect(page.locator(f"#demo-{second.pk} .demo-text")).to_have_text("A good answer with no typo.")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(SCREENSHOTS / "console-demonstrations-phone.png"), full_page=True)
