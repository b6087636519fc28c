"""The console's data pages in real Chromium: a prompts file with a bad line
is checked, the report names the line, the fixed file imports; gold pairs
import; the quality page and the models page (with its plot) render.
Screenshots go to tests/artifacts/screenshots/."""
import json

import pytest

from annotate.models import GoldPair, Prompt, Role
from tests.browser.conftest import SCREENSHOTS


@pytest.fixture
def admin_in_browser(page, live_server, transactional_db):
    from django.test import Client

    from tests.factories import UserFactory, ratings_bulk_create, version_chain_rounds

    admin = UserFactory(username="browser-admin", roles=[Role.CAMPAIGN_ADMIN])
    raters = [UserFactory(username=f"rater{i}", roles=[Role.ANNOTATOR]) for i in range(3)]
    rounds = version_chain_rounds(versions=3, prompts=12, annotators=raters, overlap=3, name="Console data campaign")
    rounds[0].campaign.admins.add(admin)  # campaign admins see only the campaigns they administer
    ratings_bulk_create(
        {"comparison": c, "annotator": a, "choice": "B" if (c.pk + a.pk) % 3 else "A", "strength": 2}
        for r in rounds
        for c in r.comparisons.all()
        for a in raters
    )
    client = Client()
    client.force_login(admin)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return rounds[0].campaign


def upload(page, name: str, body: bytes, button: str):
    page.set_input_files("#import-file", files=[{"name": name, "mimeType": "text/plain", "buffer": body}])
    page.click(f"button[value={button}]")
    page.wait_for_selector("#import-report")


def test_admin_checks_a_prompts_file_fixes_the_bad_line_and_imports(page, live_server, admin_in_browser):
    campaign = admin_in_browser
    before = Prompt.objects.filter(campaign=campaign).count()
    page.goto(f"{live_server.url}/console/campaigns/{campaign.pk}/prompts/")
    bad = b"external_id,prompt\nnew1,What is a ratchet?\nnew2,\nnew3,Why do rounds repeat?\n"
    upload(page, "prompts.csv", bad, "check")
    rows = page.locator("#import-errors tbody tr")
    assert rows.count() == 1
    assert rows.first.locator("td").first.text_content() == "3"
    assert "exactly one of" in rows.first.locator("td").nth(1).text_content()
    page.screenshot(path=str(SCREENSHOTS / "console-prompts-dry-run-report.png"), full_page=True)
    assert Prompt.objects.filter(campaign=campaign).count() == before
    fixed = bad.replace(b"new2,\n", b"new2,How does a pawl work?\n")
    upload(page, "prompts.csv", fixed, "check")
    assert page.text_content("#import-created") == "3"
    assert Prompt.objects.filter(campaign=campaign).count() == before
    upload(page, "prompts.csv", fixed, "import")
    assert "Imported" in page.text_content("#import-report")
    assert Prompt.objects.filter(campaign=campaign).count() == before + 3
    page.screenshot(path=str(SCREENSHOTS / "console-prompts-imported.png"), full_page=True)


def test_admin_imports_gold_pairs_and_reads_quality_and_models(page, live_server, admin_in_browser):
    campaign = admin_in_browser
    page.goto(f"{live_server.url}/console/campaigns/{campaign.pk}/gold/")
    body = b"".join(
        json.dumps({"prompt": f"Gold {i}?", "chosen": f"right {i}", "rejected": f"wrong {i}"}).encode() + b"\n"
        for i in range(5)
    )
    upload(page, "gold.jsonl", body, "import")
    assert page.text_content("#import-created") == "5"
    assert GoldPair.objects.filter(campaign=campaign).count() == 5
    assert page.locator("#gold-list tbody tr").count() == 5
    page.screenshot(path=str(SCREENSHOTS / "console-gold.png"), full_page=True)

    page.goto(f"{live_server.url}/console/campaigns/{campaign.pk}/quality/")
    assert page.locator("#annotator-table tbody tr[data-annotator]").count() == 3
    page.select_option("#round", "1")
    page.click(".round-select button")
    page.wait_for_url("**/quality/?round=1")
    assert "round 1" in page.text_content("h2")
    page.screenshot(path=str(SCREENSHOTS / "console-quality.png"), full_page=True)

    page.goto(f"{live_server.url}/console/campaigns/{campaign.pk}/models/")
    plot = page.locator("svg#leaderboard-plot")
    assert plot.is_visible()
    assert plot.locator("circle.mark").count() == 3  # v0, v1, v2
    assert plot.locator("line.interval").count() == 3
    assert page.locator("#round-win-rates tbody tr").count() == 3
    page.screenshot(path=str(SCREENSHOTS / "console-models.png"), full_page=True)
