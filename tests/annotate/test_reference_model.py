"""A loop campaign's reference model: each round's candidate also meets it on
the round's prompts it answered (sides random and recorded, counted in the
round), the leaderboard shows it as a fixed entry with the candidate's win
rate against it per round, and setting it is checked (an external model of
the same campaign, loop campaigns only)."""
import pytest
from django.db.models import Q

from annotate.models import Answer, Campaign, Comparison, PolicyVersion, Prompt, Role
from annotate.selectors.leaderboard import campaign_leaderboard
from annotate.selectors.rounds import round_progress, round_is_complete
from annotate.services.rounds import round_open
from tests.factories import (
    CampaignFactory,
    ExternalModelFactory,
    PolicyVersionFactory,
    evaluation_campaign,
    external_answers,
    ratings_bulk_create,
)

pytestmark = pytest.mark.django_db


def loop_with_reference(*, prompts=20, answered=10, annotators=(), **fields):
    """A loop campaign with v0 and v1 (answers to every prompt, v0 two
    samples) and a reference model that answered the first `answered`
    prompts; rounds are not open yet. (campaign, v0, v1, reference)."""
    fields.setdefault("comparisons_per_round", prompts)
    campaign = CampaignFactory(annotators=list(annotators), **fields)
    v0 = PolicyVersionFactory(campaign=campaign, version=0)
    v1 = PolicyVersionFactory(campaign=campaign, version=1, parent=v0)
    rows = Prompt.objects.bulk_create(
        Prompt(campaign=campaign, external_id=f"p{i}", text=f"Question {i}?") for i in range(prompts)
    )
    Answer.objects.bulk_create(
        Answer(prompt=p, policy_version=v, sample_index=s, text=f"answer {s} of v{v.version} to {p.external_id}")
        for p in rows for v in (v0, v1) for s in ((0, 1) if v.version == 0 else (0,))
    )
    reference = ExternalModelFactory(campaign=campaign, name="frontier")
    external_answers(reference, rows[:answered])
    campaign.reference_model = reference
    campaign.save(update_fields=["reference_model"])
    return campaign, v0, v1, reference


def test_each_round_adds_the_candidate_against_the_reference_on_the_prompts_it_answered():
    # given
    campaign, v0, v1, reference = loop_with_reference(prompts=20, answered=12, gold_frequency=0)
    # when
    round1 = round_open(campaign=campaign, index=1, candidate=v1, baseline=v0)
    # then: 20 candidate-vs-baseline, 12 candidate-vs-reference
    comparisons = list(round1.comparisons.select_related("response_a", "response_b"))
    against = [c for c in comparisons if reference.pk in (c.response_a.external_model_id, c.response_b.external_model_id)]
    assert len(comparisons) == 32 and len(against) == 12
    for c in against:
        mine = c.response_a if c.candidate_is_a else c.response_b
        theirs = c.response_b if c.candidate_is_a else c.response_a
        assert (mine.policy_version_id, mine.sample_index, theirs.external_model_id) == (v1.pk, 0, reference.pk)
        assert mine.prompt_id == theirs.prompt_id == c.prompt_id
    assert {c.candidate_is_a for c in against} == {True, False}  # sides random
    # and they count in the round like the others
    assert round_progress(round_=round1)["comparisons"] == 32
    Comparison.objects.filter(round=round1).exclude(pk__in=[c.pk for c in against]).update(rating_count=2)
    assert not round_is_complete(round_=round1)


def test_reference_pairs_count_towards_the_rounds_gold_share():
    campaign, v0, v1, reference = loop_with_reference(prompts=10, answered=10, gold_frequency=0.5)
    from annotate.services.gold import gold_import

    gold_import(campaign=campaign, data=b"".join(
        f'{{"prompt": "g{i}?", "chosen": "right", "rejected": "wrong"}}\n'.encode() for i in range(20)
    ))
    round0 = round_open(campaign=campaign, index=0, candidate=v0, baseline=v0)
    assert round0.comparisons.filter(gold_choice="").count() == 20
    assert round0.comparisons.exclude(gold_choice="").count() == 10


def test_a_round_opened_without_a_reference_has_none():
    campaign, v0, v1, _ = loop_with_reference()
    Campaign.objects.filter(pk=campaign.pk).update(reference_model=None)
    campaign.refresh_from_db()
    round1 = round_open(campaign=campaign, index=1, candidate=v1, baseline=v0)
    assert round1.comparisons.filter(response_b__external_model__isnull=False).count() == 0
    assert round1.comparisons.filter(response_a__external_model__isnull=False).count() == 0


