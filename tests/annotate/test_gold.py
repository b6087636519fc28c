"""Gold pairs: the preference import into the gold pool, gold comparisons
mixed into each round (indistinguishable, leasable, never holding the round
up), automatic pausing of a careless annotator, nothing crashing on answers
with no policy version, and the console data pages' query counts."""
import json
import uuid
from pathlib import Path

import pytest

from annotate.errors import ServiceError, ValidationFailed
from annotate.models import Comparison, Export, GoldPair, Membership, Prompt, Rating, Answer, Role
from annotate.selectors.leaderboard import campaign_leaderboard
from annotate.selectors.quality import campaign_quality
from annotate.selectors.rounds import round_is_complete, round_progress
from annotate.selectors.training import preference_rows
from annotate.services.leases import comparison_lease_next
from annotate.services.exports import export_create
from annotate.services.gold import gold_import, gold_window
from annotate.services.ratings import rating_create
from annotate.services.rounds import round_open
from tests.factories import (
    CampaignFactory,
    PolicyVersionFactory,
    PromptFactory,
    AnswerFactory,
    ratings_bulk_create,
    version_chain_rounds,
)

pytestmark = pytest.mark.django_db

DATA = Path(__file__).resolve().parents[2] / "data" / "finegrainedrlhf_qa_feedback_dev.jsonl"


def gold_lines(n: int, start: int = 0) -> bytes:
    return b"".join(
        json.dumps({"external_id": f"g{i}", "prompt": f"Gold question {i}?", "chosen": f"right {i}", "rejected": f"wrong {i}"}).encode() + b"\n"
        for i in range(start, start + n)
    )


def campaign_with_gold(*, prompts: int, gold: int, annotators=(), **fields):
    """A campaign with `prompts` answered prompts (v0, two samples) and a gold
    pool of `gold` pairs, before round 0 is opened."""
    campaign = CampaignFactory(comparisons_per_round=prompts, annotators=list(annotators), **fields)
    v0 = PolicyVersionFactory(campaign=campaign, version=0)
    for prompt in PromptFactory.create_batch(prompts, campaign=campaign):
        AnswerFactory(prompt=prompt, policy_version=v0, sample_index=0)
        AnswerFactory(prompt=prompt, policy_version=v0, sample_index=1)
    if gold:
        gold_import(campaign=campaign, data=gold_lines(gold))
    return campaign, v0


# --- import -----------------------------------------------------------------------


def test_shipped_preference_data_imports_into_the_gold_pool_once(campaign_admin_client):
    campaign = CampaignFactory()
    body = b"".join(DATA.read_bytes().splitlines(keepends=True)[:200])
    url = f"/api/campaigns/{campaign.pk}/gold/import/"
    dry = campaign_admin_client.post(url + "?dry_run=1", body, content_type="application/x-ndjson")
    assert dry.status_code == 200 and dry.data["created"] == 200 and GoldPair.objects.count() == 0
    first = campaign_admin_client.post(url, body, content_type="application/x-ndjson")
    assert first.data == {"created": 200, "existing": 0, "lines": 200}
    again = campaign_admin_client.post(url, body, content_type="application/x-ndjson")
    assert again.data == {"created": 0, "existing": 200, "lines": 200}
    pair = GoldPair.objects.select_related("prompt", "chosen", "rejected").first()
    line = json.loads(body.splitlines()[0])
    assert (pair.prompt.text, pair.chosen.text, pair.rejected.text) == (line["prompt"], line["chosen"], line["rejected"])
    assert pair.chosen.policy_version_id is None and pair.prompt.external_id.startswith("gold:")
    assert pair.prompt.metadata == {"source": line["source"]}
    assert Answer.objects.filter(policy_version__isnull=True).count() == 400
    pool = campaign_admin_client.get(f"/api/campaigns/{campaign.pk}/gold/?limit=5")
    assert pool.status_code == 200 and pool.data["count"] == 200 and len(pool.data["pairs"]) == 5
    assert pool.data["pairs"][0]["answers"] == 0 and pool.data["pairs"][0]["accuracy"] is None


def test_gold_import_names_every_bad_line_and_writes_nothing(campaign_admin_client):
    campaign = CampaignFactory()
    body = gold_lines(2) + b'{"prompt": "q", "chosen": "same", "rejected": "same"}\n{"prompt": "q", "chosen": "x"}\n'
    answer = campaign_admin_client.post(
        f"/api/campaigns/{campaign.pk}/gold/import/", body, content_type="application/x-ndjson"
    )
    assert answer.status_code == 400
    errors = {e["line"]: e["error"] for e in answer.data["errors"]}
    assert sorted(errors) == [3, 4] and "same text" in errors[3] and "'rejected'" in errors[4]
    assert (GoldPair.objects.count(), Prompt.objects.count(), Answer.objects.count()) == (0, 0, 0)


