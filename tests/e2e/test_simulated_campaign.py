"""The loop moves the model: a shortened bench/simulated_campaign.py on the
real processes (gunicorn + a Celery worker, PostgreSQL + Redis) with the
tiny model. Simulated raters who prefer shorter answers rate three rounds,
round 0 started through the staff API (the Celery task rating in-process
through the annotator API's services) and rounds 1 and 2 by `manage.py simulate_raters
--url` over HTTP; after each round the newest policy answers held-out
questions against the base, judged by the same preference."""
import argparse

import pytest

from bench.simulated_campaign import parse_args, questions, run_campaign, simulate_round, tiny_answering_model
from config.platform import Platform

pytestmark = pytest.mark.e2e


def rate_first_round_through_the_staff_api(staff):
    """Round 0 through POST /api/campaigns/<id>/simulate/ (the worker's task),
    the others through the management command."""

    def rate(platform, cid, args: argparse.Namespace, *, strength, noise, round_index):
        if round_index != 0:
            return simulate_round(platform, cid, args, strength=strength, noise=noise, round_index=round_index)
        status, started = staff.post(f"/api/campaigns/{cid}/simulate/", {
            "raters": args.raters, "preference": args.preference, "strength": strength, "noise": noise,
            "seed": args.seed, "rounds": 1,
        })
        assert status == 202, started
        assert started["usernames"] == [f"sim-c{cid}-r{i}" for i in range(args.raters)] and started["until_round"] == 0

        def rated():
            body = staff.get(f"/api/campaigns/{cid}/progress/")[1]["round"]
            return body if body["round"] > 0 or body["ratings"] == body["target_ratings"] else None

        platform.wait_for(rated, timeout=120, what="the simulate task to rate round 0")
        # The simulated raters are annotators like any other on the quality page.
        quality = staff.get(f"/api/campaigns/{cid}/quality/?round=0")[1]
        assert {row["username"] for row in quality["annotators"]} == set(started["usernames"])
        return {"ratings": quality["n_ratings"], "raters": {}}

    return rate


def test_simulated_raters_who_prefer_shorter_answers_move_the_policy_round_by_round(
    services_platform: Platform, tmp_path
):
    platform = services_platform
    # given: a campaign of 3 rounds x 12 comparisons, 2 raters each, 10% noise
    args = parse_args(["--model", "tiny", "--method", "rloo", "--rounds", "3", "--comparisons", "12", "--raters", "2",
                       "--noise", "0.1", "--new-tokens", "24", "--eval-prompts", "48", "--kl-prompts", "16"])
    admin = platform.user("alice", "campaign_admin", "ml_engineer")
    staff = platform.user("root")
    platform.manage("shell", "-c", "from django.contrib.auth.models import User; "
                    "User.objects.filter(username='root').update(is_staff=True)")
    model = tiny_answering_model(tmp_path / "tiny", questions()[:200])
    # when
    report = run_campaign(platform, admin, model, args, strength=args.strength, noise=args.noise, name="e2e sim",
                          rate_round=rate_first_round_through_the_staff_api(staff))
    # then: every round was rated in full and trained on
    rounds = report["rounds"]
    assert [p["round"] for p in rounds] == [0, 1, 2, 3] and [p["version"] for p in rounds] == [0, 1, 2, 3]
    assert all(p["ratings"] == 12 * 2 for p in rounds[1:])
    assert all(set(p["stages_s"]) == {"snapshot", "sft", "reward", "policy", "generate", "open"} for p in rounds[1:])
    # and the newest policy beats the base more and more under the raters' preference
    rates = [p["win_rate"] for p in rounds]
    assert rates[-1] > 0.5 and rounds[-1]["ci95"][0] > 0.5, rates
    assert rates[-1] >= rates[0] + 0.15, rates
    assert all(later >= earlier - 0.1 for earlier, later in zip(rates[1:], rates[2:])), rates
    assert rounds[-1]["mean_words"] < rounds[0]["mean_words"]
    # with a KL to the base that the policy stage reported and the bench measured
    assert all(p["kl_policy_stage"] is not None and p["kl_estimate"] > 0 for p in rounds[1:])
    # and each step was held to the campaign's KL budget (the bench's --kl-budget, 10 nats)
    assert all(p["kl_budget_stopped"] is not None and p["kl_policy_stage"] <= args.kl_budget for p in rounds[1:])
