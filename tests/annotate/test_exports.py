"""Exports: preference pairs in TRL's schema that `datasets` loads, raw
ratings as CSV and JSONL, each recorded with its filters and a sha256 that
matches the file, written in flat memory, downloadable by admins and
engineers only."""
import csv
import hashlib
import json
import tracemalloc
from pathlib import Path

import pytest
from django.db import connection

from annotate.models import Comparison, Export, Prompt, Rating, Answer, Role
from annotate.services.exports import export_create
from tests.factories import ratings_bulk_create, version_chain_rounds

pytestmark = pytest.mark.django_db

TRL_COLUMNS = {"prompt", "chosen", "rejected", "margin", "comparison_id", "rating_id", "annotator_id", "weight"}


@pytest.fixture(autouse=True)
def export_dir(settings, tmp_path):
    settings.EXPORT_DIR = str(tmp_path / "exports")
    return Path(settings.EXPORT_DIR)


@pytest.fixture
def rated_rounds(make_user):
    """Rounds 0 and 1 (v1 against v0), 6 prompts, two annotators who rated
    every comparison: A, B, tie and both_bad among them, one with a reason
    that needs quoting in CSV."""
    a, b = make_user(Role.ANNOTATOR, username="ann-a"), make_user(Role.ANNOTATOR, username="ann-b")
    rounds = version_chain_rounds(versions=2, prompts=6, annotators=[a, b])
    choices = ["A", "B", "tie", "both_bad", "A", "B"]
    rows = []
    for round_ in rounds:
        for n, c in enumerate(round_.comparisons.order_by("pk")):
            for annotator, choice in ((a, choices[n]), (b, choices[(n + 1) % 6])):
                rows.append(
                    {
                        "comparison": c, "annotator": annotator, "choice": choice,
                        "strength": (n % 3) + 1 if choice in "AB" else None,
                        "reason": 'clearer, "shorter",\nand right' if n == 0 else "",
                        "time_on_task_ms": 1000 * (n + 1),
                    }
                )
    ratings_bulk_create(rows)
    return rounds


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_preference_export_loads_with_datasets_in_trl_schema(rated_rounds, tmp_path):
    import datasets

    # given
    campaign = rated_rounds[0].campaign
    # when
    export = export_create(campaign=campaign, kind="preferences", format="jsonl")
    # then
    loaded = datasets.load_dataset("json", data_files=export.path, split="train", cache_dir=str(tmp_path / "hf"))
    assert TRL_COLUMNS <= set(loaded.column_names)
    ab = Rating.objects.filter(comparison__round__campaign=campaign, choice__in=["A", "B"])
    assert len(loaded) == export.rows == ab.count() == 16
    first = ab.select_related("comparison__prompt", "comparison__response_a", "comparison__response_b").order_by("pk")[0]
    row = loaded[0]
    c = first.comparison
    chosen, rejected = (c.response_a, c.response_b) if first.choice == "A" else (c.response_b, c.response_a)
    assert (row["prompt"], row["chosen"], row["rejected"]) == (c.prompt.text, chosen.text, rejected.text)
    assert (row["rating_id"], row["comparison_id"], row["annotator_id"]) == (first.pk, c.pk, first.annotator_id)
    assert row["margin"] == (first.strength - 1) / 2 and row["weight"] == 1.0


def test_export_records_filters_and_a_sha256_that_matches_the_file(rated_rounds, ml_engineer):
    # given
    round1 = rated_rounds[1]
    # when
    export = export_create(campaign=round1.campaign, kind="ratings", format="jsonl", round_=round1, user=ml_engineer)
    # then
    export.refresh_from_db()
    assert (export.campaign, export.round, export.kind, export.format, export.created_by) == (
        round1.campaign, round1, "ratings", "jsonl", ml_engineer,
    )
    assert export.sha256 == sha256_of(export.path)
    assert export.size_bytes == Path(export.path).stat().st_size
    assert not list(Path(export.path).parent.glob(".*partial"))


def test_ratings_jsonl_has_every_field_and_the_version_on_each_side(rated_rounds):
    # given
    round1 = rated_rounds[1]
    # when
    export = export_create(campaign=round1.campaign, kind="ratings", format="jsonl", round_=round1)
    # then
    rows = [json.loads(line) for line in Path(export.path).read_text().splitlines()]
    assert len(rows) == export.rows == 12
    assert {r["round"] for r in rows} == {1}
    for row in rows:
        c = Comparison.objects.get(pk=row["comparison_id"])
        rating = Rating.objects.get(pk=row["rating_id"])
        assert (row["version_a"], row["version_b"]) == ((1, 0) if c.candidate_is_a else (0, 1))
        assert (row["model_a"], row["model_b"]) == (("v1", "v0") if c.candidate_is_a else ("v0", "v1"))
        assert (row["candidate_version"], row["baseline_version"]) == (1, 0)
        assert row["prompt_external_id"] == c.prompt.external_id
        assert (row["choice"], row["strength"], row["reason"], row["time_on_task_ms"]) == (
            rating.choice, rating.strength, rating.reason, rating.time_on_task_ms,
        )
        assert row["created_at"] == rating.created_at.isoformat()
        assert row["annotator"] in {"ann-a", "ann-b"}