def test_gold_import_reads_csv():
    campaign = CampaignFactory()
    body = b'external_id,prompt,chosen,rejected\nc1,Q?,good,bad\nc2,,good,bad\n'
    with pytest.raises(ValidationFailed) as caught:
        gold_import(campaign=campaign, data=body, format="csv")
    assert [e["line"] for e in caught.value.details] == [3]
    result = gold_import(campaign=campaign, data=body.replace(b"c2,,", b"c2,Q2,"), format="csv")
    assert result.created == 2


def test_gold_prompts_are_not_asked_as_regular_prompts():
    campaign, v0 = campaign_with_gold(prompts=4, gold=3)
    round_ = round_open(campaign=campaign, index=0, candidate=v0, baseline=v0)
    regular = round_.comparisons.filter(gold_choice="")
    assert regular.count() == 4
    assert not regular.filter(prompt__external_id__startswith="gold:").exists()


# --- mixing into rounds -------------------------------------------------------------------


def test_round_open_mixes_gold_pairs_at_the_campaign_frequency():
    campaign, v0 = campaign_with_gold(prompts=80, gold=20, gold_frequency=0.25)
    round_ = round_open(campaign=campaign, index=0, candidate=v0, baseline=v0)
    gold = list(round_.comparisons.exclude(gold_choice="").select_related("response_a", "response_b"))
    assert len(gold) == 20  # round(0.25 * 80)
    pairs = {p.prompt_id: p for p in GoldPair.objects.all()}
    for c in gold:
        pair = pairs[c.prompt_id]
        chosen_side = "A" if c.response_a_id == pair.chosen_id else "B"
        assert c.gold_choice == chosen_side and not c.candidate_is_a
        assert {c.response_a_id, c.response_b_id} == {pair.chosen_id, pair.rejected_id}
    # Sides randomised: all twenty on one side has odds of 1 in 524,288 (the
    # seed depends on the campaign's id, which differs from run to run).
    assert {c.gold_choice for c in gold} == {"A", "B"}
    # Not all at the end of the round: leases go out in pk order.
    order = list(round_.comparisons.order_by("pk").values_list("gold_choice", flat=True))
    positions = [i for i, choice in enumerate(order) if choice]
    assert positions != list(range(len(order) - len(gold), len(order)))


def test_later_rounds_prefer_gold_pairs_not_used_before():
    rounds = version_chain_rounds(versions=1, prompts=10)
    campaign = rounds[0].campaign
    gold_import(campaign=campaign, data=gold_lines(4))
    v0 = campaign.policy_versions.get()
    first = round_open(campaign=campaign, index=1, candidate=v0, baseline=v0)
    second = round_open(campaign=campaign, index=2, candidate=v0, baseline=v0)
    used_first = set(first.comparisons.exclude(gold_choice="").values_list("prompt_id", flat=True))
    used_second = set(second.comparisons.exclude(gold_choice="").values_list("prompt_id", flat=True))
    assert len(used_first) == len(used_second) == 1 and used_first != used_second


def test_gold_comparisons_look_like_any_other_and_are_leased(annotator, annotator_client):
    campaign, v0 = campaign_with_gold(prompts=4, gold=4, gold_frequency=0.5, annotators=[annotator], overlap=1)
    round_ = round_open(campaign=campaign, index=0, candidate=v0, baseline=v0)
    seen = {}
    for _ in range(6):
        answer = annotator_client.post(f"/api/campaigns/{campaign.pk}/next/", {}, format="json")
        if answer.status_code == 204:
            break
        seen[answer.data["comparison"]] = answer.data
        rated = annotator_client.post(
            "/api/ratings/",
            {"comparison": answer.data["comparison"], "choice": "tie", "idempotency_key": str(uuid.uuid4())},
            format="json",
        )
        assert rated.status_code in (200, 201), rated.content
    gold_ids = set(round_.comparisons.exclude(gold_choice="").values_list("pk", flat=True))
    assert len(gold_ids) == 2 and gold_ids <= set(seen)
    shapes = {tuple(sorted(data)) for data in seen.values()}
    assert len(shapes) == 1  # the same keys for gold and regular comparisons
    assert not any("gold" in json.dumps(data) for data in seen.values())


def test_round_completion_and_progress_ignore_gold_comparisons():
    campaign, v0 = campaign_with_gold(prompts=4, gold=2, gold_frequency=0.5, overlap=1)
    round_ = round_open(campaign=campaign, index=0, candidate=v0, baseline=v0)
    Comparison.objects.filter(round=round_, gold_choice="").update(rating_count=1)
    assert round_is_complete(round_=round_)
    progress = round_progress(round_=round_)
    assert (progress["comparisons"], progress["target_ratings"], progress["fraction"]) == (4, 4, 1.0)


