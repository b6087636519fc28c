"""What is already in the model store that a new campaign can start from:
the base models published under the store's `base/` (make run imports
SmolLM2 there) and the newest policy version of each campaign the user may
read. A campaign whose base model is a published store folder points at it
instead of copying it (annotate/training/steps.py, stage_import)."""
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Max, OuterRef, Subquery

from annotate.models import PolicyVersion
from annotate.selectors.access import campaigns_readable_by
from rlhf.store import MANIFEST

User = get_user_model()

BASE_DIR = "base"
# A datalist longer than this helps no one; the newest campaigns first.
MAX_CHOICES = 50


def base_model_choices(*, user: User, roles: set[str] | None = None) -> list[dict]:
    """[{"path", "label"}]: the published folders under <store>/base/ (by
    name), then each readable campaign's newest policy version (newest
    campaign first), each path once."""
    choices, seen = [], set()
    base = Path(settings.MODEL_STORE) / BASE_DIR
    if base.is_dir():
        for folder in sorted(base.iterdir()):
            if (folder / MANIFEST).is_file():
                choices.append({"path": str(folder), "label": f"{folder.name} (base model in the store)"})
                seen.add(str(folder))
    campaigns = campaigns_readable_by(user=user, roles=roles)
    newest = (
        PolicyVersion.objects.filter(campaign=OuterRef("campaign"))
        .values("campaign").annotate(top=Max("version")).values("top")
    )
    versions = (
        PolicyVersion.objects.filter(campaign__in=campaigns, version=Subquery(newest))
        .select_related("campaign").order_by("-campaign__created_at")[:MAX_CHOICES]
    )
    for v in versions:
        if v.path in seen:
            continue
        seen.add(v.path)
        choices.append({"path": v.path, "label": f"v{v.version} of '{v.campaign.name}'"})
    return choices
