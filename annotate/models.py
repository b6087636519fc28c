"""The data of the human-feedback loop (docs/architecture.md, "The data").

No logic here: writes go through annotate/services, reads through
annotate/selectors. Constraints that protect the invariants live in the
database, so that no code path can break them. One file over the usual
length: the data model is read whole, its foreign keys point both ways
across it, and the migrations are generated from it.
"""
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Role(models.TextChoices):
    """Django groups that carry the three kinds of user."""

    ANNOTATOR = "annotator"
    CAMPAIGN_ADMIN = "campaign_admin"
    ML_ENGINEER = "ml_engineer"


class Campaign(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"  # prompts being imported, no round open yet
        ACTIVE = "active"
        PAUSED = "paused"
        ARCHIVED = "archived"

    class Method(models.TextChoices):
        RLOO = "rloo", "RLOO against the reward model"
        DPO = "dpo", "DPO straight from the human pairs"

    class Kind(models.TextChoices):
        LOOP = "loop", "Loop: ratings train the policy, which answers the next round"
        EVALUATION = "evaluation", "Evaluation: rate the answers of several models, no training"

    name = models.CharField(max_length=200, unique=True)
    instructions = models.TextField(blank=True, default="")
    overlap = models.PositiveSmallIntegerField(default=3, help_text="k: ratings wanted per comparison")
    comparisons_per_round = models.PositiveIntegerField(default=64)
    lease_ttl_seconds = models.PositiveIntegerField(default=600)
    base_model = models.CharField(max_length=500, help_text="local path or hub id of the base policy")
    # Training settings as stored per run: {"reward": {...}, "policy": {...}, "generate": {...}}
    training_config = models.JSONField(default=dict, blank=True)
    method = models.CharField(max_length=20, choices=Method.choices, default=Method.RLOO)
    # How far (nats per answer: sequence KL on the policy's own answers) a
    # policy step may move the policy from the base model; a step stops and
    # keeps the last weights inside it (rlhf/kl.py). Null: no budget.
    kl_budget = models.FloatField(
        null=True, blank=True,
        help_text="KL budget in nats per answer between a new policy and the base model; empty = none",
    )
    # Start training by itself when every comparison of a round has k ratings.
    auto_train = models.BooleanField(default=True)

    class Demonstrations(models.TextChoices):
        OFF = "off", "Off: annotators only choose"
        OPTIONAL = "optional", "Optional: after choosing, annotators may edit the better answer or write one"
        BOTH_BAD = "both_bad", "Asked for on both bad: the page asks for a better answer when both are bad"

    # Demonstrations written on the rating page (Demonstration below).
    demonstrations = models.CharField(max_length=20, choices=Demonstrations.choices, default=Demonstrations.OFF)
    demonstration_reviews = models.PositiveSmallIntegerField(
        default=1, help_text="accepting reviews (by people other than the author) a demonstration needs: 1 or 2"
    )
    # An edited better answer is also a preference (edit > the answer it came
    # from, edit > the other answer): whether those pairs join the reward data.
    demonstration_pairs = models.BooleanField(default=False)

    class SFTSchedule(models.TextChoices):
        EVERY_ROUND = "every_round", "Every round that brings accepted demonstrations not yet trained on"
        EVERY_N = "every_n", "Every N rounds (rounds N-1, 2N-1, ...), when there are new accepted demonstrations"
        TRIGGER = "trigger", "Only when a training trigger asks for it (sft: true)"

    class SFTAnchor(models.TextChoices):
        BASE = "base", "The base model stays the policy step's KL anchor"
        SFT = "sft", "The latest SFT model becomes the policy step's KL anchor"

    # When a train run's sft stage fine-tunes on the accepted demonstrations
    # (docs/training.md, "The sft stage"), and what the policy step is then
    # held close to.
    sft_schedule = models.CharField(max_length=20, choices=SFTSchedule.choices, default=SFTSchedule.EVERY_ROUND)
    sft_every_n = models.PositiveSmallIntegerField(default=2, help_text="with sft_schedule every_n: N")
    sft_anchor = models.CharField(max_length=10, choices=SFTAnchor.choices, default=SFTAnchor.BASE)

    class AspectTraining(models.TextChoices):
        OVERALL = "overall", "The reward model learns the overall choice only"
        HEADS = "heads", "A reward head per aspect, combined by aspect_weights"

    # Rubric aspects asked beside the overall choice (docs/annotators.md):
    # [{"name", "question", "key"}], checked by services/aspects.py; each
    # rating stores its judgments in Rating.aspects.
    aspects = models.JSONField(default=list, blank=True)
    aspects_required = models.BooleanField(default=False)
    aspect_training = models.CharField(max_length=10, choices=AspectTraining.choices, default=AspectTraining.OVERALL)
    # {"overall": w, "<aspect>": w}: the combination the reward model's score
    # is (rlhf RewardConfig.aspect_weights); missing: overall 1, aspects 0.
    aspect_weights = models.JSONField(default=dict, blank=True)

    class Selection(models.TextChoices):
        RANDOM = "random", "Random: the campaign's prompts in turn, no model consulted"
        UNCERTAINTY = "uncertainty", "Uncertainty: the pairs the reward model's ensemble disagrees on most"
        SPREAD = "spread", "Spread: the prompts whose answers the reward model scores furthest apart"

    # How the generate stage chooses the next round's comparisons among
    # selection_pool times as many candidate prompts (docs/training.md,
    # "Selection"); a share selection_exploration of them stays random.
    # The names are rlhf.selection.STRATEGIES.
    selection = models.CharField(max_length=20, choices=Selection.choices, default=Selection.RANDOM)
    selection_exploration = models.FloatField(default=0.2, help_text="share of a round's picks drawn at random")
    selection_pool = models.PositiveSmallIntegerField(
        default=2, help_text="candidate prompts answered and scored per comparison the round opens with"
    )
    # Answers per comparison: 2 rates pairs; 3 or 4 ranks k-sets (Comparison.answers,
    # Rating.ranking). Read when a round opens, so a change applies to the next round.
    rank_k = models.PositiveSmallIntegerField(
        default=2, help_text="answers per comparison: 2 = pairs (A/B), 3 or 4 = rank k answers"
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.LOOP)
    # A loop campaign's fixed yardstick: a model outside the loop (imported
    # answers or an endpoint) that each round's candidate also meets, so that
    # progress is read against something that does not move.
    reference_model = models.ForeignKey(
        "ExternalModel", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    annotators = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="campaigns", blank=True
    )
    # Gold pairs: the share of each round's comparisons drawn from the gold
    # pool, and the gold accuracy under which an annotator is paused (once
    # they have answered gold_min_count gold pairs).
    gold_frequency = models.FloatField(default=0.1)
    gold_min_accuracy = models.FloatField(default=0.6)
    gold_min_count = models.PositiveSmallIntegerField(default=5)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The campaign admins who manage this campaign; to anyone else in the
    # campaign_admin role it does not exist (404). The creator is the first;
    # staff add and remove others, and manage every campaign themselves.
    admins = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="administered_campaigns", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Prompt(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="prompts")
    external_id = models.CharField(max_length=200)
    # Plain text, or chat turns [{"role": ..., "content": ...}].
    text = models.TextField(blank=True, default="")
    turns = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "external_id"], name="prompt_unique_external_id")
        ]

    @property
    def content(self):
        """What the model is prompted with: chat turns if any, else the text."""
        return self.turns if self.turns else self.text


