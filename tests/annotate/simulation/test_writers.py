"""Simulated raters who write (annotate/simulation/raters.py, "Raters who
write"): on both bad they send the question's reference answer with the
rating, in its body as the rating page does, and simulated reviewers accept
it through the review service, so that it trains."""
import json
import math
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.authtoken.models import Token

from annotate.errors import ValidationFailed
from annotate.models import Campaign, Demonstration, DemonstrationReview, Prompt, Rating
from annotate.services.simulation import simulation_config_build
from annotate.simulation.preference import Judge, preference_parse, reference_f1, references_load
from annotate.simulation.raters import SimulationConfig, simulation_config_errors
from bench.data import DATA
from tests.annotate.simulation.campaigns import campaign_with_round, run


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_references_read_the_first_preferred_answer_of_each_question(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "Q1?", "chosen": "First answer.", "rejected": "x"},
        {"prompt": "Q1?", "chosen": "Second answer.", "rejected": "y"},
        {"prompt": "Q2?", "reference": "Its own reference."},
    ])
    assert references_load(path) == {"Q1?": "First answer.", "Q2?": "Its own reference."}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Q?"}\n')
    with pytest.raises(ValueError, match="line 1: needs \"prompt\" and \"reference\""):
        references_load(bad)


def test_the_reference_preference_prefers_the_answer_closer_to_the_reference():
    references = {"Where is Paris?": "Paris is in France, on the Seine."}
    judge = Judge(preference_parse("reference"), references=references)
    assert reference_f1("Paris is in France, on the Seine.", references["Where is Paris?"]) == 1.0
    assert judge.margin("Where is Paris?", "Paris is in France.", "It is a city.") > 0.5
    reference, margin = judge.reference_margin("Where is Paris?", "No idea.", "Bananas grow.")
    assert reference == references["Where is Paris?"] and margin == pytest.approx(math.log(1.01 / 0.01))
    assert judge.reference_margin("Unknown?", "a", "b") is None
    with pytest.raises(KeyError, match="no reference answer"):
        judge.margin("Unknown?", "a", "b")


def test_writing_settings_are_checked_and_name_the_field(tmp_path):
    assert "references" in simulation_config_errors({"references": str(tmp_path / "missing.jsonl")})
    assert simulation_config_errors({"review": True}) == {
        "review": "the raters write nothing to review: give them references, with write on"}
    assert "review" in simulation_config_errors({"review": True, "write": False, "references": str(DATA)})
    assert "references" in simulation_config_errors({"preference": "reference"})
    assert "both_bad_margin" in simulation_config_errors({"both_bad_margin": -1.0})


@pytest.mark.django_db
def test_raters_cannot_write_on_a_campaign_that_takes_no_demonstrations(tmp_path):
    campaign = campaign_with_round(prompts=2, demonstrations=Campaign.Demonstrations.OFF)
    path = write_jsonl(tmp_path / "refs.jsonl", [{"prompt": "Q?", "reference": "A."}])
    with pytest.raises(ValidationFailed, match="takes no demonstrations"):
        simulation_config_build(campaign=campaign, values={"references": path})


@pytest.mark.django_db
def test_raters_write_the_reference_on_both_bad_and_the_simulated_reviewer_accepts_it(tmp_path):
    # given: 6 questions; for the first 3 the reference repeats the short
    # answer's words (one answer is good), for the others it shares no word
    # with either answer (both bad)
    campaign = campaign_with_round(prompts=6, overlap=2, demonstrations=Campaign.Demonstrations.BOTH_BAD,
                                   demonstration_reviews=2)
    prompts = list(Prompt.objects.filter(campaign=campaign).order_by("pk"))
    references = {}
    for i, prompt in enumerate(prompts):
        short = prompt.answers.get(text=f"Answer {i}.")
        references[prompt.text] = short.text if i < 3 else f"Reference {i}: blue, by Rayleigh scattering."
    path = write_jsonl(tmp_path / "refs.jsonl", [{"prompt": q, "reference": r} for q, r in references.items()])
    # when
    result = run(campaign, raters=2, preference="reference", references=path, review=True, noise=0.0)
    # then: 12 ratings, the 6 on the bad questions both bad with the reference written
    assert (result.ratings, result.demonstrations, result.reviewed) == (12, 6, 6)
    bad = {p.text for p in prompts[3:]}
    for rating in Rating.objects.select_related("comparison__prompt"):
        assert (rating.choice == "both_bad") == (rating.comparison.prompt.text in bad)
    demos = Demonstration.objects.select_related("comparison__prompt", "annotator")
    assert sorted((d.comparison.prompt.text, d.text, d.origin) for d in demos) == sorted(
        (q, references[q], "") for q in bad for _ in range(2))
    # accepted by two simulated reviewers each (the campaign asks for 2), who are not the authors
    assert {d.status for d in demos} == {Demonstration.Status.ACCEPTED}
    reviews = DemonstrationReview.objects.select_related("reviewer")
    assert reviews.count() == 12 and {r.verdict for r in reviews} == {"accept"}
    assert {r.reviewer.username for r in reviews} == {f"sim-c{campaign.pk}-r-review0", f"sim-c{campaign.pk}-r-review1"}
    assert not Token.objects.filter(user__in=[r.reviewer for r in reviews]).exists()


@pytest.mark.django_db
def test_raters_without_review_leave_what_they_write_pending_for_people(tmp_path):
    campaign = campaign_with_round(prompts=2, overlap=1, demonstrations=Campaign.Demonstrations.OPTIONAL)
    path = write_jsonl(tmp_path / "refs.jsonl", [{"prompt": p.text, "reference": "Nothing alike here."}
                                                 for p in Prompt.objects.filter(campaign=campaign)])
    result = run(campaign, raters=1, preference="reference", references=path)
    assert (result.demonstrations, result.reviewed) == (2, 0)
    assert list(Demonstration.objects.values_list("status", flat=True)) == ["pending", "pending"]
    assert not DemonstrationReview.objects.exists()


@pytest.mark.django_db
def test_management_command_writes_and_reviews_and_says_how_many(tmp_path):
    campaign = campaign_with_round(prompts=3, overlap=1, demonstrations=Campaign.Demonstrations.BOTH_BAD)
    path = write_jsonl(tmp_path / "refs.jsonl", [{"prompt": p.text, "reference": "Blue, by Rayleigh scattering."}
                                                 for p in Prompt.objects.filter(campaign=campaign)])
    out = StringIO()
    call_command("simulate_raters", "--campaign", str(campaign.pk), "--raters", "1", "--preference", "reference",
                 "--references", path, "--review", stdout=out)
    assert "wrote 3 answers on both bad, 3 reviewed by the simulated reviewers" in out.getvalue()
    assert list(Demonstration.objects.values_list("status", flat=True)) == ["accepted"] * 3
    with pytest.raises(CommandError, match="review"):
        call_command("simulate_raters", "--campaign", str(campaign.pk), "--review")
