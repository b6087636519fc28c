"""Ranking a k-set on the rating page, keyboard only, in real Chromium, on a
wide screen (1400x900: the answers side by side) and a phone (390x844:
stacked, nothing wider than the screen): numbers best first, = ties,
Backspace takes back, Enter submits; the ranking stored is the one built."""
import pytest

from annotate.models import Comparison, Rating
from tests.browser.conftest import PASSWORD, SCREENSHOTS, rate_url, wait_for_comparison, wait_until
from tests.browser.overlap import covered_text

WIDE = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def ranking_campaign(transactional_db, page, live_server):
    """A campaign ranking 4 answers (round 0: 3 k-sets of v0's samples, k=1)
    and an annotator in its pool, logged in in the browser."""
    from django.test import Client

    from annotate.services.rounds import round_open
    from tests.factories import AnswerFactory, CampaignFactory, PolicyVersionFactory, PromptFactory, UserFactory

    user = UserFactory(username="ranker", roles=["annotator"])
    user.set_password(PASSWORD)
    user.save()
    campaign = CampaignFactory(name="Ranking campaign", overlap=1, rank_k=4, comparisons_per_round=3,
                               annotators=[user])
    v0 = PolicyVersionFactory(campaign=campaign, version=0)
    for i in range(3):
        prompt = PromptFactory(campaign=campaign, external_id=f"q{i}", text=f"Question {i}: why is the sky blue?")
        for s in range(4):
            text = f"Answer sample {s} to question {i}: " + "Rayleigh scattering explains it. " * (3 + 4 * s)
            AnswerFactory(prompt=prompt, policy_version=v0, sample_index=s, text=text)
    round_open(campaign=campaign, index=0, candidate=v0, baseline=v0)
    client = Client()
    client.force_login(user)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                               "url": live_server.url}])
    return campaign, user


def order(page) -> str:
    return page.inner_text("#rank-order").strip()


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["wide", "phone"])
def test_a_k_set_is_ranked_from_the_keyboard_with_a_tie_and_an_undo(page, live_server, ranking_campaign, viewport):
    campaign, user = ranking_campaign
    page.set_viewport_size(viewport)
    page.goto(rate_url(live_server, campaign))
    first = wait_for_comparison(page)
    # the four answers are on screen, the pair's controls are not
    assert page.locator("#k-answers .answer").count() == 4
    assert page.locator("#answer-a").is_hidden() and page.locator("fieldset.choice").is_hidden()
    boxes = [page.locator(f"#k-answer-{p}-heading").bounding_box() for p in range(1, 5)]
    if viewport is WIDE:
        assert len({round(b["y"]) for b in boxes}) == 1, boxes  # side by side, one row
        assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"] < boxes[3]["x"]
    else:
        assert boxes[0]["y"] < boxes[1]["y"] < boxes[2]["y"] < boxes[3]["y"], boxes  # stacked
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert covered_text(page, ["#prompt", "#k-answers"])["covered"] == []
    # when: 3, then 1, a mistake (2) taken back, = 4 (tied with 1), then 2
    page.keyboard.press("3")
    page.keyboard.press("1")
    page.keyboard.press("2")
    assert order(page) == "3 > 1 > 2"
    page.keyboard.press("Backspace")
    assert order(page) == "3 > 1"
    page.keyboard.press("=")
    page.keyboard.press("4")
    assert order(page) == "3 > 1 = 4"
    assert "Still to place: 2" in page.inner_text("#rank-left")
    # Enter with one left places it last and submits
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"rating-ranking-{'wide' if viewport is WIDE else 'phone'}.png"))
    page.keyboard.press("Enter")
    second = wait_for_comparison(page, other_than=first)
    # then: the ranking stored is the one built, and the next set starts empty
    rating = wait_until(page, lambda: Rating.objects.filter(comparison_id=first).first(), what="the ranking")
    assert (rating.choice, rating.ranking, rating.annotator_id) == ("ranking", [[3], [1, 4], [2]], user.pk)
    assert order(page) == "nothing yet"
    # an incomplete ranking is not sent: it says what is missing
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    assert "Still to place: 1, 3, 4" in page.inner_text("#notice")
    assert not Rating.objects.filter(comparison_id=second).exists()
    assert Comparison.objects.get(pk=first).rating_count == 1


def test_a_pair_shows_no_ranking_controls_and_its_keys_still_choose(page, live_server, logged_in):
    campaign, _ = logged_in
    page.set_viewport_size(WIDE)
    page.goto(rate_url(live_server, campaign))
    wait_for_comparison(page)
    assert page.locator("#rank-controls").is_hidden() and page.locator("#k-answers").is_hidden()
    assert page.locator("#answer-a").is_visible() and page.locator("fieldset.choice").is_visible()
    page.keyboard.press("2")
    assert page.locator("input[name=choice][value=B]").is_checked()


def test_a_k_set_in_a_campaign_with_required_aspects_hides_them_and_ranks_without(page, live_server,
                                                                                   ranking_campaign):
    """Rankings have no aspects: on a k-set the aspect rows are hidden, the
    aspect's key arms nothing (the numbers after it still rank), and the
    ranking is sent without aspects even though they are required."""
    campaign, user = ranking_campaign
    campaign.aspects = [{"name": "correctness", "question": "Which is correct?", "key": "c"}]
    campaign.aspects_required = True
    campaign.save(update_fields=["aspects", "aspects_required"])
    page.set_viewport_size(WIDE)
    page.goto(rate_url(live_server, campaign))
    first = wait_for_comparison(page)
    assert page.locator(".aspect-row[data-aspect=correctness]").count() == 1
    assert page.locator(".aspects").is_hidden()
    page.keyboard.press("c")
    assert page.locator(".aspect-row.armed").count() == 0
    for key in "2143":
        page.keyboard.press(key)
    assert order(page) == "2 > 1 > 4 > 3"
    page.keyboard.press("Enter")
    wait_for_comparison(page, other_than=first)
    rating = wait_until(page, lambda: Rating.objects.filter(comparison_id=first).first(), what="the ranking")
    assert (rating.ranking, rating.aspects) == ([[2], [1], [4], [3]], {})
