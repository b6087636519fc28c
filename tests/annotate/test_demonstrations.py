"""Demonstrations: a better answer sent with the rating (the same POST, the
same transaction), refused whole when anything is wrong; reviewed in the
console (one or two accepting reviewers, never the author; one rejection
with a reason decides); accepted ones exported as TRL's SFT `messages`, and
with the campaign's setting, an accepted edit's two preference pairs."""
import uuid
from pathlib import Path

import pytest

from annotate.models import Campaign, Comparison, Demonstration, DemonstrationReview, Lease, Rating, Role
from annotate.selectors.training import preference_rows
from annotate.services.demonstrations import demonstration_review, diff_chars
from annotate.services.exports import export_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def export_dir(settings, tmp_path):
    settings.EXPORT_DIR = str(tmp_path / "exports")
    return Path(settings.EXPORT_DIR)


@pytest.fixture
def demo_round(make_open_round, annotator, other_annotator):
    """Round 0, 3 comparisons, k=2, demonstrations optional."""
    return make_open_round(prompts=3, overlap=2, annotators=[annotator, other_annotator],
                           demonstrations=Campaign.Demonstrations.OPTIONAL)


def lease(client, campaign_id: int) -> int:
    answer = client.post(f"/api/campaigns/{campaign_id}/next/")
    assert answer.status_code == 200, answer.content
    return answer.data["comparison"]


def rate(client, comparison_id: int, choice="A", strength=2, demonstration=None, key=None):
    body = {"comparison": comparison_id, "choice": choice, "idempotency_key": str(key or uuid.uuid4())}
    if strength is not None:
        body["strength"] = strength
    if demonstration is not None:
        body["demonstration"] = demonstration
    return client.post("/api/ratings/", body, format="json")


def snapshot() -> tuple:
    """What a refused request must leave unchanged."""
    return (
        Rating.objects.count(),
        Demonstration.objects.count(),
        list(Comparison.objects.order_by("pk").values_list("rating_count", flat=True)),
        list(Lease.objects.order_by("pk").values_list("status", flat=True)),
    )


# --- submit -----------------------------------------------------------------------


def test_an_edited_better_answer_is_stored_with_its_rating_origin_time_and_diff(demo_round, annotator_client, annotator):
    # given
    comparison = Comparison.objects.get(pk=lease(annotator_client, demo_round.campaign_id))
    original = comparison.response_b.text
    edited = original + "\n\nAnd a closing sentence."
    # when
    answer = rate(annotator_client, comparison.pk, "B", 3,
                  demonstration={"text": edited, "origin": "b", "time_on_task_ms": 5300})
    # then
    assert answer.status_code == 201, answer.content
    demo = Demonstration.objects.get()
    assert (demo.rating_id, demo.comparison_id, demo.annotator, demo.origin) == (answer.data["id"], comparison.pk, annotator, "b")
    assert demo.text == demo.submitted_text == edited
    assert demo.time_on_task_ms == 5300 and demo.status == Demonstration.Status.PENDING
    assert demo.diff_chars == len("\n\nAnd a closing sentence.")


def test_on_both_bad_a_demonstration_is_written_from_nothing(demo_round, annotator_client):
    # given
    comparison = lease(annotator_client, demo_round.campaign_id)
    # when
    answer = rate(annotator_client, comparison, "both_bad", None, demonstration={"text": "A good answer.", "origin": ""})
    # then
    assert answer.status_code == 201, answer.content
    demo = Demonstration.objects.get()
    assert (demo.origin, demo.text, demo.diff_chars) == ("", "A good answer.", len("A good answer."))


def test_a_retry_with_the_same_key_writes_one_rating_and_one_demonstration(demo_round, annotator_client):
    # given
    comparison = lease(annotator_client, demo_round.campaign_id)
    key = uuid.uuid4()
    demo = {"text": "Better.", "origin": "a"}
    # when
    first = rate(annotator_client, comparison, "A", 1, demonstration=demo, key=key)
    second = rate(annotator_client, comparison, "A", 1, demonstration=demo, key=key)
    # then
    assert (first.status_code, second.status_code) == (201, 200)
    assert Rating.objects.count() == 1 and Demonstration.objects.count() == 1


def test_diff_chars_counts_deleted_and_inserted_characters():
    assert diff_chars("abcdef", "abXdef") == 2  # c out, X in
    assert diff_chars("same", "same") == 0
    assert diff_chars("", "new") == 3


