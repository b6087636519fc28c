"""The better-answer editor of the rating page (a demonstration), keyboard
only, in real Chromium: choose, `d`, edit the chosen answer, Ctrl+Enter
submits both; on "both bad" in a campaign that asks for one, the submit
opens the editor first; the same on a phone (390 px). Screenshots go to
tests/artifacts/screenshots/."""
from playwright.sync_api import expect

from annotate.models import Answer, Campaign, Comparison, Demonstration, Rating
from tests.browser.conftest import SCREENSHOTS, rate_url, wait_for_comparison, wait_until


def _mode(campaign, mode: str) -> None:
    Campaign.objects.filter(pk=campaign.pk).update(demonstrations=mode)


def _side_text(comparison_id: int, side: str) -> str:
    c = Comparison.objects.get(pk=comparison_id)
    return Answer.objects.get(pk=c.response_a_id if side == "a" else c.response_b_id).text


def test_choose_b_press_d_edit_and_ctrl_enter_submits_the_rating_with_the_edit(page, live_server, logged_in):
    campaign, user = logged_in
    _mode(campaign, Campaign.Demonstrations.OPTIONAL)
    page.goto(rate_url(live_server, campaign))
    shown = wait_for_comparison(page)
    # when: B clearly better, then d: the editor opens on B's text
    page.keyboard.press("2")
    page.keyboard.press("w")
    page.keyboard.press("d")
    page.wait_for_selector("#demo-dialog[open]")
    original = _side_text(shown, "b")
    expect(page.locator("#demo-text")).to_have_value(original)
    expect(page.locator("#demo-text")).to_be_focused()
    page.keyboard.type("\n\nAlso: **mind the units**.")
    # the preview renders the markdown
    expect(page.locator("#demo-preview strong").last).to_have_text("mind the units")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "rating-demonstration-editor.png"))
    page.keyboard.press("Control+Enter")
    # then: the next comparison, and the rating with its demonstration stored
    wait_for_comparison(page, other_than=shown)
    demo = wait_until(page, lambda: Demonstration.objects.filter(annotator=user).first(), what="the demonstration")
    rating = Rating.objects.get(annotator=user)
    assert (rating.comparison_id, rating.choice, rating.strength) == (shown, "B", 2)
    assert (demo.rating_id, demo.origin, demo.status) == (rating.pk, "b", "pending")
    assert demo.text == original + "\n\nAlso: **mind the units**."
    assert demo.diff_chars == len("\n\nAlso: **mind the units**.")
    assert demo.time_on_task_ms is not None and demo.time_on_task_ms > 0


def test_a_both_bad_submit_asks_for_a_better_answer_first_and_esc_keeps_it_for_enter(page, live_server, logged_in):
    campaign, user = logged_in
    _mode(campaign, Campaign.Demonstrations.BOTH_BAD)
    page.goto(rate_url(live_server, campaign))
    first = wait_for_comparison(page)
    # when: both bad, Enter: the editor opens, empty, instead of submitting
    page.keyboard.press("4")
    page.keyboard.press("Enter")
    page.wait_for_selector("#demo-dialog[open]")
    expect(page.locator("#demo-text")).to_have_value("")
    assert not Rating.objects.filter(annotator=user).exists()
    page.keyboard.type("A *good* answer.")
    expect(page.locator("#demo-preview em")).to_have_text("good")
    # Esc closes and keeps it; the page says it goes with the rating; Enter submits
    page.keyboard.press("Escape")
    expect(page.locator("#demo-dialog")).not_to_have_attribute("open", "")
    expect(page.locator("#demo-attached")).to_be_visible()
    page.keyboard.press("Enter")
    second = wait_for_comparison(page, other_than=first)
    demo = wait_until(page, lambda: Demonstration.objects.filter(annotator=user).first(), what="the demonstration")
    assert (demo.comparison_id, demo.origin, demo.text) == (first, "", "A *good* answer.")
    # and on the next: asked once, Esc with nothing written, Enter submits the rating alone
    page.keyboard.press("4")
    page.keyboard.press("Enter")
    page.wait_for_selector("#demo-dialog[open]")
    page.keyboard.press("Escape")
    expect(page.locator("#demo-attached")).to_be_hidden()
    page.keyboard.press("Enter")
    wait_for_comparison(page, other_than=second)
    wait_until(page, lambda: Rating.objects.filter(annotator=user).count() == 2, what="the second rating")
    assert Demonstration.objects.filter(annotator=user).count() == 1
    # and d after A is refused in this campaign, with a notice
    page.keyboard.press("1")
    page.keyboard.press("d")
    expect(page.locator("#notice")).to_contain_text("only when both are bad")
    expect(page.locator("#demo-dialog")).not_to_have_attribute("open", "")


def test_the_editor_on_a_phone_stacks_text_over_preview_and_submits(page, live_server, logged_in):
    campaign, user = logged_in
    _mode(campaign, Campaign.Demonstrations.OPTIONAL)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(rate_url(live_server, campaign))
    shown = wait_for_comparison(page)
    page.keyboard.press("1")
    page.keyboard.press("q")
    page.keyboard.press("d")
    page.wait_for_selector("#demo-dialog[open]")
    page.keyboard.press("Control+a")
    page.keyboard.type("# Short\n\nRewritten from A.")
    expect(page.locator("#demo-preview h1")).to_have_text("Short")
    text, preview = page.locator("#demo-text").bounding_box(), page.locator("#demo-preview").bounding_box()
    dialog = page.locator("#demo-dialog").bounding_box()
    assert preview["y"] >= text["y"] + text["height"]  # stacked
    assert dialog["x"] >= 0 and dialog["x"] + dialog["width"] <= 390
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "rating-demonstration-phone.png"))
    page.keyboard.press("Control+Enter")
    wait_for_comparison(page, other_than=shown)
    demo = wait_until(page, lambda: Demonstration.objects.filter(annotator=user).first(), what="the demonstration")
    assert (demo.comparison_id, demo.origin, demo.text) == (shown, "a", "# Short\n\nRewritten from A.")
    assert demo.diff_chars > 0


