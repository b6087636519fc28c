"""factory_boy factories for the annotate models, and `open_round`, which
builds a collecting round without any ML (fake policy files, canned answers)."""
import hashlib
import random
from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group
from django.db.models import Count, OuterRef, Subquery
from django.utils import timezone
from rest_framework.authtoken.models import Token

from annotate.models import (
    Answer, Campaign, Comparison, ExternalModel, PolicyVersion, Prompt, Rating, RewardModelVersion, Round, TrainingRun,
)
from annotate.services.rounds import round_open

User = get_user_model()


class UserFactory(factory.django.DjangoModelFactory):
    """A user with the given roles (group names) and an API token.

    The password is unusable: tests authenticate with the token, and skipping
    the password hash keeps creating thirty annotators fast."""

    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.LazyFunction(lambda: make_password(None))  # unusable, and no hashing

    @factory.post_generation
    def roles(self, create, extracted, **kwargs):
        if create and extracted:
            # The groups come from migration 0002; get_or_create keeps the
            # factory usable if a test flushed them.
            self.groups.set([Group.objects.get_or_create(name=role)[0] for role in extracted])

    @factory.post_generation
    def token(self, create, extracted, **kwargs):
        if create:
            Token.objects.get_or_create(user=self)


class CampaignFactory(factory.django.DjangoModelFactory):
    """An active campaign. auto_train is off by default so that a test that
    fills a round never starts a (torch) training run by accident."""

    class Meta:
        model = Campaign
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"campaign {n}")
    instructions = "Pick the more helpful answer."
    overlap = 2
    comparisons_per_round = 64
    lease_ttl_seconds = 600
    base_model = "fake/base-model"
    auto_train = False
    status = Campaign.Status.ACTIVE

    @factory.post_generation
    def annotators(self, create, extracted, **kwargs):
        if create and extracted:
            self.annotators.add(*extracted)


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    campaign = factory.SubFactory(CampaignFactory)
    external_id = factory.Sequence(lambda n: f"p{n}")
    text = factory.Sequence(lambda n: f"Question {n}: what colour is the sky?")


class PolicyVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PolicyVersion

    campaign = factory.SubFactory(CampaignFactory)
    version = 0
    path = factory.LazyAttribute(lambda o: f"/nonexistent/store/campaign-{o.campaign.pk}/policy-v{o.version}")
    sha256 = factory.LazyAttribute(lambda o: hashlib.sha256(o.path.encode()).hexdigest())


class AnswerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Answer

    prompt = factory.SubFactory(PromptFactory)
    policy_version = factory.SubFactory(PolicyVersionFactory)
    sample_index = 0
    text = factory.LazyAttribute(
        lambda o: f"answer {o.sample_index} of v{o.policy_version.version} to prompt {o.prompt.external_id}"
    )


class ExternalModelFactory(factory.django.DjangoModelFactory):
    """A model whose answers were imported (no endpoint, no key)."""

    class Meta:
        model = ExternalModel

    campaign = factory.SubFactory(CampaignFactory)
    name = factory.Sequence(lambda n: f"model-{n}")
    kind = ExternalModel.Kind.IMPORTED


def external_answers(model: ExternalModel, prompts, text=None) -> list[Answer]:
    """The external model's first answer to each prompt, bulk-created.
    `text(model, prompt)` -> the answer (default: names both)."""
    text = text or (lambda m, p: f"{m.name} answers {p.external_id}")
    return Answer.objects.bulk_create(
        Answer(prompt=p, external_model=model, sample_index=0, text=text(model, p)) for p in prompts
    )


def evaluation_campaign(*, models: int = 4, prompts: int = 10, annotators=(), text=None, **campaign_fields):
    """A draft evaluation campaign (no base model) with `prompts` prompts and
    `models` imported external models that answered every one (`text` as in
    external_answers). Returns (campaign, [models])."""
    campaign_fields.setdefault("status", Campaign.Status.DRAFT)
    campaign = CampaignFactory(
        kind=Campaign.Kind.EVALUATION, base_model="", annotators=list(annotators), **campaign_fields
    )
    rows = Prompt.objects.bulk_create(
        Prompt(campaign=campaign, external_id=f"q{i}", text=f"Question {i}?") for i in range(prompts)
    )
    made = [ExternalModelFactory(campaign=campaign, name=f"model-{chr(ord('a') + n)}") for n in range(models)]
    for model in made:
        external_answers(model, rows, text=text)
    return campaign, made


def open_round(*, prompts: int = 4, annotators=(), **campaign_fields) -> Round:
    """Round 0 of a fresh campaign, as the bootstrap run leaves it: v0 (fake
    files) answered every prompt twice, and round_open paired the two samples
    (rank_k=3 or 4 in campaign_fields: k samples, in k-sets).

    `campaign_fields` go to CampaignFactory (overlap=3, lease_ttl_seconds=...)."""
    campaign_fields.setdefault("comparisons_per_round", prompts)
    campaign = CampaignFactory(annotators=list(annotators), **campaign_fields)
    v0 = PolicyVersionFactory(campaign=campaign, version=0)
    for prompt in PromptFactory.create_batch(prompts, campaign=campaign):
        for sample in range(max(2, campaign.rank_k)):
            AnswerFactory(prompt=prompt, policy_version=v0, sample_index=sample)
    return round_open(campaign=campaign, index=0, candidate=v0, baseline=v0)


