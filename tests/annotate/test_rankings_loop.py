"""A loop campaign that ranks k answers, through the real stage functions
with a tiny model (no worker): the generate stage samples k answers per
prompt for round 0 and k - 1 of the new policy later, and the open stage
makes k-sets of them."""
import pytest

from annotate.models import Answer, PolicyVersion, Prompt, TrainingRun
from annotate.training import steps
from annotate.training.reporter import Reporter
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny_model(tmp_path_factory) -> str:
    from rlhf.tiny import build_tiny_model

    texts = ["Why is the sky blue?", "Name a fruit.", "Rayleigh scattering.", "A banana."] * 20
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts, seed=0)


def test_generate_and_open_stages_make_k_sets_of_k_answers(tiny_model, settings, tmp_path):
    settings.MODEL_STORE = str(tmp_path / "store")
    campaign = CampaignFactory(base_model=tiny_model, rank_k=3, comparisons_per_round=2, overlap=1,
                               training_config={"generate": {"max_new_tokens": 4}})
    prompts = Prompt.objects.bulk_create(
        Prompt(campaign=campaign, external_id=f"q{i}", text=text)
        for i, text in enumerate(["Why is the sky blue?", "Name a fruit."])
    )
    bootstrap = TrainingRun.objects.create(campaign=campaign, kind=TrainingRun.Kind.BOOTSTRAP,
                                           config=campaign.training_config)
    # round 0: k samples of the base model per prompt, in k-sets
    steps.stage_import(bootstrap, Reporter(bootstrap, "import"))
    steps.stage_generate_round0(bootstrap, Reporter(bootstrap, "generate"))
    v0 = PolicyVersion.objects.get(campaign=campaign, version=0)
    for prompt in prompts:
        assert sorted(prompt.answers.values_list("sample_index", flat=True)) == [0, 1, 2]
    steps.stage_open_round0(bootstrap, Reporter(bootstrap, "open"))
    round0 = campaign.rounds.get(index=0)
    for comparison in round0.comparisons.all():
        shown = Answer.objects.filter(pk__in=comparison.answers)
        assert sorted((a.policy_version_id, a.sample_index) for a in shown) == [(v0.pk, 0), (v0.pk, 1), (v0.pk, 2)]
    # a later round: k - 1 answers of the new policy (here the same weights as v1) and v0's first
    train = TrainingRun.objects.create(campaign=campaign, round=round0, kind=TrainingRun.Kind.TRAIN,
                                       config=campaign.training_config)
    v1 = PolicyVersion.objects.create(campaign=campaign, version=1, parent=v0, path=v0.path, sha256=v0.sha256,
                                      training_run=train)
    steps.stage_generate_next(train, Reporter(train, "generate"))
    for prompt in prompts:
        assert sorted(prompt.answers.filter(policy_version=v1).values_list("sample_index", flat=True)) == [0, 1]
    steps.stage_open_next(train, Reporter(train, "open"))
    for comparison in campaign.rounds.get(index=1).comparisons.all():
        shown = Answer.objects.filter(pk__in=comparison.answers)
        assert sorted((a.policy_version_id, a.sample_index) for a in shown) == [(v0.pk, 0), (v1.pk, 0), (v1.pk, 1)]
