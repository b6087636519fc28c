"""The annotator's rating page in real Chromium: keyboard-only rating, a
submit through a network failure, reload, skip, the narrow layout and
screenshots (tests/artifacts/screenshots/)."""
import json

from playwright.sync_api import expect

from annotate.models import Lease, Rating
from tests.browser.conftest import PASSWORD, SCREENSHOTS, rate_url, wait_for_comparison, wait_until


def test_annotator_logs_in_and_rates_five_comparisons_with_the_keyboard_alone(page, live_server, rating_campaign):
    campaign, user = rating_campaign
    # given: the login form, filled and sent with keys only
    page.goto(f"{live_server.url}/login/")
    # Chromium applies autofocus on a later rendering update, not at "load":
    # on a busy machine keys typed before it are lost, so wait for the focus
    # (which also checks that the field has autofocus) before typing.
    expect(page.locator("#id_username")).to_be_focused()
    page.keyboard.type(user.username)
    page.keyboard.press("Tab")
    expect(page.locator("#id_password")).to_be_focused()
    page.keyboard.type(PASSWORD)
    expect(page.locator("#id_username")).to_have_value(user.username)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/")
    # when: Tab to the campaign's "Rate" link and follow it
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "Rate":
            break
    else:
        raise AssertionError("no Rate link reachable with Tab on the home page")
    page.keyboard.press("Enter")
    page.wait_for_url(rate_url(live_server, campaign))
    # and rate five comparisons: choice, strength where it applies, Enter
    keys = [("1", "q"), ("2", "e"), ("3", None), ("4", None), ("1", "w")]
    expected, shown = {}, None
    for choice_key, strength_key in keys:
        shown = wait_for_comparison(page, other_than=shown)
        page.keyboard.press(choice_key)
        if strength_key:
            page.keyboard.press(strength_key)
        page.keyboard.press("Enter")
        expected[shown] = (
            {"1": "A", "2": "B", "3": "tie", "4": "both_bad"}[choice_key],
            {"q": 1, "w": 2, "e": 3, None: None}[strength_key],
        )
    wait_for_comparison(page, other_than=shown)
    # then: five ratings, as chosen, with the time the page was visible
    wait_until(page, lambda: Rating.objects.filter(annotator=user).count() == 5, what="five ratings stored")
    ratings = {r.comparison_id: r for r in Rating.objects.filter(annotator=user)}
    assert {pk: (r.choice, r.strength) for pk, r in ratings.items()} == expected
    assert all(r.time_on_task_ms and r.time_on_task_ms > 0 for r in ratings.values())
    # and the page counts them (today and in this campaign)
    # (the two counters are written one after the other: wait for both)
    expect(page.locator("#count-campaign")).to_have_text("5")
    expect(page.locator("#count-today")).to_have_text("5")


def test_a_submit_during_a_network_failure_is_retried_with_the_same_key_and_makes_one_rating(
    page, live_server, logged_in
):
    campaign, user = logged_in
    sent = []

    def flaky_network(route, request):
        sent.append(json.loads(request.post_data))
        if len(sent) == 1:
            route.abort("internetdisconnected")  # never reaches the server
        elif len(sent) == 2:
            try:
                route.fetch()  # reaches the server and is stored, but the answer is lost
            finally:
                route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/api/ratings/", flaky_network)
    page.goto(rate_url(live_server, campaign))
    first = wait_for_comparison(page)
    page.keyboard.press("2")
    page.keyboard.press("w")
    page.keyboard.press("Enter")
    # the next comparison is on screen at once, while the submit waits in the outbox
    wait_for_comparison(page, other_than=first)
    wait_until(page, lambda: len(sent) >= 3, timeout=20, what="two retries")
    page.wait_for_function("localStorage.length === 0 || Object.keys(localStorage).every(k => localStorage[k] === '[]')")
    assert len({body["idempotency_key"] for body in sent}) == 1
    assert Rating.objects.filter(annotator=user).count() == 1
    rating = Rating.objects.get(annotator=user)
    assert (rating.comparison_id, rating.choice, rating.strength) == (first, "B", 2)
    assert str(rating.idempotency_key) == sent[0]["idempotency_key"]


def test_a_reload_shows_the_same_comparison_while_the_lease_holds(page, live_server, logged_in):
    campaign, user = logged_in
    page.goto(rate_url(live_server, campaign))
    first = wait_for_comparison(page)
    # let the prefetch (a second lease) happen before reloading
    wait_until(page, lambda: Lease.objects.filter(annotator=user, status="leased").count() == 2, what="prefetch")
    page.reload()
    assert wait_for_comparison(page) == first
    assert Lease.objects.filter(annotator=user, status="leased").count() == 2  # nothing new leased