def test_leaderboard_shows_the_reference_and_each_rounds_win_rate_against_it(make_user):
    # given: v1 wins 3 of the 4 meetings with the reference, and every one against v0
    annotator = make_user(Role.ANNOTATOR)
    campaign, v0, v1, reference = loop_with_reference(prompts=6, answered=4, gold_frequency=0, annotators=[annotator])
    round0 = round_open(campaign=campaign, index=0, candidate=v0, baseline=v0)
    round1 = round_open(campaign=campaign, index=1, candidate=v1, baseline=v0)
    rows = []
    against = list(round1.comparisons.filter(response_a__external_model=reference) |
                   round1.comparisons.filter(response_b__external_model=reference))
    for n, c in enumerate(sorted(against, key=lambda c: c.pk)):
        candidate_wins = n < 3
        rows.append({"comparison": c, "annotator": annotator, "strength": 2,
                     "choice": "A" if candidate_wins == c.candidate_is_a else "B"})
    for c in round1.comparisons.exclude(pk__in=[c.pk for c in against]):
        rows.append({"comparison": c, "annotator": annotator, "strength": 2, "choice": "A" if c.candidate_is_a else "B"})
    ratings_bulk_create(rows)
    # when
    board = campaign_leaderboard(campaign=campaign, resamples=0)
    # then
    assert board["reference_model"] == "frontier"
    entry = next(m for m in board["models"] if m["name"] == "frontier")
    assert (entry["kind"], entry["reference"], entry["n"]) == ("external", True, 4)
    assert [v["name"] for v in board["versions"]] == ["v1", "v0"]
    by_round = {r["round"]: r for r in board["rounds"]}
    row = by_round[1]
    assert (row["wins"], row["losses"], row["n"]) == (6, 0, 6)  # against the baseline, as before
    reference_row = row["against_reference"]
    assert (reference_row["model"], reference_row["wins"], reference_row["ties"], reference_row["losses"]) == (
        "frontier", 3, 0, 1,
    )
    assert reference_row["win_rate"] == 0.75 and reference_row["lower"] < 0.75 < reference_row["upper"]
    # round 0 met the reference too (v0 against it), unrated so far
    assert by_round[0]["against_reference"] is None
    met = Q(response_a__external_model=reference) | Q(response_b__external_model=reference)
    assert round0.comparisons.filter(met).count() == 4


# --- setting it ---------------------------------------------------------------------------


def test_reference_model_is_set_and_cleared_through_the_campaign_api(campaign_admin_client):
    campaign, *_ = loop_with_reference()
    campaign.reference_model = None
    campaign.save(update_fields=["reference_model"])
    model = campaign.external_models.get()
    url = f"/api/campaigns/{campaign.pk}/"
    # when
    answer = campaign_admin_client.patch(url, {"reference_model": model.pk}, format="json")
    # then
    assert answer.status_code == 200, answer.data
    assert (answer.data["reference_model"], answer.data["reference_model_name"]) == (model.pk, "frontier")
    campaign.refresh_from_db()
    assert campaign.reference_model_id == model.pk
    cleared = campaign_admin_client.patch(url, {"reference_model": None}, format="json")
    assert cleared.status_code == 200 and cleared.data["reference_model"] is None
    campaign.refresh_from_db()
    assert campaign.reference_model_id is None


def test_a_reference_model_of_another_campaign_or_for_an_evaluation_campaign_is_refused(campaign_admin_client):
    campaign, *_ = loop_with_reference()
    stranger = ExternalModelFactory(campaign=CampaignFactory(), name="elsewhere")
    # when
    answer = campaign_admin_client.patch(f"/api/campaigns/{campaign.pk}/", {"reference_model": stranger.pk}, format="json")
    # then: a 400 naming the field, and nothing changes
    assert answer.status_code == 400
    assert "reference_model" in answer.data["errors"] and "frontier" in answer.data["errors"]["reference_model"]
    campaign.refresh_from_db()
    assert campaign.reference_model.name == "frontier"
    evaluation, models = evaluation_campaign(models=2, prompts=2)
    refused = campaign_admin_client.patch(f"/api/campaigns/{evaluation.pk}/", {"reference_model": models[0].pk}, format="json")
    assert refused.status_code == 400 and "loop campaigns" in refused.data["errors"]["reference_model"]
    assert campaign_admin_client.patch(
        f"/api/campaigns/{campaign.pk}/", {"reference_model": "frontier"}, format="json"
    ).status_code == 400


def test_console_overview_sets_the_reference_model(client, campaign_admin):
    campaign, *_ = loop_with_reference()
    campaign.reference_model = None
    campaign.save(update_fields=["reference_model"])
    model = campaign.external_models.get()
    client.force_login(campaign_admin)
    page = client.get(f"/console/campaigns/{campaign.pk}/").content.decode()
    assert f'<option value="{model.pk}" >frontier</option>' in page
    form = {
        "name": campaign.name, "instructions": campaign.instructions, "overlap": 2, "comparisons_per_round": 20,
        "lease_ttl_seconds": 600, "gold_frequency": 0.1, "gold_min_accuracy": 0.6, "gold_min_count": 5,
        "base_model": campaign.base_model, "method": "rloo", "kl_budget": "", "training_config": "{}",
        "reference_model": str(model.pk),
    }
    saved = client.post(f"/console/campaigns/{campaign.pk}/", form)
    assert saved.status_code == 302, saved.content.decode()[:3000]
    campaign.refresh_from_db()
    assert campaign.reference_model_id == model.pk
    page = client.get(f"/console/campaigns/{campaign.pk}/").content.decode()
    assert f'<option value="{model.pk}" selected>frontier</option>' in page
    assert PolicyVersion.objects.filter(campaign=campaign).count() == 2
