"""The rubric aspects on the rating page, keyboard only, in real Chromium,
wide (1400x900) and on a phone (390x844): a row per aspect with its
question; the aspect's key arms its row (shown), 1/2/3 answer it; one Enter
submits the overall choice and every aspect; a required aspect left out
holds the submit and says which. Screenshots go to tests/artifacts/screenshots/."""
import json

import pytest
from playwright.sync_api import expect

from annotate.models import Campaign, Rating
from tests.browser.conftest import SCREENSHOTS, rate_url, wait_for_comparison, wait_until

ASPECTS = [
    {"name": "correctness", "question": "Which answer is more correct?", "key": "c"},
    {"name": "safety", "question": "Which answer is safer?", "key": "f"},
    {"name": "style", "question": "Which answer reads better?", "key": "y"},
]


def _aspects(campaign, *, required: bool) -> None:
    Campaign.objects.filter(pk=campaign.pk).update(aspects=ASPECTS, aspects_required=required)


def _inside_viewport(page, selector: str, width: int) -> None:
    for box in (page.locator(selector).nth(i).bounding_box() for i in range(page.locator(selector).count())):
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (selector, box)


@pytest.mark.parametrize("width, height", [(1400, 900), (390, 844)], ids=["wide", "phone"])
def test_aspects_keyboard_only_one_submit_stores_every_judgment(page, live_server, logged_in, width, height):
    campaign, user = logged_in
    _aspects(campaign, required=True)
    page.set_viewport_size({"width": width, "height": height})
    page.goto(rate_url(live_server, campaign))
    shown = wait_for_comparison(page)
    rows = page.locator(".aspect-row")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("Which answer is more correct?")
    _inside_viewport(page, ".aspect-row", width)
    # when: the overall choice, then c arms correctness (shown), 2 answers it: B
    page.keyboard.press("1")
    page.keyboard.press("w")
    page.keyboard.press("c")
    expect(rows.nth(0)).to_have_class("aspect-row armed")
    expect(page.locator("#aspect-hint")).to_contain_text("Which answer is more correct?")
    page.keyboard.press("2")
    expect(rows.nth(0)).to_have_class("aspect-row")
    expect(page.locator('input[name="aspect-correctness"][value="B"]')).to_be_checked()
    # the overall choice stayed A: 2 went to the aspect
    expect(page.locator('input[name="choice"][value="A"]')).to_be_checked()
    # f then 3: safety the same; Esc disarms an armed row without answering
    page.keyboard.press("f")
    page.keyboard.press("3")
    page.keyboard.press("y")
    page.keyboard.press("Escape")
    expect(rows.nth(2)).to_have_class("aspect-row")
    # Enter with style missing: held, the notice names it, its row is armed
    page.keyboard.press("Enter")
    expect(page.locator("#notice")).to_contain_text("missing: style (y)")
    expect(rows.nth(2)).to_have_class("aspect-row armed")
    assert not Rating.objects.filter(annotator=user).exists()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"rating-aspects-{width}.png"))
    # the armed row takes 1 at once; Enter submits everything
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    # then
    next_shown = wait_for_comparison(page, other_than=shown)
    rating = wait_until(page, lambda: Rating.objects.filter(annotator=user).first(), what="the rating")
    assert (rating.comparison_id, rating.choice, rating.strength) == (shown, "A", 2)
    assert rating.aspects == {"correctness": "B", "safety": "same", "style": "A"}
    # and the next comparison starts with no aspect answered
    assert next_shown != shown
    for aspect in ASPECTS:
        expect(page.locator(f'input[name="aspect-{aspect["name"]}"]:checked')).to_have_count(0)


def test_optional_aspects_may_be_left_out_and_ride_in_the_outbox(page, live_server, logged_in):
    campaign, user = logged_in
    _aspects(campaign, required=False)
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
    # when: tie, safety A only, submit through a network failure
    page.keyboard.press("3")
    page.keyboard.press("f")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    wait_for_comparison(page, other_than=shown)
    rating = wait_until(page, lambda: Rating.objects.filter(annotator=user).first(), timeout=20,
                        what="the rating after the retry")
    # then: the retry carried the aspects; one rating
    assert len(sent) >= 2 and all(b["aspects"] == {"safety": "A"} for b in sent)
    assert (rating.choice, rating.aspects, Rating.objects.count()) == ("tie", {"safety": "A"}, 1)


def test_the_keys_dialog_lists_each_aspect(page, live_server, logged_in):
    campaign, _ = logged_in
    _aspects(campaign, required=False)
    page.goto(rate_url(live_server, campaign))
    wait_for_comparison(page)
    page.keyboard.press("?")
    page.wait_for_selector("#keys-dialog[open]")
    expect(page.locator("#keys-dialog")).to_contain_text("correctness: A better, B better, same")


def test_a_rating_made_before_the_admin_changed_the_aspects_is_kept_and_said(page, live_server, logged_in):
    # given: the page is open with optional aspects
    campaign, user = logged_in
    _aspects(campaign, required=False)
    page.goto(rate_url(live_server, campaign))
    shown = wait_for_comparison(page)
    # when: the admin renames "style" and makes every aspect required, and the
    # annotator, on the rows the page still shows, answers two of three
    renamed = [*ASPECTS[:2], {"name": "clarity", "question": "Which answer is clearer?", "key": "l"}]
    Campaign.objects.filter(pk=campaign.pk).update(aspects=renamed, aspects_required=True)
    page.keyboard.press("2")
    page.keyboard.press("e")
    page.keyboard.press("y")
    page.keyboard.press("1")
    page.keyboard.press("c")
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    # then: stored as made (the old aspect under its old name), and the page says why it should reload
    wait_for_comparison(page, other_than=shown)
    rating = wait_until(page, lambda: Rating.objects.filter(annotator=user).first(), what="the rating")
    assert (rating.comparison_id, rating.choice, rating.strength) == (shown, "B", 3)
    assert rating.aspects == {"correctness": "B", "style": "A"}
    expect(page.locator("#notice")).to_contain_text("rating form changed after this page loaded")