class Membership(models.Model):
    """An annotator in a campaign's pool, with their standing in it."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"  # gets no work; the reason is shown to them and to admins
        REMOVED = "removed"  # no longer in the pool; their ratings stay

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="memberships")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    paused_reason = models.TextField(blank=True, default="")
    # True when the gold-accuracy check paused them (not an admin).
    paused_automatically = models.BooleanField(default=False)
    daily_limit = models.PositiveIntegerField(null=True, blank=True, help_text="ratings a day; empty = no limit")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "annotate_campaign_annotators"  # the table the plain many-to-many had
        constraints = [
            models.UniqueConstraint(fields=["campaign", "annotator"], name="membership_unique_annotator")
        ]


class GoldPair(models.Model):
    """A pair with a known answer, in the campaign's gold pool; copies of it
    are mixed into each round as ordinary-looking comparisons."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="gold_pairs")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="gold_pairs")
    chosen = models.ForeignKey("Answer", on_delete=models.CASCADE, related_name="+")
    rejected = models.ForeignKey("Answer", on_delete=models.CASCADE, related_name="+")
    external_id = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "external_id"], name="goldpair_unique_external_id")
        ]


class TrainingRun(models.Model):
    class Kind(models.TextChoices):
        BOOTSTRAP = "bootstrap"  # import the base model, answer round 0
        TRAIN = "train"  # snapshot, reward, policy, generate, open next round

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="training_runs")
    round = models.ForeignKey("Round", null=True, blank=True, on_delete=models.CASCADE, related_name="training_runs")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    stage = models.CharField(max_length=20, default="", help_text="the stage running or next to run")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="tries of the current stage")
    progress = models.FloatField(default=0.0, help_text="0..1 within the current stage")
    # {stage name: record}, each record an annotate.training.stages.StageRecord
    # (the keys and what each records); written only through its helpers there.
    stages = models.JSONField(default=dict, blank=True)
    # Latest value of each metric name, and the history [{"stage", "step", "name": value...}].
    metrics = models.JSONField(default=dict, blank=True)
    metrics_history = models.JSONField(default=list, blank=True)
    config = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    celery_task_id = models.CharField(max_length=100, blank=True, default="")
    dataset_path = models.CharField(max_length=500, blank=True, default="")
    dataset_sha256 = models.CharField(max_length=64, blank=True, default="")
    # The sft stage's input (conversations.jsonl of the accepted demonstrations
    # not yet trained on); empty when the stage skipped.
    sft_dataset_path = models.CharField(max_length=500, blank=True, default="")
    sft_dataset_sha256 = models.CharField(max_length=64, blank=True, default="")
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Written every few seconds by the worker running a stage; a RUNNING run
    # whose heartbeat stopped lost its worker, and its stage is queued again.
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # One live training run per round: a second trigger (or a redelivered
            # round-complete task) finds the first instead of training twice.
            # A cancelled run steps aside so the round can be trained on again
            # with the ratings given since (training_run_cancel).
            models.UniqueConstraint(
                fields=["round", "kind"],
                condition=Q(round__isnull=False) & ~Q(status="cancelled"),
                name="run_one_per_round",
            ),
        ]


