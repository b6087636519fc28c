"""The login form's lockout in real Chromium: past the limit of failed
logins the page is the site's own, says in how many minutes to try again,
and even the right password is refused until then."""
from django.core.cache import cache
from playwright.sync_api import expect

from tests.browser.conftest import PASSWORD, SCREENSHOTS


def test_too_many_failed_logins_show_a_styled_page_that_says_when_to_try_again(
    page, live_server, rating_campaign, settings
):
    _, user = rating_campaign
    settings.LOGIN_FAILURE_LIMIT = 3
    settings.LOGIN_FAILURE_WINDOW_S = 600
    cache.clear()
    try:
        page.goto(f"{live_server.url}/login/")
        # given: three wrong passwords, each answered by the form again
        for _ in range(3):
            page.fill("#id_username", user.username)
            page.fill("#id_password", "wrong password")
            page.click("button[type=submit]")
            expect(page.get_by_role("alert")).to_contain_text("didn't match")
        # when: the right one
        page.fill("#id_username", user.username)
        page.fill("#id_password", PASSWORD)
        with page.expect_response(lambda r: r.url.endswith("/login/") and r.request.method == "POST") as answer:
            page.click("button[type=submit]")
        # then: 429, on a page in the site's look that says when to try again
        assert answer.value.status == 429
        assert 540 < int(answer.value.headers["retry-after"]) <= 600
        expect(page.get_by_role("heading", name="Too many failed logins")).to_be_visible()
        expect(page.get_by_role("alert")).to_contain_text("Try again in 10 minutes.")
        expect(page.locator("header h1 a")).to_have_text("Ratchet")  # base.html's header
        assert page.title() == "Too many failed logins · Ratchet"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "login-lockout-1280.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 800})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(SCREENSHOTS / "login-lockout-390.png"), full_page=True)
        # and the link leads back to the form, which still refuses until the window ends
        page.get_by_role("link", name="Back to the login page").click()
        expect(page.locator("#id_username")).to_be_visible()
        assert "sessionid" not in {c["name"] for c in page.context.cookies()}  # never logged in
    finally:
        cache.clear()
