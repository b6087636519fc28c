"""Two campaigns with everything an API can point at, for the tests that
call every operation of the schema (test_access_walk.py, test_schemathesis.py).

Campaign X: annotators A and B in its pool, overlap 1. A rated one
comparison (with a reason only A may ever read back, and a pending
demonstration to review) and holds a live lease on another. Campaign Y: administered by `admin_of_other`, with its own
annotator, lease and rating. Each campaign has a published policy version,
a reward model version, an SFT model version, a running training run with
a dataset snapshot and a demonstrations snapshot, and an export, so downloads answer 200 where they are allowed; and two
endpoints, one with a generation job under way.

`ids[target]` fills the path parameters of an operation for target "X" or
"Y"; `secrets[target]` are strings from that campaign that must not reach
the wrong eyes (see _campaign); "api_key" are its endpoints' keys, which
no answer to anyone may carry."""
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth import get_user_model

from annotate.models import (
    Demonstration, ExternalModel, GenerationJob, Lease, RewardModelVersion, Role, SFTModelVersion, TrainingRun,
)
from annotate.services.leases import comparison_lease_next
from annotate.services.exports import export_create
from annotate.services.ratings import rating_create
from tests.factories import UserFactory, open_round

User = get_user_model()

PRINCIPALS = ("anonymous", "annotator_a", "annotator_b", "admin_of_other", "staff")
TARGETS = ("X", "Y")
PASSWORD_A = "walk-the-schema-a"


@dataclass
class World:
    users: dict[str, User | None]
    ids: dict[str, dict[str, object]]
    secrets: dict[str, dict[str, list[str]]] = field(default_factory=dict)


def _published(store, tmp: Path, name: str, files: dict[str, bytes]):
    src = tmp / f"src-{uuid.uuid4().hex}"
    src.mkdir(parents=True)
    for rel, body in files.items():
        (src / rel).write_bytes(body)
    return store.publish(src, name)