def test_ratings_csv_parses_with_dictreader(rated_rounds):
    # given
    campaign = rated_rounds[0].campaign
    # when
    export = export_create(campaign=campaign, kind="ratings", format="csv")
    # then
    with open(export.path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == export.rows == Rating.objects.count() == 24
    assert {r["choice"] for r in rows} == {"A", "B", "tie", "both_bad"}
    quoted = [r for r in rows if r["reason"]]
    assert quoted and all(r["reason"] == 'clearer, "shorter",\nand right' for r in quoted)
    assert {r["round"] for r in rows} == {"0", "1"}
    assert all(r["strength"] == "" for r in rows if r["choice"] in ("tie", "both_bad"))
    assert {(r["model_a"], r["model_b"]) for r in rows if r["round"] == "0"} == {("v0", "v0")}


def test_export_api_creates_and_downloads(rated_rounds, ml_engineer_client):
    # given
    campaign = rated_rounds[0].campaign
    # when
    created = ml_engineer_client.post(
        f"/api/campaigns/{campaign.pk}/exports/", {"kind": "preferences", "format": "jsonl", "round": 1}, format="json"
    )
    # then
    assert created.status_code == 201, created.data
    assert (created.data["kind"], created.data["format"], created.data["round"], created.data["rows"]) == (
        "preferences", "jsonl", 1, 8,
    )
    assert created.data["download_url"].endswith(f"/api/exports/{created.data['id']}/download/")
    # when
    downloaded = ml_engineer_client.get(f"/api/exports/{created.data['id']}/download/")
    # then
    assert downloaded.status_code == 200
    body = b"".join(downloaded.streaming_content)
    assert hashlib.sha256(body).hexdigest() == created.data["sha256"] == downloaded["X-Checksum-SHA256"]
    assert "attachment" in downloaded["Content-Disposition"]
    assert len(body.splitlines()) == 8


@pytest.mark.parametrize(
    "body, message",
    [
        ({"kind": "votes", "format": "jsonl"}, "Unknown export kind 'votes'"),
        ({"kind": "ratings", "format": "xml"}, "Unknown export format 'xml'"),
        ({"kind": "preferences", "format": "csv"}, "JSONL only"),
        ({"kind": "ratings", "format": "csv", "round": 7}, "has no round 7"),
    ],
)
def test_export_api_refuses_bad_input_and_writes_nothing(rated_rounds, campaign_admin_client, export_dir, body, message):
    answer = campaign_admin_client.post(f"/api/campaigns/{rated_rounds[0].campaign_id}/exports/", body, format="json")
    assert answer.status_code == 400
    assert message in answer.data["detail"]
    assert Export.objects.count() == 0
    assert not export_dir.exists() or not any(export_dir.rglob("*.*"))


def test_exports_are_for_admins_and_engineers_only(rated_rounds, annotator_client, campaign_admin_client):
    # given
    campaign = rated_rounds[0].campaign
    export = export_create(campaign=campaign, kind="ratings", format="csv")
    # when / then
    refused = annotator_client.post(f"/api/campaigns/{campaign.pk}/exports/", {"kind": "ratings"}, format="json")
    assert refused.status_code == 403
    assert annotator_client.get(f"/api/exports/{export.pk}/download/").status_code == 403
    assert Export.objects.count() == 1
    assert campaign_admin_client.get(f"/api/exports/{export.pk}/download/").status_code == 200
    assert campaign_admin_client.get("/api/exports/999999/download/").status_code == 404


def test_download_of_an_export_whose_file_is_gone_is_a_404(rated_rounds, ml_engineer_client):
    export = export_create(campaign=rated_rounds[0].campaign, kind="ratings", format="jsonl")
    Path(export.path).unlink()
    answer = ml_engineer_client.get(f"/api/exports/{export.pk}/download/")
    assert answer.status_code == 404
    assert "create the export again" in answer.data["detail"]


def test_a_20k_rating_export_streams_in_memory_well_below_its_size(make_user):
    # given: 5000 comparisons with long answers, 4 ratings each
    annotators = [make_user(Role.ANNOTATOR) for _ in range(4)]
    (round0,) = version_chain_rounds(versions=1, prompts=1, annotators=annotators)
    campaign, v0 = round0.campaign, round0.candidate
    prompts = Prompt.objects.bulk_create(Prompt(campaign=campaign, external_id=f"big{i}", text=f"Q{i}") for i in range(5000))
    filler = "lorem ipsum dolor sit amet " * 60  # ~1.6 kB an answer
    answers = Answer.objects.bulk_create(
        (Answer(prompt=p, policy_version=v0, sample_index=s, text=f"{s}{p.pk}{filler}") for p in prompts for s in (0, 1)),
        batch_size=2000,
    )
    comparisons = Comparison.objects.bulk_create(
        (Comparison(round=round0, prompt=p, response_a=answers[2 * i], response_b=answers[2 * i + 1], candidate_is_a=True)
         for i, p in enumerate(prompts)),
        batch_size=2000,
    )
    ratings_bulk_create(
        {"comparison": c, "annotator": u, "choice": "AB"[(c.pk + u.pk) % 2], "strength": 2}
        for c in comparisons
        for u in annotators
    )
    # A freshly bulk-loaded database has no planner statistics yet (autovacuum
    # gathers them in production); without them PostgreSQL picks a slow plan.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    # when
    tracemalloc.start()
    try:
        export = export_create(campaign=campaign, kind="preferences", format="jsonl")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # then
    assert export.rows == 20_000
    assert export.size_bytes > 60_000_000
    assert peak < export.size_bytes / 4, f"peak {peak / 1e6:.1f} MB for a {export.size_bytes / 1e6:.1f} MB file"
    with open(export.path, "rb") as f:
        assert sum(1 for _ in f) == 20_000
    assert export.sha256 == sha256_of(export.path)


def test_ratings_export_jsonl_lines_are_valid_json_even_with_unicode(rated_rounds):
    # given
    Rating.objects.filter(pk=Rating.objects.order_by("pk").first().pk).update(reason="naïve — 好")
    # when
    export = export_create(campaign=rated_rounds[0].campaign, kind="ratings", format="jsonl")
    # then
    lines = Path(export.path).read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["reason"] == "naïve — 好"


@pytest.fixture
def rated_evaluation(make_user):
    """An evaluation campaign of three external models, every comparison of
    its round rated once (A, B and tie in turn)."""
    from annotate.services.evaluation import evaluation_start
    from tests.factories import evaluation_campaign

    annotator = make_user(Role.ANNOTATOR, username="ann-eval")
    campaign, _ = evaluation_campaign(models=3, prompts=4, comparisons_per_round=9, annotators=[annotator],
                                      gold_frequency=0)
    round_, _ = evaluation_start(campaign=campaign)
    ratings_bulk_create(
        {"comparison": c, "annotator": annotator, "choice": ["A", "B", "tie"][n % 3],
         "strength": 2 if n % 3 < 2 else None}
        for n, c in enumerate(round_.comparisons.order_by("pk"))
    )
    return campaign


def test_ratings_export_of_an_evaluation_campaign_names_the_model_on_each_side(rated_evaluation):
    # when
    export = export_create(campaign=rated_evaluation, kind="ratings", format="csv")
    # then
    with open(export.path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == export.rows == 9
    for row in rows:
        c = Comparison.objects.select_related("response_a__external_model", "response_b__external_model").get(
            pk=row["comparison_id"]
        )
        assert (row["model_a"], row["model_b"]) == (c.response_a.external_model.name, c.response_b.external_model.name)
        # no policy version, no candidate: empty cells, not made-up values
        assert row["version_a"] == row["version_b"] == row["candidate_is_a"] == row["candidate_version"] == ""
    assert {r["model_a"] for r in rows} | {r["model_b"] for r in rows} == {"model-a", "model-b", "model-c"}


def test_preference_export_of_an_evaluation_campaign_loads_with_the_models_named(rated_evaluation, tmp_path):
    import datasets

    # when
    export = export_create(campaign=rated_evaluation, kind="preferences", format="jsonl")
    # then: the A/B ratings (ties say nothing), TRL's columns and who wrote each side
    loaded = datasets.load_dataset("json", data_files=export.path, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(loaded) == export.rows == 6
    assert TRL_COLUMNS <= set(loaded.column_names)
    for row in loaded:
        assert row["chosen"] == f"{row['chosen_model']} answers {Prompt.objects.get(pk=row['prompt_id']).external_id}"
        assert row["rejected_model"] != row["chosen_model"]