@pytest.mark.parametrize(
    ("choice", "strength", "demonstration", "field"),
    [
        ("A", 2, {"text": "", "origin": "a"}, "text"),
        ("A", 2, {"text": "  \n\t ", "origin": "a"}, "text"),
        ("A", 2, {"text": "x" * 101, "origin": "a"}, "text"),  # TEXT_MAX_CHARS is 100 here
        ("A", 2, {"text": 5, "origin": "a"}, "text"),
        ("A", 2, {"text": "Better\x00.", "origin": "a"}, "text"),  # PostgreSQL text holds no NUL
        ("A", 2, {"text": "Better.", "origin": "b"}, "origin"),  # edits the answer not chosen
        ("both_bad", None, {"text": "Better.", "origin": "a"}, "origin"),
        ("tie", None, {"text": "Better.", "origin": ""}, "origin"),
        ("A", 2, {"text": "Better.", "origin": "a", "time_on_task_ms": -1}, "time_on_task_ms"),
        ("A", 2, {"text": "Better.", "origin": "a", "author": "me"}, "author"),
        ("A", 2, "Better.", "text"),
    ],
)
def test_a_bad_demonstration_refuses_the_whole_rating_with_a_400_naming_the_field(
    demo_round, annotator_client, settings, choice, strength, demonstration, field
):
    # given
    settings.TEXT_MAX_CHARS = 100
    comparison = lease(annotator_client, demo_round.campaign_id)
    before = snapshot()
    # when
    answer = rate(annotator_client, comparison, choice, strength, demonstration=demonstration)
    # then
    assert answer.status_code == 400, answer.content
    assert answer.data["error"] == "invalid" and f"demonstration.{field}" in answer.data["detail"]
    assert snapshot() == before


@pytest.mark.parametrize(
    ("setting", "choice", "strength"),
    [(Campaign.Demonstrations.OFF, "A", 2), (Campaign.Demonstrations.BOTH_BAD, "A", 2)],
)
def test_a_demonstration_the_campaign_does_not_take_is_refused(demo_round, annotator_client, setting, choice, strength):
    # given
    Campaign.objects.filter(pk=demo_round.campaign_id).update(demonstrations=setting)
    comparison = lease(annotator_client, demo_round.campaign_id)
    before = snapshot()
    # when
    answer = rate(annotator_client, comparison, choice, strength, demonstration={"text": "Better.", "origin": "a"})
    # then
    assert answer.status_code == 400
    assert "demonstration.text" in answer.data["detail"] and set(answer.data) >= {"error", "detail"}
    assert snapshot() == before


def test_both_bad_campaigns_take_one_on_both_bad(demo_round, annotator_client):
    Campaign.objects.filter(pk=demo_round.campaign_id).update(demonstrations=Campaign.Demonstrations.BOTH_BAD)
    comparison = lease(annotator_client, demo_round.campaign_id)
    answer = rate(annotator_client, comparison, "both_bad", None, demonstration={"text": "Mine.", "origin": ""})
    assert answer.status_code == 201 and Demonstration.objects.count() == 1


def test_a_demonstration_for_a_comparison_the_annotator_does_not_hold_is_a_409(
    demo_round, annotator_client, api_client_for, other_annotator
):
    # given: the other annotator holds a comparison; this one holds none of it
    theirs = lease(api_client_for(other_annotator), demo_round.campaign_id)
    before = snapshot()
    # when
    answer = rate(annotator_client, theirs, "A", 2, demonstration={"text": "Better.", "origin": "a"})
    # then
    assert answer.status_code == 409 and answer.data["error"] == "conflict"
    assert "do not hold" in answer.data["detail"]
    assert snapshot() == before


def test_a_second_demonstration_for_the_same_comparison_is_a_409(demo_round, annotator_client):
    # given
    comparison = lease(annotator_client, demo_round.campaign_id)
    assert rate(annotator_client, comparison, "A", 2, demonstration={"text": "First.", "origin": "a"}).status_code == 201
    before = snapshot()
    # when: a fresh key, as a second submit would have
    answer = rate(annotator_client, comparison, "A", 2, demonstration={"text": "Second.", "origin": "a"})
    # then
    assert answer.status_code == 409 and "already rated" in answer.data["detail"]
    assert snapshot() == before
    assert Demonstration.objects.get().text == "First."


# --- review ----------------------------------------------------------------------


def _demo(round_, client, choice="A", strength=2, text=None) -> Demonstration:
    comparison = Comparison.objects.get(pk=lease(client, round_.campaign_id))
    origin = {"A": "a", "B": "b"}.get(choice, "")
    base = {"a": comparison.response_a.text, "b": comparison.response_b.text}.get(origin, "")
    body = {"text": text if text is not None else base + " (edited)", "origin": origin}
    assert rate(client, comparison.pk, choice, strength, demonstration=body).status_code == 201
    return Demonstration.objects.get(comparison=comparison, annotator=client.user)


def test_one_accept_decides_when_one_review_is_required(demo_round, annotator_client, campaign_admin):
    demo = _demo(demo_round, annotator_client)
    reviewed = demonstration_review(campaign=demo_round.campaign, demonstration_id=demo.pk, reviewer=campaign_admin,
                                    verdict="accept")
    assert reviewed.status == Demonstration.Status.ACCEPTED and reviewed.decided_at is not None