def _campaign(*, label: str, annotators, admins, store, tmp: Path, staff) -> tuple[dict, dict[str, list[str]]]:
    """One campaign's objects: (path ids, secrets). The first annotator rates
    one comparison and holds a live lease on another. Secrets: "rating", the
    reason and idempotency key of that rating (only its annotator, the
    campaign's admins, engineers and staff may read them); "campaign", its
    instructions (nobody outside the campaign may)."""
    instructions = f"instructions-of-{label}-{uuid.uuid4().hex[:8]}"
    round_ = open_round(prompts=4, overlap=1, annotators=annotators, name=f"Campaign {label}", instructions=instructions)
    campaign = round_.campaign
    campaign.admins.add(*admins)
    rater = annotators[0]
    reason = f"reason-only-{rater.username}-reads-{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4()
    rated = comparison_lease_next(annotator=rater, campaign=campaign)
    rating, _ = rating_create(
        annotator=rater, comparison_id=rated.comparison_id, choice="A", strength=2, reason=reason, idempotency_key=key
    )
    held = comparison_lease_next(annotator=rater, campaign=campaign)
    assert held is not None and held.status == Lease.Status.LEASED

    v0 = campaign.policy_versions.get(version=0)
    policy = _published(store, tmp, f"campaign-{campaign.pk}/policy-v0", {"model.safetensors": b"w" * 64})
    v0.path, v0.sha256 = policy.path, policy.sha256
    v0.save(update_fields=["path", "sha256"])
    reward_folder = _published(store, tmp, f"campaign-{campaign.pk}/reward-r1", {"model.safetensors": b"r" * 64})
    reward = RewardModelVersion.objects.create(
        campaign=campaign, version=1, path=reward_folder.path, sha256=reward_folder.sha256
    )
    snapshot = tmp / f"preferences-{label}.jsonl"
    snapshot.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    dataset = store.publish_file(snapshot, f"campaign-{campaign.pk}/datasets/run-1")
    conversations = tmp / f"conversations-{label}.jsonl"
    conversations.write_text('{"messages": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "a"}]}\n')
    sft_dataset = store.publish_file(conversations, f"campaign-{campaign.pk}/datasets/run-1-sft")
    run = TrainingRun.objects.create(
        campaign=campaign, round=round_, kind=TrainingRun.Kind.TRAIN, status=TrainingRun.Status.RUNNING,
        stage="reward", dataset_path=dataset.path, dataset_sha256=dataset.sha256,
        sft_dataset_path=sft_dataset.path, sft_dataset_sha256=sft_dataset.sha256,
    )
    sft_folder = _published(store, tmp, f"campaign-{campaign.pk}/sft-s1", {"model.safetensors": b"s" * 64})
    sft = SFTModelVersion.objects.create(
        campaign=campaign, version=1, start=v0, path=sft_folder.path, sha256=sft_folder.sha256, training_run=run,
        dataset_path=sft_dataset.path, dataset_sha256=sft_dataset.sha256,
    )
    demonstration = Demonstration.objects.create(
        comparison_id=rating.comparison_id, rating=rating, annotator=rater, origin="a", text="Better.",
        submitted_text="Better.", diff_chars=7,
    )
    export = export_create(campaign=campaign, kind="ratings", format="jsonl", user=staff)
    # Two endpoints: one free (to change, run, delete), one with a job under way (to cancel).
    api_key = f"sk-walk-{label}-{uuid.uuid4().hex}"
    endpoint = ExternalModel.objects.create(campaign=campaign, name="free", kind=ExternalModel.Kind.ENDPOINT,
                                            base_url="http://127.0.0.1:8000/v1", model_name="m", api_key=api_key)
    busy = ExternalModel.objects.create(campaign=campaign, name="busy", kind=ExternalModel.Kind.ENDPOINT,
                                        base_url="http://127.0.0.1:8000/v1", model_name="m",
                                        api_key=api_key + "-busy")
    job = GenerationJob.objects.create(model=busy, status=GenerationJob.Status.RUNNING, prompts_total=4)
    ids = {
        "campaign_id": campaign.pk,
        "comparison_id": held.comparison_id,  # leased, live, by the first annotator
        "run_id": run.pk,
        "policy_version_id": v0.pk,
        "reward_version_id": reward.pk,
        "sft_version_id": sft.pk,
        "demonstration_id": demonstration.pk,
        "export_id": export.pk,
        "endpoint_id": endpoint.pk,
        "job_id": job.pk,
        "member": rater.username,
        "admin": admins[0].username,
    }
    return ids, {"rating": [reason, str(key)], "campaign": [instructions], "api_key": [api_key, api_key + "-busy"]}


def build_world(*, store, tmp: Path) -> World:
    """`store`: the rlhf ModelStore at settings.MODEL_STORE (a temporary one)."""
    a = UserFactory(username="ann-a", roles=[Role.ANNOTATOR])
    a.set_password(PASSWORD_A)
    a.save(update_fields=["password"])
    b = UserFactory(username="ann-b", roles=[Role.ANNOTATOR])
    admin_of_other = UserFactory(username="admin-y", roles=[Role.CAMPAIGN_ADMIN])
    admin_x = UserFactory(username="admin-x", roles=[Role.CAMPAIGN_ADMIN])
    staff = UserFactory(username="root", is_staff=True)  # in no role group: staff alone
    ann_y = UserFactory(username="ann-y", roles=[Role.ANNOTATOR])
    ids_x, secrets_x = _campaign(label="X", annotators=[a, b], admins=[admin_x], store=store, tmp=tmp, staff=staff)
    ids_y, secrets_y = _campaign(label="Y", annotators=[ann_y], admins=[admin_of_other], store=store, tmp=tmp, staff=staff)
    return World(
        users={"anonymous": None, "annotator_a": a, "annotator_b": b, "admin_of_other": admin_of_other, "staff": staff},
        ids={"X": ids_x, "Y": ids_y},
        secrets={"X": secrets_x, "Y": secrets_y},
    )