def next_k_set_round(round0: Round) -> Round:
    """Round 1 after `round0` of a k-set campaign (open_round with rank_k):
    v1 answered each prompt k - 1 times, and round_open ranks those with
    v0's first answer."""
    campaign = round0.campaign
    v1 = PolicyVersionFactory(campaign=campaign, version=1, parent=round0.candidate)
    for prompt in campaign.prompts.all():
        for sample in range(campaign.rank_k - 1):
            AnswerFactory(prompt=prompt, policy_version=v1, sample_index=sample)
    return round_open(campaign=campaign, index=1, candidate=v1, baseline=round0.candidate)


def version_chain_rounds(*, versions: int, prompts: int, annotators=(), **campaign_fields) -> list[Round]:
    """Rounds 0..versions-1 of a fresh campaign, as training leaves them: round
    0 compares two samples of v0, round i the answers of v_i with those of
    v_(i-1). Prompts and answers are bulk-created, so hundreds are cheap."""
    campaign_fields.setdefault("comparisons_per_round", prompts)
    campaign = CampaignFactory(annotators=list(annotators), **campaign_fields)
    chain = []
    for v in range(versions):
        chain.append(PolicyVersionFactory(campaign=campaign, version=v, parent=chain[-1] if chain else None))
    rows = Prompt.objects.bulk_create(
        Prompt(campaign=campaign, external_id=f"p{i}", text=f"Question {i}?") for i in range(prompts)
    )
    Answer.objects.bulk_create(
        Answer(prompt=p, policy_version=v, sample_index=s, text=f"answer {s} of v{v.version} to {p.external_id}")
        for p in rows
        for v in chain
        for s in ((0, 1) if v.version == 0 else (0,))
    )
    rounds = [round_open(campaign=campaign, index=0, candidate=chain[0], baseline=chain[0])]
    for v in range(1, versions):
        rounds.append(round_open(campaign=campaign, index=v, candidate=chain[v], baseline=chain[v - 1]))
    return rounds


def ratings_bulk_create(rows) -> list[Rating]:
    """Store ratings directly, skipping leases and checks, for tests of what is
    computed from ratings. `rows`: dicts of Rating fields (comparison or
    comparison_id, annotator or annotator_id, choice, strength, ...).
    Keeps each comparison's rating_count."""
    ratings = Rating.objects.bulk_create((Rating(**row) for row in rows), batch_size=2000)
    counts = (
        Rating.objects.filter(comparison=OuterRef("pk")).order_by().values("comparison").annotate(n=Count("pk")).values("n")
    )
    Comparison.objects.filter(pk__in={r.comparison_id for r in ratings}).update(rating_count=Subquery(counts))
    return ratings


def iso(t) -> str:
    return t.isoformat()


def _stage(queued, started, seconds):
    return {"status": "succeeded", "queued_at": iso(queued), "started_at": iso(started),
            "finished_at": iso(started + timedelta(seconds=seconds)), "seconds": seconds}


def loop_campaign_with_history(annotators, *, versions=3, prompts=6, seed=0):
    """Rounds 0..versions-1 (round i: v_i against v_(i-1)), rated by
    `annotators` at random; every round but the last closed, with a
    finished train run (stage times), a reward model (held-out metrics) and
    the next version's KL."""
    rounds = version_chain_rounds(versions=versions, prompts=prompts, annotators=annotators, overlap=2, kl_budget=1.0)
    campaign = rounds[0].campaign
    rng = random.Random(seed)
    ratings_bulk_create(
        {"comparison_id": c.pk, "annotator": a, "choice": rng.choice(["A", "A", "B", "tie", "both_bad"])}
        for r in rounds for c in r.comparisons.all() for a in annotators
    )
    t0 = timezone.now() - timedelta(hours=10 * versions)
    for i, r in enumerate(rounds):
        opened = t0 + timedelta(hours=10 * i)
        closed = opened + timedelta(hours=2 + i) if i < versions - 1 else None
        Round.objects.filter(pk=r.pk).update(opened_at=opened, closed_at=closed,
                                             status="done" if closed else "collecting")
        if closed is None:
            continue
        start = closed + timedelta(seconds=30)
        stages = {
            "snapshot": _stage(closed, closed + timedelta(seconds=5 + i), 3),
            "reward": _stage(start, start + timedelta(seconds=40), 600 + 60 * i),
            "policy": _stage(start + timedelta(hours=1), start + timedelta(hours=1, seconds=2), 1200),
            "generate": _stage(start + timedelta(hours=2), start + timedelta(hours=2), 300),
            "open": _stage(start + timedelta(hours=3), start + timedelta(hours=3, seconds=1), 2),
        }
        run = TrainingRun.objects.create(campaign=campaign, round=r, kind="train", status="succeeded", stage="open",
                                         stages=stages)
        buckets = {"eval/reward/pairs_margin_0-0.5": 10 + i, "eval/reward/pairs_margin_0.5-1": 6,
                   "eval/reward/pairs_margin_1-2": 3, "eval/reward/pairs_margin_2-inf": 1}
        RewardModelVersion.objects.create(campaign=campaign, version=i + 1, path=f"/x/reward-{i}", sha256="0" * 64,
                                          training_run=run, metrics={"eval/reward/accuracy": 0.6 + 0.05 * i, **buckets})
        PolicyVersion.objects.filter(campaign=campaign, version=i + 1).update(
            training_run=run, metrics={"policy/kl": 0.2 * (i + 1) + 0.05, "policy/kl_to_base": 0.2 * (i + 1)}
            if i % 2 else {"policy/kl": 0.3 * (i + 1)}
        )
    return campaign