def test_a_demonstration_waits_in_the_outbox_through_a_network_failure_and_lands_once(page, live_server, logged_in):
    import json

    campaign, user = logged_in
    _mode(campaign, Campaign.Demonstrations.OPTIONAL)
    sent = []

    def flaky(route, request):
        sent.append(json.loads(request.post_data))
        if len(sent) == 1:
            route.abort("internetdisconnected")
        else:
            route.continue_()

    page.route("**/api/ratings/", flaky)
    page.goto(rate_url(live_server, campaign))
    shown = wait_for_comparison(page)
    page.keyboard.press("4")
    page.keyboard.press("d")
    page.wait_for_selector("#demo-dialog[open]")
    page.keyboard.type("Kept through the outage.")
    page.keyboard.press("Control+Enter")
    wait_for_comparison(page, other_than=shown)
    demo = wait_until(page, lambda: Demonstration.objects.filter(annotator=user).first(), timeout=20,
                      what="the demonstration after the retry")
    assert len(sent) >= 2 and all(b["demonstration"]["text"] == "Kept through the outage." for b in sent)
    assert len({b["idempotency_key"] for b in sent}) == 1
    assert (demo.comparison_id, demo.origin, Demonstration.objects.count()) == (shown, "", 1)


def test_a_draft_survives_a_reload_of_the_same_comparison(page, live_server, logged_in):
    campaign, user = logged_in
    _mode(campaign, Campaign.Demonstrations.OPTIONAL)
    page.goto(rate_url(live_server, campaign))
    shown = wait_for_comparison(page)
    page.keyboard.press("4")
    page.keyboard.press("d")
    page.wait_for_selector("#demo-dialog[open]")
    page.keyboard.type("Half written")
    expect(page.locator("#demo-preview")).to_contain_text("Half written")
    # when: the page reloads (the lease holds: the same comparison comes back)
    page.reload()
    assert wait_for_comparison(page) == shown
    page.keyboard.press("4")
    page.keyboard.press("d")
    page.wait_for_selector("#demo-dialog[open]")
    # then: the draft is there; finish it and submit
    expect(page.locator("#demo-text")).to_have_value("Half written")
    page.keyboard.type(", now whole.")
    page.keyboard.press("Control+Enter")
    wait_for_comparison(page, other_than=shown)
    demo = wait_until(page, lambda: Demonstration.objects.filter(annotator=user).first(), what="the demonstration")
    assert (demo.comparison_id, demo.text) == (shown, "Half written, now whole.")
    # and the next comparison starts with no draft
    page.keyboard.press("4")
    page.keyboard.press("d")
    page.wait_for_selector("#demo-dialog[open]")
    expect(page.locator("#demo-text")).to_have_value("")


def test_an_unsent_demonstration_stays_in_the_outbox_across_a_reload_while_the_server_is_down(
    page, live_server, logged_in
):
    campaign, user = logged_in
    _mode(campaign, Campaign.Demonstrations.OPTIONAL)
    page.goto(rate_url(live_server, campaign))
    shown = wait_for_comparison(page)
    # given: the API stops answering, and the annotator writes a better answer and submits
    page.route("**/api/**", lambda route: route.abort("connectionrefused"))
    page.keyboard.press("4")
    page.keyboard.press("d")
    page.wait_for_selector("#demo-dialog[open]")
    page.keyboard.type("Written while the server was down.")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#status")).to_contain_text("not sent yet")

    def outbox() -> list:
        stored = page.evaluate(
            "() => Object.keys(localStorage).filter((k) => k.startsWith('ratchet.outbox'))"
            ".flatMap((k) => JSON.parse(localStorage.getItem(k)))"
        )
        return [item["body"] for item in stored if item.get("body")]

    [waiting] = outbox()
    # when: the page reloads with the server still down
    page.reload()
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('not sent yet')")
    # then: the submit, demonstration and key included, is still in the browser, and nothing reached the server
    assert outbox() == [waiting]
    assert waiting["comparison"] == shown and waiting["demonstration"]["text"] == "Written while the server was down."
    assert not Rating.objects.filter(annotator=user).exists() and not Demonstration.objects.exists()
    # when: the server is back
    page.unroute("**/api/**")
    # then: the retry lands it once, with the key it was first sent with
    demo = wait_until(page, lambda: Demonstration.objects.filter(annotator=user).first(), timeout=40,
                      what="the demonstration after the server came back")
    assert (demo.comparison_id, demo.origin, demo.text) == (shown, "", "Written while the server was down.")
    rating = Rating.objects.get(annotator=user)
    assert str(rating.idempotency_key) == waiting["idempotency_key"] and Demonstration.objects.count() == 1
    wait_until(page, lambda: outbox() == [], timeout=10, what="an empty outbox")
