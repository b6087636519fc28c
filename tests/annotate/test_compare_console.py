"""The console's compare page (/console/campaigns/<id>/compare/): the latest
two policy versions by default, and a version that does not exist explained
with the versions that do. Its pagination and escaping:
tests/annotate/test_runs_console.py."""
import re

import pytest

from annotate.models import PolicyVersion
from tests.factories import CampaignFactory, version_chain_rounds

pytestmark = pytest.mark.django_db


def selected(html: str, name: str) -> list[str]:
    select = html.split(f'id="compare-{name}"')[1].split("</select>")[0]
    return re.findall(r'<option value="(\d+)" selected>', select)


def test_with_no_choice_the_newest_version_is_compared_with_the_one_before(ml_engineer, client):
    client.force_login(ml_engineer)
    campaign = version_chain_rounds(versions=3, prompts=2)[0].campaign
    answer = client.get(f"/console/campaigns/{campaign.pk}/compare/")
    html = answer.content.decode()
    assert answer.status_code == 200 and "2 prompts answered by both v1 and v2" in html
    assert selected(html, "a") == ["1"] and selected(html, "b") == ["2"]
    assert 'id="compare-error"' not in html


def test_a_version_that_does_not_exist_is_named_with_those_that_do(ml_engineer, client):
    # After one round the campaign has v0 and v1; a link to ?a=1&b=2 used to answer a bare
    # 400 with v1 chosen against v1.
    client.force_login(ml_engineer)
    campaign = version_chain_rounds(versions=2, prompts=2)[0].campaign
    answer = client.get(f"/console/campaigns/{campaign.pk}/compare/?a=1&b=2")
    html = answer.content.decode()
    assert answer.status_code == 400
    assert "There is no v2 in this campaign. Choose two versions of this campaign: v0, v1." in html
    assert selected(html, "a") == ["0"] and selected(html, "b") == ["1"]
    assert '<section class="pair"' not in html
    garbage = client.get(f"/console/campaigns/{campaign.pk}/compare/?a=latest&b=1").content.decode()
    assert "There is no &#x27;latest&#x27; in this campaign." in garbage


def test_with_one_version_or_none_the_page_says_what_makes_the_next(ml_engineer, client):
    client.force_login(ml_engineer)
    campaign = version_chain_rounds(versions=1, prompts=1)[0].campaign
    assert list(PolicyVersion.objects.filter(campaign=campaign).values_list("version", flat=True)) == [0]
    one = client.get(f"/console/campaigns/{campaign.pk}/compare/")
    assert one.status_code == 200 and "Only v0 so far" in one.content.decode()
    empty = client.get(f"/console/campaigns/{CampaignFactory().pk}/compare/")
    assert empty.status_code == 200 and "No policy version yet" in empty.content.decode()


def test_an_answer_cut_at_the_token_limit_is_marked_on_the_compare_page(ml_engineer, client):
    from annotate.models import Answer

    client.force_login(ml_engineer)
    campaign = version_chain_rounds(versions=2, prompts=2)[0].campaign
    v1 = PolicyVersion.objects.get(campaign=campaign, version=1)
    cut = Answer.objects.filter(policy_version=v1, sample_index=0).order_by("prompt_id").first()
    cut.metadata = {"truncated": True}
    cut.save()
    html = client.get(f"/console/campaigns/{campaign.pk}/compare/").content.decode()
    assert html.count('class="truncated-note"') == 1
    pair = html.split(f'data-prompt="{cut.prompt.external_id}"')[1].split("</section>")[0]
    right = pair.split('class="answer answer-b"')[1]
    assert "… cut at the token limit" in right and "cut at the token limit" not in pair.split('class="answer answer-b"')[0]