class PolicyVersion(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="policy_versions")
    version = models.PositiveIntegerField(help_text="0 is the base model")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    training_run = models.ForeignKey(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reward_model = models.ForeignKey(
        "RewardModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="policies"
    )
    metrics = models.JSONField(default=dict, blank=True)
    # The SFT model this version's policy step started from (its run's sft
    # stage); null when the step started from `parent` itself.
    sft_model = models.ForeignKey(
        "SFTModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="policies"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "version"], name="policy_unique_version")]


class SFTModelVersion(models.Model):
    """A model a train run's sft stage fine-tuned from `start` (the round's
    candidate) on accepted demonstrations. Not a PolicyVersion: it answers no
    round and meets nobody on a leaderboard; the policy step of the same run
    starts from it, and that policy (sft_model = this) is what the next round
    serves. Lineage: start -> this -> the policy version(s) pointing here."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="sft_versions")
    version = models.PositiveIntegerField()
    start = models.ForeignKey(PolicyVersion, on_delete=models.PROTECT, related_name="sft_children")
    path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    training_run = models.ForeignKey(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    dataset_path = models.CharField(max_length=500, blank=True, default="")
    dataset_sha256 = models.CharField(max_length=64, blank=True, default="")
    # Which accepted demonstrations it learned: those are "trained on" once a
    # policy started from it (a cancelled run's SFT model does not count).
    demonstration_ids = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "version"], name="sft_unique_version")]


class RewardModelVersion(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="reward_versions")
    version = models.PositiveIntegerField()
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    training_run = models.ForeignKey(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    dataset_sha256 = models.CharField(max_length=64, blank=True, default="")
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "version"], name="reward_unique_version")]


class ExternalModel(models.Model):
    """A model whose answers come from outside Ratchet's training: answers
    imported from a file, or asked of an OpenAI-compatible server (vLLM,
    SGLang, TGI, llama.cpp, hosted APIs). Rounds and leaderboards compare it
    with the campaign's policy versions and with other external models."""

    class Kind(models.TextChoices):
        IMPORTED = "imported"  # answers come in files
        ENDPOINT = "endpoint"  # answers are asked of base_url (chat completions)

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="external_models")
    name = models.CharField(max_length=200, help_text="how the campaign names it (imports' `model` column)")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # Endpoints only.
    base_url = models.URLField(max_length=500, blank=True, default="", help_text="e.g. http://host:8000/v1")
    model_name = models.CharField(max_length=200, blank=True, default="", help_text="the `model` the server is asked for")
    generation = models.JSONField(default=dict, blank=True, help_text="max_tokens, temperature, top_p, seed, ...")
    # Write-only: never returned by the API, shown in the console, exported,
    # logged or put in an error message (annotate/endpoints/).
    api_key = models.TextField(blank=True, default="")
    max_concurrency = models.PositiveSmallIntegerField(default=4, help_text="requests in flight at once")
    timeout_s = models.FloatField(default=120.0, help_text="seconds one request may take")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "name"], name="externalmodel_unique_name")]

    def __str__(self) -> str:
        return self.name


