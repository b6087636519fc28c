"""The runs list and the lineage show no metrics, and a run's metric history
can be megabytes (a campaign has a run per round): at 100 rounds reading
them made those pages miss their time target (bench/console_pages.py). They
must not read it; the run's own page does."""
import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests.browser.world import build_world

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("page", ["runs", "lineage"])
def test_runs_list_and_lineage_do_not_read_metric_histories(page):
    world = build_world()
    client = Client()
    client.force_login(world.lead)
    with CaptureQueriesContext(connection) as queries:
        answer = client.get(f"/console/campaigns/{world.campaign.pk}/{page}/")
    assert answer.status_code == 200
    assert f"/console/runs/{world.run.pk}/" in answer.content.decode()  # the runs are there
    assert not [q["sql"] for q in queries if "metrics_history" in q["sql"]]


def test_the_run_page_does_read_its_history():
    world = build_world()
    client = Client()
    client.force_login(world.lead)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(f"/console/runs/{world.run.pk}/").status_code == 200
    assert [q for q in queries if "metrics_history" in q["sql"]]  # the check above can see the column
