"""The demo that `make run` opens: three users, SmolLM2 in the model store,
and a campaign of real questions whose round 0 the base model answered."""
import json
from pathlib import Path

from django.conf import settings
from django.db import transaction

from annotate.models import Campaign, Role
from annotate.services.campaigns import (
    campaign_admins_add,
    campaign_annotators_add,
    campaign_create,
    campaign_start,
)
from annotate.services.prompts import prompts_import_jsonl
from annotate.services.users import user_create_or_update

DEMO_DATA = Path(settings.BASE_DIR) / "data" / "finegrainedrlhf_qa_feedback_dev.jsonl"
DEMO_NAME = "Demo: long-form questions (ASQA)"
DEMO_USERS = {
    "annotator": ("annotator-demo", [Role.ANNOTATOR]),
    "admin": ("admin-demo", [Role.CAMPAIGN_ADMIN]),
    "engineer": ("engineer-demo", [Role.ML_ENGINEER]),
}
# Sized so a full round trains in minutes on a laptop CPU: 8 comparisons a
# round, one rating each, short answers, a few small optimisation steps.
DEMO_TRAINING = {
    "reward": {"epochs": 2, "batch_size": 4, "lr": 1e-5, "max_length": 384},
    "policy": {"k": 4, "num_iterations": 2, "prompts_per_iteration": 8, "lr": 1e-6, "max_new_tokens": 64,
               "generation_batch_size": 32, "minibatch_size": 8},
    "generate": {"max_new_tokens": 96, "batch_size": 16},
}


def demo_prompts_jsonl(*, limit: int = 200) -> bytes:
    """The distinct questions of the shipped preference data, as prompt JSONL."""
    seen, lines = set(), []
    with DEMO_DATA.open(encoding="utf-8") as f:
        for line in f:
            question = json.loads(line)["prompt"]
            if question not in seen:
                seen.add(question)
                lines.append(json.dumps({"external_id": f"asqa-{len(seen)}", "prompt": question}))
            if len(lines) >= limit:
                break
    return "\n".join(lines).encode()


@transaction.atomic
def demo_users_create() -> dict[str, tuple[str, str]]:
    """{kind: (username, password)}; the password is the username: demo only."""
    logins = {}
    for kind, (username, roles) in DEMO_USERS.items():
        user_create_or_update(username=username, password=username, roles=roles)
        logins[kind] = (username, username)
    return logins


def demo_campaign_create(*, base_model: str, admin_username: str) -> Campaign:
    """Create the demo campaign (or return it) and start it: the start runs
    through the task queue, so the caller decides whether that is eager."""
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.get(username=admin_username)
    campaign = Campaign.objects.filter(name=DEMO_NAME).first()
    if campaign is None:
        campaign = campaign_create(
            name=DEMO_NAME,
            base_model=base_model,
            created_by=admin,
            instructions=(
                "Read the question, then both answers. Pick the answer that is more **correct**, "
                "**complete** and **to the point**. Use *tie* when they are equally good and *both bad* "
                "when neither answers the question."
            ),
            overlap=1,
            comparisons_per_round=8,
            training_config=DEMO_TRAINING,
        )
        prompts_import_jsonl(campaign=campaign, data=demo_prompts_jsonl())
        campaign_annotators_add(campaign=campaign, usernames=[DEMO_USERS["annotator"][0]])
    # The creator administers it already; a demo made before campaign admins
    # were per campaign gets its admin here.
    campaign_admins_add(campaign=campaign, usernames=[admin.username])
    campaign_start(campaign=campaign)
    return campaign