class GenerationJob(models.Model):
    """An endpoint answering a set of prompts (queue `endpoints`): progress,
    token usage and the prompts it could not get an answer for."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"  # every prompt answered
        FAILED = "failed"  # stopped: the endpoint is unusable (see error), or prompts kept failing
        CANCELLED = "cancelled"

    model = models.ForeignKey(ExternalModel, on_delete=models.CASCADE, related_name="jobs")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    samples = models.PositiveSmallIntegerField(default=1, help_text="answers wanted per prompt")
    # Null: every prompt of the campaign (as it is when each part of the job
    # starts); else the ids of the prompts asked, kept so a resumed job asks
    # the same subset.
    prompt_ids = models.JSONField(null=True, blank=True, help_text="the prompts asked; null for all of the campaign's")
    prompts_total = models.PositiveIntegerField(default=0)
    answered = models.PositiveIntegerField(default=0, help_text="answers stored, including those already there")
    failed = models.PositiveIntegerField(default=0, help_text="prompts given up on (GenerationFailure)")
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    requests = models.PositiveIntegerField(default=0, help_text="HTTP requests sent, retries included")
    error = models.TextField(blank=True, default="")
    celery_task_id = models.CharField(max_length=100, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)


class GenerationFailure(models.Model):
    """A prompt an endpoint kept failing on, with the server's last error:
    shown in the console, never silently dropped; a later job asks again."""

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="failures")
    prompt = models.ForeignKey("Prompt", on_delete=models.CASCADE, related_name="+")
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "prompt"], name="generationfailure_unique_prompt")]


class Round(models.Model):
    class Status(models.TextChoices):
        COLLECTING = "collecting"
        TRAINING = "training"
        FAILED = "failed"
        DONE = "done"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="rounds")
    index = models.PositiveIntegerField()
    # The policy whose answers are new in this round, and the one it is compared with
    # (round 0: the base model against itself, two samples each).
    # Null in an evaluation campaign's rounds, which pair the answers of
    # several models (annotate/services/evaluation.py).
    candidate = models.ForeignKey(
        PolicyVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="rounds_as_candidate"
    )
    baseline = models.ForeignKey(
        PolicyVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="rounds_as_baseline"
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.COLLECTING)
    # How its comparisons were chosen: the strategy used (random when the
    # campaign's fell back) and, when it fell back, why ("no reward model yet").
    selection_strategy = models.CharField(max_length=20, blank=True, default="")
    selection_note = models.TextField(blank=True, default="")
    opened_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "index"], name="round_unique_index")]


class Answer(models.Model):
    """One answer to a prompt: written by one of the campaign's policy
    versions, or brought from outside (gold pairs). Comparisons show two."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="answers")
    # Null for answers that came from outside (imported preference data,
    # gold pairs) rather than from one of the campaign's policies.
    policy_version = models.ForeignKey(
        PolicyVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="answers"
    )
    # Or the external model (imported, endpoint) that wrote it; never both.
    external_model = models.ForeignKey(
        ExternalModel, null=True, blank=True, on_delete=models.CASCADE, related_name="answers"
    )
    metadata = models.JSONField(default=dict, blank=True)
    sample_index = models.PositiveSmallIntegerField(default=0)
    text = models.TextField()
    sampling = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # A redelivered generate stage writes the same rows, not new ones.
            models.UniqueConstraint(
                fields=["prompt", "policy_version", "sample_index"], name="answer_unique_sample"
            ),
            # A re-import or a resumed endpoint job finds the answer it stored.
            models.UniqueConstraint(
                fields=["prompt", "external_model", "sample_index"],
                condition=Q(external_model__isnull=False),
                name="answer_unique_external_sample",
            ),
            models.CheckConstraint(
                condition=Q(policy_version__isnull=True) | Q(external_model__isnull=True),
                name="answer_one_author",
            ),
        ]