# --- automatic pause -------------------------------------------------------------------


def rate_everything(annotator, campaign, *, right_on_gold) -> list[str]:
    """Lease and rate until there is no more work (or the annotator is
    paused); gold answers right if right_on_gold(n) for the n-th gold answer."""
    outcomes, n_gold = [], 0
    for _ in range(200):
        try:
            assignment = comparison_lease_next(annotator=annotator, campaign=campaign)
        except ServiceError as exc:
            outcomes.append(f"stopped: {exc.message}")
            break
        if assignment is None:
            break
        comparison = assignment.comparison
        if comparison.gold_choice:
            wrong = "B" if comparison.gold_choice == "A" else "A"
            choice = comparison.gold_choice if right_on_gold(n_gold) else wrong
            n_gold += 1
        else:
            choice = "A"
        rating_create(
            annotator=annotator, comparison_id=comparison.pk, choice=choice, strength=2, idempotency_key=uuid.uuid4()
        )
        outcomes.append(choice)
    return outcomes


def test_careless_annotator_is_paused_by_gold_answers_and_careful_one_is_not(make_user):
    careful = make_user(Role.ANNOTATOR, username="careful")
    careless = make_user(Role.ANNOTATOR, username="careless")
    campaign, v0 = campaign_with_gold(
        prompts=20, gold=10, gold_frequency=0.5, annotators=[careful, careless], overlap=2,
        gold_min_count=5, gold_min_accuracy=0.6,
    )
    round_open(campaign=campaign, index=0, candidate=v0, baseline=v0)
    rate_everything(careful, campaign, right_on_gold=lambda n: n != 3)  # 9 of 10 right
    outcomes = rate_everything(careless, campaign, right_on_gold=lambda n: n == 0)  # 1 of 5 right
    member = Membership.objects.get(campaign=campaign, annotator=careless)
    assert member.status == Membership.Status.PAUSED and member.paused_automatically
    assert member.paused_reason == "Gold accuracy 1/5 (20%) is below this campaign's 60%."
    assert outcomes[-1].startswith("stopped")  # no more work once paused
    assert Rating.objects.filter(annotator=careless).exclude(comparison__gold_choice="").count() == 5
    assert Membership.objects.get(campaign=campaign, annotator=careful).status == Membership.Status.ACTIVE
    # and the quality page's numbers agree
    table = {row["username"]: row for row in campaign_quality(campaign=campaign)["annotators"]}
    assert table["careless"]["gold_accuracy"] == pytest.approx(0.2) and table["careful"]["gold_accuracy"] == 0.9


def test_gold_window_starts_afresh_after_a_pause():
    wrong5 = [("A", "B")] * 5
    assert gold_window(choices=wrong5, min_count=5, min_accuracy=0.6) == (0, 5, True)
    # reinstated, then one more wrong answer: a window of 1, not a new pause
    assert gold_window(choices=wrong5 + [("A", "B")], min_count=5, min_accuracy=0.6) == (0, 1, False)
    assert gold_window(choices=[("A", "A")] * 4 + [("A", "B")] * 2, min_count=5, min_accuracy=0.6) == (4, 6, False)
    # 2 of the first 5 right: a pause at the 5th answer; the 6th starts anew
    assert gold_window(choices=[("A", "A")] * 2 + [("A", "B")] * 4, min_count=5, min_accuracy=0.6) == (0, 1, False)


# --- answers with no policy version ------------------------------------------------------------


def test_nothing_crashes_on_gold_ratings_with_policy_less_answers(make_user, settings, tmp_path):
    settings.EXPORT_DIR = str(tmp_path)
    annotators = [make_user(Role.ANNOTATOR, username=f"a{i}") for i in range(3)]
    rounds = version_chain_rounds(versions=2, prompts=6, annotators=annotators, overlap=3)
    campaign = rounds[0].campaign
    gold_import(campaign=campaign, data=gold_lines(4))
    v0, v1 = campaign.policy_versions.get(version=0), campaign.policy_versions.get(version=1)
    round_ = round_open(campaign=campaign, index=2, candidate=v1, baseline=v0)
    assert round_.comparisons.exclude(gold_choice="").exists()
    rows = [
        {"comparison": c, "annotator": a, "choice": "A" if n % 2 else "B", "strength": 1}
        for r in (rounds[1], round_)
        for n, c in enumerate(r.comparisons.all())
        for a in annotators
    ]
    ratings_bulk_create(rows)
    board = campaign_leaderboard(campaign=campaign, resamples=20)
    gold_ratings = Rating.objects.exclude(comparison__gold_choice="").count()
    assert gold_ratings > 0
    assert board["n_ratings"] == Rating.objects.filter(comparison__gold_choice="").count()
    assert sum(r["n"] for r in board["rounds"]) == board["n_ratings"]
    assert campaign_quality(campaign=campaign)["n_ratings"] == len(rows)
    prefs = preference_rows(campaign=campaign)
    assert len(prefs) == len(rows)  # gold ratings are human preferences too
    assert export_create(campaign=campaign, kind=Export.Kind.RATINGS, format="csv").rows == len(rows)
    assert export_create(campaign=campaign, kind=Export.Kind.PREFERENCES, format="jsonl").rows == len(rows)


