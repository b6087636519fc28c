"""The rating page on a phone (390x844) and model text that is raw HTML, in
real Chromium: no element may cover another's text (the controls bar over
answer B was the fault), and HTML in a prompt or an answer shows as text."""
from annotate.models import Answer, Prompt
from tests.browser.conftest import SCREENSHOTS, rate_url, wait_for_comparison
from tests.browser.overlap import covered_text

PHONE = {"width": 390, "height": 844}


def test_no_element_covers_the_text_of_the_prompt_or_the_answers_on_a_phone(page, live_server, logged_in):
    campaign, _ = logged_in
    page.set_viewport_size(PHONE)
    page.goto(rate_url(live_server, campaign))
    wait_for_comparison(page)
    page.keyboard.press("1")  # a choice made: the strength fieldset is live, the bar at its tallest
    # the overlap check (overlap.py): at the top and at the bottom of the window, each line is its own element's
    result = covered_text(page, ["#prompt", "#answer-a", "#answer-b"])
    per_root = covered_text(page, "#answer-b")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "rating-phone-answer-b.png"))
    assert result["covered"] == [], f"{result['coveredCount']} of {result['checked']} text points covered"
    assert per_root["checked"] >= 4, per_root  # answer B's lines (sides are random: short or long) were looked at
    # and the controls stay reachable: in the page, below the answers, every one in view when scrolled to
    page.locator("#rating-form").scroll_into_view_if_needed()
    form, b = page.locator("#rating-form").bounding_box(), page.locator("#answer-b").bounding_box()
    assert form["y"] >= b["y"] + b["height"]
    submit = page.locator("#submit")
    submit.scroll_into_view_if_needed()
    box = submit.bounding_box()
    assert 0 <= box["y"] and box["y"] + box["height"] <= PHONE["height"]
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_raw_html_in_a_prompt_or_an_answer_shows_as_text_and_never_runs(page, live_server, logged_in):
    campaign, _ = logged_in
    # given: every prompt and answer is raw HTML (with markdown around some of it)
    prompt = '<script>window.__ran = "script"</script><p>Which is better?</p>'
    Prompt.objects.filter(campaign=campaign).update(text=prompt, turns=[])
    answers = {
        0: '<div><b>hi</b></div>',
        1: '**Bold** markdown, then <img src=x onerror="window.__ran = \'img\'"> and `<i>code</i>`.',
    }
    for index, text in answers.items():
        Answer.objects.filter(prompt__campaign=campaign, sample_index=index).update(text=text)
    page.goto(rate_url(live_server, campaign))
    wait_for_comparison(page)
    # then: the prompt's HTML is on screen as the text it is, not an empty box
    shown = page.locator("#prompt")
    assert shown.inner_text().strip() == prompt
    assert shown.locator(".raw-html").is_visible()
    assert shown.locator("script, p:not(.raw-html)").count() == 0
    joined = page.inner_text("#answer-a") + "\n" + page.inner_text("#answer-b")
    assert "<div><b>hi</b></div>" in joined
    assert '<img src=x onerror="window.__ran = \'img\'">' in joined
    assert "<i>code</i>" in joined  # a code span as before
    # and markdown still renders around the HTML
    assert page.locator("#answer-a strong, #answer-b strong").all_inner_texts() == ["Bold"]
    # and nothing was injected or executed
    for side in ("#prompt", "#answer-a", "#answer-b"):
        assert page.locator(f"{side} script, {side} img, {side} b, {side} div, {side} i").count() == 0
    assert page.evaluate("window.__ran") is None


def test_the_cut_marker_and_the_done_page_after_a_reload_fit_a_phone(page, live_server, logged_in):
    from playwright.sync_api import expect

    from annotate.models import Rating
    from tests.browser.conftest import wait_until

    campaign, user = logged_in
    # given: every second sample was cut at the token limit
    Answer.objects.filter(prompt__campaign=campaign, sample_index=1).update(metadata={"truncated": True})
    page.set_viewport_size(PHONE)
    page.goto(rate_url(live_server, campaign))
    shown = wait_for_comparison(page)
    # then: the marker is on screen at the end of the cut answer, within the phone's width
    note = page.locator(".truncated-note")
    expect(note).to_have_count(1)
    note.scroll_into_view_if_needed()
    box, answer = note.bounding_box(), note.locator("xpath=..").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert box["y"] + box["height"] <= answer["y"] + answer["height"] + 1
    result = covered_text(page, [".truncated-note"])
    assert result["checked"] >= 1 and result["covered"] == []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "rating-truncated-390.png"))
    # when: the whole round is rated and the page reloaded
    for _ in range(8):
        shown = wait_for_comparison(page, other_than=shown if _ else None)
        page.keyboard.press("4")
        page.keyboard.press("Enter")
    page.wait_for_selector("main[data-state=done]")
    wait_until(page, lambda: Rating.objects.filter(annotator=user).count() == 8, what="eight ratings stored")
    page.reload()
    page.wait_for_selector("main[data-state=done]")
    # then: the counts, and no sideways scrolling
    expect(page.locator("#done-counts")).to_contain_text("You rated 8 comparisons in round 0")
    expect(page.locator("#count-campaign")).to_have_text("8")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=str(SCREENSHOTS / "rating-done-390.png"), full_page=True)