class Comparison(models.Model):
    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="comparisons")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="comparisons")
    # response_a is shown on the left as "A". Which policy wrote which side
    # is known from the responses; the annotator API never sends it.
    response_a = models.ForeignKey(Answer, on_delete=models.CASCADE, related_name="+")
    response_b = models.ForeignKey(Answer, on_delete=models.CASCADE, related_name="+")
    candidate_is_a = models.BooleanField(
        null=True, blank=True,
        help_text="the side the round's candidate policy was shown on; null where the pair has no candidate "
        "(evaluation rounds)",
    )
    gold_choice = models.CharField(max_length=10, blank=True, default="")
    # A k-set (rank_k > 2): the ids of its k answers in display order (shown
    # as 1..k); response_a and response_b are the first two of them, so every
    # pair-only path still reads two real answers. Empty for a pair.
    answers = models.JSONField(default=list, blank=True)
    # Ratings so far; kept with the rating in one transaction under a row lock.
    rating_count = models.PositiveSmallIntegerField(default=0)

    class SelectionReason(models.TextChoices):
        UNCERTAINTY = "uncertainty"  # the reward model's ensemble disagreed most on it
        SPREAD = "spread"  # its answers' rewards lay furthest apart
        EXPLORATION = "exploration"  # the random share of a selecting round
        RANDOM = "random"  # a round that chose no comparison by model
        GOLD = "gold"  # a copy of a gold pair
        REFERENCE = "reference"  # the candidate against the reference model, on a picked prompt

    # Why it is in its round, and the strategy's score of it (null where none
    # was computed); never sent to annotators. Empty: opened before selection
    # was recorded.
    selection_reason = models.CharField(max_length=12, choices=SelectionReason.choices, blank=True, default="")
    selection_score = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # Several pairs per prompt in a round: candidate against baseline and against the reference;
        # an evaluation round's pairs of models (annotate/services/evaluation.py).
        constraints = [
            models.UniqueConstraint(fields=["round", "prompt", "response_a", "response_b"], name="comparison_unique_pair")
        ]
        # The lease order (most ratings first, then id): a lease walks this
        # index and stops at the first comparison it may take, instead of
        # sorting the round's open comparisons on every next call.
        indexes = [models.Index(fields=["round", "-rating_count", "id"], name="comparison_lease_order")]


class Lease(models.Model):
    """A lease: the right of one annotator to rate one comparison until leased_until."""

    class Status(models.TextChoices):
        LEASED = "leased"
        DONE = "done"
        RELEASED = "released"  # expired or skipped: the slot went back to the pool

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="leases")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="leases")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.LEASED)
    leased_at = models.DateTimeField()
    leased_until = models.DateTimeField()
    # Why the annotator gave it back unrated (skip); empty otherwise.
    skip_reason = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["comparison", "annotator"], name="lease_unique_annotator")
        ]
        indexes = [models.Index(fields=["annotator", "status"], name="lease_annotator_status")]