def test_skip_with_a_reason_by_keyboard_gives_the_comparison_back(page, live_server, logged_in):
    campaign, user = logged_in
    page.goto(rate_url(live_server, campaign))
    first = wait_for_comparison(page)
    page.keyboard.press("s")
    page.wait_for_selector("#skip-dialog[open]")
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    wait_for_comparison(page, other_than=first)
    skipped = wait_until(
        page, lambda: Lease.objects.filter(annotator=user, comparison_id=first, status="released").first(),
        what="the skip stored",
    )
    assert skipped.skip_reason == "The prompt is unclear or broken"
    assert not Rating.objects.filter(annotator=user).exists()


def test_answers_stack_on_a_narrow_screen_and_screenshots_are_written(page, live_server, logged_in):
    campaign, _ = logged_in
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(rate_url(live_server, campaign))
    wait_for_comparison(page)
    page.keyboard.press("1")
    page.keyboard.press("w")
    # wide: side by side
    a, b = page.locator("#answer-a").bounding_box(), page.locator("#answer-b").bounding_box()
    assert b["x"] >= a["x"] + a["width"] and abs(b["y"] - a["y"]) < 2
    page.screenshot(path=str(SCREENSHOTS / "rating-wide.png"))
    # narrow (a phone): B below A
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_function("document.getElementById('answer-b').getBoundingClientRect().top > "
                           "document.getElementById('answer-a').getBoundingClientRect().bottom")
    a, b = page.locator("#answer-a").bounding_box(), page.locator("#answer-b").bounding_box()
    assert b["y"] >= a["y"] + a["height"]
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    page.screenshot(path=str(SCREENSHOTS / "rating-narrow.png"), full_page=True)
    assert (SCREENSHOTS / "rating-wide.png").stat().st_size > 0
    assert (SCREENSHOTS / "rating-narrow.png").stat().st_size > 0


def test_the_page_renders_markdown_safely_keeps_code_verbatim_and_never_names_a_model(page, live_server, logged_in):
    campaign, _ = logged_in
    page.goto(rate_url(live_server, campaign))
    wait_for_comparison(page)
    page.wait_for_selector(".turn")  # the chat prompt sorts first: its turns with their roles
    roles = page.locator(".turn .role").all_text_contents()
    assert roles == ["system", "user"]
    code = page.locator(".md pre code")
    assert "return a  +  b   # spaces kept" in code.first.text_content()
    assert page.evaluate("getComputedStyle(document.querySelector('.md pre')).fontFamily").lower().count("mono") >= 1
    assert page.locator(".md script").count() == 0
    # the long answer scrolls inside its own panel
    assert page.evaluate("(() => { const el = [...document.querySelectorAll('.answer .scroll')]"
                         ".find(e => e.textContent.includes('Paragraph 39')); "
                         "return el.scrollHeight > el.clientHeight && getComputedStyle(el).overflowY === 'auto'; })()")
    html = page.evaluate("document.querySelector('main').outerHTML").lower()
    for leak in ("candidate", "baseline", "policy", "/nonexistent/store"):
        assert leak not in html
    # instructions one key away, and the key map on ?
    page.keyboard.press("i")
    page.wait_for_selector("#instructions-dialog[open]")
    assert "How to rate" in page.text_content("#instructions")
    page.keyboard.press("Escape")
    page.keyboard.press("?")
    page.wait_for_selector("#keys-dialog[open]")
    page.keyboard.press("Escape")
    # every control has an accessible name
    unnamed = page.evaluate("""[...document.querySelectorAll('button, input:not([type=hidden]), textarea, a, select, [tabindex]')]
        .filter(el => !el.closest('dialog:not([open])'))
        .filter(el => {
          const label = el.labels && el.labels.length ? el.labels[0].textContent : '';
          return !(el.getAttribute('aria-label') || label.trim() || el.textContent.trim() || el.getAttribute('aria-labelledby'));
        }).map(el => el.outerHTML.slice(0, 80))""")
    assert unnamed == []


def rate_all(page, n: int) -> None:
    """Rate `n` comparisons with the keyboard (A slightly better), until the page says it is done."""
    shown = None
    for _ in range(n):
        shown = wait_for_comparison(page, other_than=shown)
        page.keyboard.press("1")
        page.keyboard.press("q")
        page.keyboard.press("Enter")
    page.wait_for_selector("main[data-state=done]")


def past_train_runs(campaign) -> int:
    """Three earlier rounds' train runs, timed stage by stage; the seconds the
    next one should take by their medians (what the page's estimate reads)."""
    from statistics import median

    from annotate.models import TrainingRun
    from annotate.training.stages import STAGES

    stages = STAGES["train"]
    # 47 s, not a round number: the sum must not fall on half a minute, which
    # the page (Math.round) and Python (round half to even) round apart.
    timed = [{name: 47.0 * (i + 1) * (j + 2) for j, name in enumerate(stages)} for i in range(3)]
    for seconds in timed:
        TrainingRun.objects.create(campaign=campaign, kind=TrainingRun.Kind.TRAIN, status=TrainingRun.Status.SUCCEEDED,
                                   stages={n: {"status": "succeeded", "seconds": s} for n, s in seconds.items()})
    return round(sum(median(t[n] for t in timed) for n in stages))


