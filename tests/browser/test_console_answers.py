"""The console's answers page in real Chromium: an admin checks a file of
answers whose line 3 is bad, reads the line named, imports the fixed file,
and sees the counts per model and the campaign's models with their answers.
Screenshots go to tests/artifacts/screenshots/."""
import json

import pytest

from annotate.models import Answer, ExternalModel, Role
from tests.browser.conftest import SCREENSHOTS
from tests.browser.test_console_data import upload


@pytest.fixture
def campaign_in_browser(page, live_server, transactional_db):
    from django.test import Client

    from tests.factories import CampaignFactory, PromptFactory, UserFactory

    admin = UserFactory(username="answers-admin", roles=[Role.CAMPAIGN_ADMIN])
    campaign = CampaignFactory(name="Answers from anywhere")
    campaign.admins.add(admin)
    for i in range(3):
        PromptFactory(campaign=campaign, external_id=f"q{i}", text=f"Question {i}?")
    client = Client()
    client.force_login(admin)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return campaign


def test_admin_checks_a_file_of_answers_fixes_it_imports_and_sees_the_counts(page, live_server, campaign_in_browser):
    campaign = campaign_in_browser
    page.goto(f"{live_server.url}/console/campaigns/{campaign.pk}/")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Answers", exact=True).click()
    page.wait_for_url(f"**/console/campaigns/{campaign.pk}/answers/")
    assert "No models from outside yet" in page.text_content("#model-list")
    rows = [{"external_id": f"q{i}", "model": model, "response": f"{model} says {i}"}
            for i in range(3) for model in ("gpt-x", "llama-y")]
    rows.append({"prompt": "A new question?", "model": "gpt-x", "response": "A new answer."})
    bad = [dict(r) for r in rows]
    bad[1]["external_id"] = "missing"  # line 2: no such prompt
    body = lambda rs: b"".join(json.dumps(r).encode() + b"\n" for r in rs)  # noqa: E731

    # Check: line 2 named, nothing written
    upload(page, "answers.jsonl", body(bad), "check")
    errors = page.locator("#import-errors tbody tr")
    assert errors.count() == 1 and errors.first.locator("td").first.text_content() == "2"
    assert "no prompt 'missing'" in errors.first.locator("td").nth(1).text_content()
    assert not ExternalModel.objects.filter(campaign=campaign).exists()
    page.screenshot(path=str(SCREENSHOTS / "console-answers-check.png"), full_page=True)

    # Import the fixed file: the counts, per model, and the models list
    upload(page, "answers.jsonl", body(rows), "import")
    assert "Imported" in page.text_content("#import-report")
    assert page.text_content("#import-created") == "7"
    assert page.text_content("#import-prompts-created") == "1"
    per_model = {
        r.get_attribute("data-model"): [c.text_content() for c in r.locator("td").all()][1:]
        for r in page.locator("#import-models tbody tr").all()
    }
    assert per_model == {"gpt-x": ["4", "0", "yes"], "llama-y": ["3", "0", "yes"]}
    listed = {
        r.get_attribute("data-model"): r.locator("td").nth(2).text_content()
        for r in page.locator("#model-list tbody tr").all()
    }
    assert listed == {"gpt-x": "4", "llama-y": "3"}
    assert Answer.objects.filter(prompt__campaign=campaign).count() == 7
    page.screenshot(path=str(SCREENSHOTS / "console-answers-imported.png"), full_page=True)

    # Again: nothing added
    upload(page, "answers.jsonl", body(rows), "import")
    assert page.text_content("#import-created") == "0"
    assert Answer.objects.filter(prompt__campaign=campaign).count() == 7