class Rating(models.Model):
    class Choice(models.TextChoices):
        A = "A", "A is better"
        B = "B", "B is better"
        TIE = "tie", "Tie"
        BOTH_BAD = "both_bad", "Both bad"
        RANKING = "ranking", "A ranking of a k-set (see ranking)"

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="ratings")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ratings")
    choice = models.CharField(max_length=10, choices=Choice.choices)
    # 1 slightly, 2 clearly, 3 much better; null for tie and both bad.
    strength = models.PositiveSmallIntegerField(null=True, blank=True)
    # choice "ranking": the k-set's display positions (1..k) in tie groups,
    # best first, e.g. [[2], [1, 3], [4]]; null for a pair's rating.
    ranking = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True, default="")
    time_on_task_ms = models.PositiveIntegerField(null=True, blank=True)
    # {aspect name: "A" | "B" | "same"}: sides as `choice` records them (A is
    # the comparison's response_a, shown on the left); aspects not judged are absent.
    aspects = models.JSONField(default=dict, blank=True)
    idempotency_key = models.UUIDField(default=uuid.uuid4)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["comparison", "annotator"], name="rating_one_per_annotator"),
            models.UniqueConstraint(fields=["annotator", "idempotency_key"], name="rating_unique_idempotency_key"),
            models.CheckConstraint(
                condition=Q(strength__isnull=True) | Q(strength__gte=1, strength__lte=3),
                name="rating_strength_range",
            ),
            # A ranking and only a ranking carries one (services/ratings.py checks its shape).
            models.CheckConstraint(
                condition=Q(choice="ranking", ranking__isnull=False) | (~Q(choice="ranking") & Q(ranking__isnull=True)),
                name="rating_ranking_with_choice",
            ),
        ]


class Export(models.Model):
    """A data file pulled out of the platform: what was asked for (the
    filters), where the file lies and its sha256. The row is written only
    after the file is complete (as for model versions, invariant 4)."""

    class Kind(models.TextChoices):
        PREFERENCES = "preferences"  # TRL's prompt / chosen / rejected pairs, with weights
        RATINGS = "ratings"  # every rating, with its round, prompt and the versions on each side
        SFT = "sft"  # accepted demonstrations as TRL's SFT `messages`

    class Format(models.TextChoices):
        JSONL = "jsonl"
        CSV = "csv"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="exports")
    # Only this round's ratings; null: every round of the campaign.
    round = models.ForeignKey(Round, null=True, blank=True, on_delete=models.CASCADE, related_name="exports")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # Preferences only: "" the overall choice, an aspect's name, or "combined" (aspect_weights).
    aspect = models.CharField(max_length=60, blank=True, default="")
    format = models.CharField(max_length=10, choices=Format.choices)
    path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    rows = models.PositiveIntegerField()
    size_bytes = models.PositiveBigIntegerField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)


class Demonstration(models.Model):
    """A better answer written on the rating page with a rating: the chosen
    answer edited (origin "a" or "b"), or, on both bad, one written from
    nothing (origin ""). Reviewed in the console; only accepted ones are
    exported for supervised fine-tuning."""

    class Origin(models.TextChoices):
        A = "a", "edited from answer A"
        B = "b", "edited from answer B"
        NONE = "", "written from nothing"

    class Status(models.TextChoices):
        PENDING = "pending"
        ACCEPTED = "accepted"
        REJECTED = "rejected"

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="demonstrations")
    # Written in the same transaction as its rating (one per comparison and annotator).
    rating = models.OneToOneField(Rating, on_delete=models.CASCADE, related_name="demonstration")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="demonstrations")
    origin = models.CharField(max_length=1, choices=Origin.choices, blank=True, default="")
    # What trains: the author's text, or a reviewer's edit of it.
    text = models.TextField()
    submitted_text = models.TextField(help_text="the author's text, as submitted")
    time_on_task_ms = models.PositiveIntegerField(null=True, blank=True)
    # Characters inserted plus deleted against the origin answer (difflib);
    # the whole length for one written from nothing.
    diff_chars = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["comparison", "annotator"], name="demonstration_one_per_annotator"),
        ]
        indexes = [models.Index(fields=["status", "comparison"], name="demonstration_status")]


class DemonstrationReview(models.Model):
    """One reviewer's verdict on a demonstration: accept (perhaps with an
    edit of its text) or reject with a reason."""

    class Verdict(models.TextChoices):
        ACCEPT = "accept"
        REJECT = "reject"

    demonstration = models.ForeignKey(Demonstration, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    verdict = models.CharField(max_length=10, choices=Verdict.choices)
    reason = models.TextField(blank=True, default="")
    edited_text = models.TextField(blank=True, default="", help_text="the reviewer's edit; empty if none")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["demonstration", "reviewer"], name="demonstrationreview_one_per_reviewer"),
        ]