def test_the_done_page_shows_real_counts_after_a_reload_and_opens_the_next_round_without_one(
    page, live_server, logged_in, enqueued
):
    from annotate.models import Answer, PolicyVersion, Round
    from annotate.services.rounds import round_open
    from annotate.training.runs import training_run_start
    from tests.factories import AnswerFactory, PolicyVersionFactory

    campaign, user = logged_in
    page.goto(rate_url(live_server, campaign))
    # given: the whole round rated, and the page reloaded
    rate_all(page, 8)
    wait_until(page, lambda: Rating.objects.filter(annotator=user).count() == 8, what="eight ratings stored")
    page.reload()
    page.wait_for_selector("main[data-state=done]")
    # then: real counts, not dashes, and what happens next
    expect(page.locator("#count-campaign")).to_have_text("8")
    expect(page.locator("#count-today")).to_have_text("8")
    expect(page.locator("#round-text")).to_have_text("8 / 8 ratings (100%)")
    expect(page.locator("#done-counts")).to_have_text(
        "You rated 8 comparisons in round 0 and 8 in this campaign (8 today). Round 0 has 8 of its 8 ratings.")
    # (the test campaign does not train by itself: auto_train off)
    expect(page.locator("#done-next")).to_have_text(
        "Round 0 has all its ratings. The model trains on them once an engineer starts it; then round 1 opens.")
    # and a hidden tab asks nothing (two poll periods go by), a shown one asks at once
    asked = []
    page.on("request", lambda r: asked.append(r.url) if "/progress/" in r.url else None)
    page.evaluate("""() => { Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
                            document.dispatchEvent(new Event('visibilitychange')); }""")
    page.wait_for_timeout(26_000)
    assert asked == []
    with page.expect_request("**/progress/", timeout=5_000):
        page.evaluate("""() => { Object.defineProperty(document, 'visibilityState', {value: 'visible', configurable: true});
                                document.dispatchEvent(new Event('visibilitychange')); }""")
    # when: the round trains, with earlier rounds to time it by
    seconds = past_train_runs(campaign)
    training_run_start(campaign=campaign)
    # then: the page says so within a poll, with the estimate in minutes
    expect(page.locator("#done-next")).to_have_text(
        f"The model is training on your ratings (now: snapshot); round 1 opens in about {round(seconds / 60)} minutes.",
        timeout=30_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "rating-done-1280.png"), full_page=True)
    # when: round 1 opens (as the open stage does: the new policy's answers against the previous one's)
    v0 = PolicyVersion.objects.get(campaign=campaign, version=0)
    v1 = PolicyVersionFactory(campaign=campaign, version=1)
    for answer in Answer.objects.filter(policy_version=v0, sample_index=0):
        AnswerFactory(prompt=answer.prompt, policy_version=v1, sample_index=0, text=f"Round one: {answer.prompt.external_id}")
    round_open(campaign=campaign, index=1, candidate=v1, baseline=v0)
    # then: the page shows a comparison of round 1 without a reload, and counts round 1
    page.wait_for_selector("main[data-state=rating][data-comparison]", timeout=30_000)
    shown = int(page.get_attribute("main", "data-comparison"))
    assert Round.objects.get(comparisons=shown).index == 1
    expect(page.locator("#round-label")).to_have_text("round 1")
    expect(page.locator("#round-text")).to_have_text("0 / 8 ratings (0%)")
    expect(page.locator("#count-campaign")).to_have_text("8")
    assert "Round one:" in page.text_content("#answer-a") + page.text_content("#answer-b")


def test_an_answer_cut_at_the_token_limit_is_marked_at_its_end(page, live_server, logged_in):
    from annotate.models import Answer, Comparison

    campaign, _ = logged_in
    # given: every second sample was cut at the limit, so each comparison has one cut side
    Answer.objects.filter(prompt__campaign=campaign, sample_index=1).update(metadata={"truncated": True})
    page.goto(rate_url(live_server, campaign))
    shown = None
    for _ in range(2):
        shown = wait_for_comparison(page, other_than=shown)
        comparison = Comparison.objects.select_related("response_a", "response_b").get(pk=shown)
        cut = {"a": comparison.response_a.metadata.get("truncated", False),
               "b": comparison.response_b.metadata.get("truncated", False)}
        assert sorted(cut.values()) == [False, True]
        for side, is_cut in cut.items():
            note = page.locator(f"#answer-{side} .truncated-note")
            if is_cut:
                expect(note).to_have_text("… cut at the token limit")
                # the answer's last element, after all its text
                assert page.evaluate(f"document.getElementById('answer-{side}').lastElementChild.className") == "truncated-note"
            else:
                expect(note).to_have_count(0)
        page.keyboard.press("3")
        page.keyboard.press("Enter")
    wait_for_comparison(page, other_than=shown)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator(".truncated-note").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "rating-truncated-1280.png"))