def test_with_two_reviews_required_it_takes_two_distinct_reviewers_neither_the_author(
    demo_round, annotator_client, annotator, campaign_admin, make_user
):
    # given
    Campaign.objects.filter(pk=demo_round.campaign_id).update(demonstration_reviews=2)
    campaign = Campaign.objects.get(pk=demo_round.campaign_id)
    demo = _demo(demo_round, annotator_client)
    second = make_user(Role.CAMPAIGN_ADMIN, username="admin-two")
    # when / then
    assert demonstration_review(campaign=campaign, demonstration_id=demo.pk, reviewer=campaign_admin,
                                verdict="accept").status == Demonstration.Status.PENDING
    for reviewer, why in ((campaign_admin, "already reviewed"), (annotator, "You wrote")):
        with pytest.raises(Exception) as refused:
            demonstration_review(campaign=campaign, demonstration_id=demo.pk, reviewer=reviewer, verdict="accept")
        assert refused.value.status_code == 409 and why in refused.value.message
    assert DemonstrationReview.objects.count() == 1
    assert demonstration_review(campaign=campaign, demonstration_id=demo.pk, reviewer=second,
                                verdict="accept").status == Demonstration.Status.ACCEPTED


def test_reject_needs_a_reason_and_then_decides(demo_round, annotator_client, campaign_admin):
    demo = _demo(demo_round, annotator_client)
    with pytest.raises(Exception) as refused:
        demonstration_review(campaign=demo_round.campaign, demonstration_id=demo.pk, reviewer=campaign_admin,
                             verdict="reject", reason="  ")
    assert refused.value.status_code == 400 and DemonstrationReview.objects.count() == 0
    rejected = demonstration_review(campaign=demo_round.campaign, demonstration_id=demo.pk, reviewer=campaign_admin,
                                    verdict="reject", reason="copies the answer")
    assert rejected.status == Demonstration.Status.REJECTED
    assert DemonstrationReview.objects.get().reason == "copies the answer"


def test_edit_and_accept_replaces_the_text_and_keeps_the_authors(demo_round, annotator_client, campaign_admin):
    demo = _demo(demo_round, annotator_client, text="Tpyo here.")
    reviewed = demonstration_review(campaign=demo_round.campaign, demonstration_id=demo.pk, reviewer=campaign_admin,
                                    verdict="accept", edited_text="Typo here.")
    assert (reviewed.text, reviewed.submitted_text, reviewed.status) == ("Typo here.", "Tpyo here.", "accepted")
    assert DemonstrationReview.objects.get().edited_text == "Typo here."


def test_an_empty_edit_is_refused_and_writes_nothing(demo_round, annotator_client, campaign_admin):
    demo = _demo(demo_round, annotator_client, text="Fine.")
    with pytest.raises(Exception) as refused:
        demonstration_review(campaign=demo_round.campaign, demonstration_id=demo.pk, reviewer=campaign_admin,
                             verdict="accept", edited_text="   ")
    assert refused.value.status_code == 400 and "edited_text" in refused.value.message
    demo.refresh_from_db()
    assert (demo.text, demo.status, DemonstrationReview.objects.count()) == ("Fine.", "pending", 0)


def test_console_page_lists_pending_and_reviews_through_its_forms(
    demo_round, annotator_client, campaign_admin, ml_engineer, client
):
    # given
    demo = _demo(demo_round, annotator_client, text="Shown **here**.")
    url = f"/console/campaigns/{demo_round.campaign_id}/demonstrations/"
    # then: engineers read, cannot review
    client.force_login(ml_engineer)
    page = client.get(url)
    assert page.status_code == 200 and "Shown **here**." in page.content.decode()
    assert client.post(f"{url}{demo.pk}/review/", {"verdict": "accept"}).status_code == 403
    # when: the admin rejects without a reason, then accepts with an edit
    client.force_login(campaign_admin)
    client.post(f"{url}{demo.pk}/review/", {"verdict": "reject", "reason": ""})
    demo.refresh_from_db()
    assert demo.status == "pending" and DemonstrationReview.objects.count() == 0
    client.post(f"{url}{demo.pk}/review/", {"verdict": "accept", "edited_text": "Shown\r\nhere."})
    demo.refresh_from_db()
    assert (demo.status, demo.text) == ("accepted", "Shown\nhere.")
    assert "No pending demonstrations" in client.get(url).content.decode()