# --- console pages: query counts with many rows ----------------------------------------------


@pytest.fixture
def busy_campaign(make_user, settings, tmp_path):
    settings.EXPORT_DIR = str(tmp_path)
    annotators = [make_user(Role.ANNOTATOR, username=f"rater{i}") for i in range(8)]
    rounds = version_chain_rounds(versions=3, prompts=40, annotators=annotators, overlap=8)
    campaign = rounds[0].campaign
    gold_import(campaign=campaign, data=gold_lines(120))
    ratings_bulk_create(
        {"comparison": c, "annotator": a, "choice": "AB"[(c.pk + a.pk) % 2], "strength": 1 + (c.pk % 3)}
        for r in rounds
        for c in r.comparisons.all()
        for a in annotators
    )
    Comparison.objects.filter(pk__in=[c.pk for c in rounds[1].comparisons.all()[:10]]).update(gold_choice="A")
    for _ in range(30):
        export_create(campaign=campaign, kind=Export.Kind.RATINGS, format="jsonl", round_=rounds[0])
    return campaign


@pytest.mark.parametrize(
    # models/: the leaderboard reads the external models too, and the SFT models their own table
    # (one query each, whatever their number)
    "page, most", [("gold/", 10), ("quality/", 10), ("quality/?round=1", 12), ("models/", 12), ("exports/", 10)]
)
def test_console_data_page_query_counts_are_pinned(
    busy_campaign, client, campaign_admin, django_assert_max_num_queries, page, most
):
    client.force_login(campaign_admin)
    with django_assert_max_num_queries(most):
        answer = client.get(f"/console/campaigns/{busy_campaign.pk}/{page}")
    assert answer.status_code == 200, answer.content[:500]


def test_models_page_draws_one_mark_per_scored_version(busy_campaign, client, ml_engineer):
    client.force_login(ml_engineer)
    answer = client.get(f"/console/campaigns/{busy_campaign.pk}/models/")
    scored = [v for v in campaign_leaderboard(campaign=busy_campaign, resamples=10)["versions"] if v["score"] is not None]
    assert answer.content.count(b'<circle class="mark"') == len(scored) == 3


def test_models_page_shows_the_latest_rows_of_its_growing_tables_and_all_on_request(
    busy_campaign, client, ml_engineer, monkeypatch
):
    from frontend.console import data

    from annotate.models import PolicyVersion

    monkeypatch.setattr(data, "TABLE_ROWS", 2)
    versions = list(PolicyVersion.objects.filter(campaign=busy_campaign).order_by("version").values_list("version", flat=True))
    assert len(versions) > 2
    client.force_login(ml_engineer)
    short = client.get(f"/console/campaigns/{busy_campaign.pk}/models/").content.decode()
    table = short.split('id="policy-versions"')[1].split("</table>")[0]
    assert table.count("<tr data-version") == 2  # the latest two
    assert f'data-version="{versions[-1]}"' in table and f'data-version="{versions[0]}"' not in table
    assert f"The latest 2 of {len(versions)}. <a href=\"?all=1\">Show all</a>" in short
    every = client.get(f"/console/campaigns/{busy_campaign.pk}/models/?all=1").content.decode()
    assert every.split('id="policy-versions"')[1].split("</table>")[0].count("<tr data-version") == len(versions)
    assert "Show all" not in every


def test_export_list_api_and_console_export(busy_campaign, campaign_admin_client, client, campaign_admin):
    listed = campaign_admin_client.get(f"/api/campaigns/{busy_campaign.pk}/exports/")
    assert listed.status_code == 200 and len(listed.data) == 30 and listed.data[0]["round"] == 0
    client.force_login(campaign_admin)
    made = client.post(f"/console/campaigns/{busy_campaign.pk}/exports/", {"kind": "preferences", "format": "jsonl", "round": "1"})
    assert made.status_code == 302
    newest = Export.objects.order_by("-pk").first()
    assert newest.round.index == 1 and newest.kind == "preferences"
    bad = client.post(f"/console/campaigns/{busy_campaign.pk}/exports/", {"kind": "preferences", "format": "csv", "round": ""})
    assert bad.status_code == 400 and b"JSONL only" in bad.content