def test_the_campaign_form_saves_the_three_settings(demo_round, campaign_admin, client):
    from frontend.console.campaigns import _campaign_values

    campaign = Campaign.objects.get(pk=demo_round.campaign_id)
    client.force_login(campaign_admin)
    values = {k: ("" if v is None else v) for k, v in _campaign_values(campaign).items()}
    values.update(demonstrations="both_bad", demonstration_reviews="2", demonstration_pairs="on")
    values.pop("auto_train")
    answer = client.post(f"/console/campaigns/{campaign.pk}/", values)
    assert answer.status_code == 302, answer.content.decode()[:2000]
    campaign.refresh_from_db()
    assert (campaign.demonstrations, campaign.demonstration_reviews, campaign.demonstration_pairs) == ("both_bad", 2, True)
    values["demonstration_reviews"] = "3"
    assert client.post(f"/console/campaigns/{campaign.pk}/", values).status_code == 400
    campaign.refresh_from_db()
    assert campaign.demonstration_reviews == 2


# --- export and preference pairs ----------------------------------------------------


@pytest.fixture
def reviewed(demo_round, annotator_client, api_client_for, other_annotator, campaign_admin):
    """Three demonstrations: an accepted edit of B (strength 3), an accepted
    both-bad one written from nothing, a rejected edit of A."""
    other = api_client_for(other_annotator)
    edit_b = _demo(demo_round, annotator_client, "B", 3)
    written = _demo(demo_round, other, "both_bad", None, text="Written from nothing.")
    edit_a = _demo(demo_round, annotator_client, "A", 1)
    campaign = demo_round.campaign
    for d in (edit_b, written):
        demonstration_review(campaign=campaign, demonstration_id=d.pk, reviewer=campaign_admin, verdict="accept")
    demonstration_review(campaign=campaign, demonstration_id=edit_a.pk, reviewer=campaign_admin, verdict="reject",
                         reason="no better")
    return edit_b, written, edit_a


def test_sft_export_has_accepted_demonstrations_as_messages_and_loads_with_datasets(reviewed, tmp_path):
    import datasets

    # given
    edit_b, written, _ = reviewed
    campaign = edit_b.comparison.round.campaign
    # when
    export = export_create(campaign=campaign, kind="sft", format="jsonl")
    # then
    loaded = datasets.load_dataset("json", data_files=export.path, split="train", cache_dir=str(tmp_path / "hf"))
    assert "messages" in loaded.column_names and len(loaded) == export.rows == 2
    assert [r["demonstration_id"] for r in loaded] == [edit_b.pk, written.pk]
    first = loaded[0]["messages"]
    assert first == [{"role": "user", "content": edit_b.comparison.prompt.text},
                     {"role": "assistant", "content": edit_b.text}]
    assert Path(export.path).exists() and len(export.sha256) == 64 and export.kind == "sft"


def test_sft_export_keeps_a_chat_prompts_turns(reviewed):
    import json

    edit_b = reviewed[0]
    prompt = edit_b.comparison.prompt
    prompt.turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    prompt.save()
    export = export_create(campaign=prompt.campaign, kind="sft", format="jsonl")
    row = json.loads(Path(export.path).read_text().splitlines()[0])
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]


def test_sft_export_is_jsonl_only_and_the_api_takes_the_kind(reviewed, ml_engineer_client, export_dir):
    campaign_id = reviewed[0].comparison.round.campaign_id
    refused = ml_engineer_client.post(f"/api/campaigns/{campaign_id}/exports/", {"kind": "sft", "format": "csv"},
                                      format="json")
    assert refused.status_code == 400 and "JSONL" in refused.data["detail"]
    assert not export_dir.exists() or not any(export_dir.rglob("*.csv"))
    made = ml_engineer_client.post(f"/api/campaigns/{campaign_id}/exports/", {"kind": "sft"}, format="json")
    assert made.status_code == 201 and made.data["rows"] == 2


def test_accepted_edits_join_the_reward_data_only_when_the_campaign_says_so(reviewed):
    edit_b, _, _ = reviewed
    campaign = Campaign.objects.get(pk=edit_b.comparison.round.campaign_id)
    demo_rows = lambda: [r for r in preference_rows(campaign=campaign) if str(r["chosen_model"]).startswith("demonstration:")]  # noqa: E731
    assert demo_rows() == []
    campaign.demonstration_pairs = True
    campaign.save()
    rows = demo_rows()
    c = edit_b.comparison
    # The edit of B beats B (margin 0) and A (the rating's strength 3 -> margin 1).
    assert [(r["chosen"], r["rejected"], r["margin"]) for r in rows] == [
        (edit_b.text, c.response_b.text, 0.0), (edit_b.text, c.response_a.text, 1.0)]
    assert {r["rating_id"] for r in rows} == {edit_b.rating_id}
    ratings_rows = [r for r in preference_rows(campaign=campaign) if r not in rows]
    assert set(rows[0]) == set(ratings_rows[0])  # the same columns: one schema for the reward data
