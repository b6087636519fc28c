"""A benchmark's data, seeded through the project's services and models
without any ML: annotator accounts with API tokens, and campaigns whose
rounds are open as training would leave them (fake policy files, given
answers). Call inside a configured Django (django.setup()): bench/load.py's
seeding subprocess, bench/console_pages.py."""
from __future__ import annotations

import hashlib
import json

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token

from annotate.models import Answer, Campaign, PolicyVersion, Round
from annotate.services.campaigns import campaign_create
from annotate.services.memberships import memberships_add
from annotate.services.prompts import prompts_import
from annotate.services.rounds import round_open

User = get_user_model()


def users_create(names: list[str], *, roles: list[str]) -> list[User]:
    """Users with these roles (group names) and an API token each, in a few
    bulk statements: hundreds of accounts in a second. Their password is
    unusable, hashed once for all: the benchmarks authenticate with tokens."""
    groups = [Group.objects.get_or_create(name=role)[0] for role in roles]
    password = make_password(None)
    User.objects.bulk_create([User(username=name, password=password) for name in names])
    users = list(User.objects.filter(username__in=names).order_by("pk"))
    User.groups.through.objects.bulk_create(
        [User.groups.through(user_id=u.pk, group_id=g.pk) for u in users for g in groups]
    )
    Token.objects.bulk_create([Token(user=u, key=Token.generate_key()) for u in users])
    return users


def campaign_seed(*, name: str, prompts: list[dict], overlap: int, versions: int = 1,
                  annotators: list[str] = (), rank_k: int = 2) -> list[Round]:
    """An active campaign made by the services an admin's calls use (create,
    prompt import, pool), with rounds 0 to versions - 1 open as training
    leaves them: round 0 compares two answers of v0, round i the answer of
    v_i with v_(i-1)'s. `prompts`: {"external_id", "prompt", "answers"},
    the answers in that order (v0's two, then one per later version).
    `rank_k` 3 or 4: a campaign ranking k-sets; round 0 only (versions=1),
    v0's k answers given.
    Answers are bulk-created, so thousands of prompts are cheap."""
    campaign = campaign_create(
        name=name, base_model="bench: answers are stored, no model runs", overlap=overlap,
        comparisons_per_round=len(prompts), auto_train=False, rank_k=rank_k,
    )
    if rank_k > 2 and versions != 1:
        raise ValueError("campaign_seed seeds a ranking campaign's round 0 only: versions=1")
    jsonl = "\n".join(json.dumps({"external_id": p["external_id"], "prompt": p["prompt"]}) for p in prompts)
    prompts_import(campaign=campaign, data=jsonl.encode())
    chain: list[PolicyVersion] = []
    for v in range(versions):
        path = f"/nonexistent/store/campaign-{campaign.pk}/policy-v{v}"
        chain.append(PolicyVersion.objects.create(campaign=campaign, version=v, parent=chain[-1] if chain else None,
                                                  path=path, sha256=hashlib.sha256(path.encode()).hexdigest()))
    stored = {p.external_id: p for p in campaign.prompts.all()}
    samples = [(chain[0], s) for s in range(max(2, rank_k))] + [(version, 0) for version in chain[1:]]
    Answer.objects.bulk_create(
        [Answer(prompt=stored[p["external_id"]], policy_version=version, sample_index=sample, text=text)
         for p in prompts for (version, sample), text in zip(samples, p["answers"], strict=True)],
        batch_size=2000,
    )
    rounds = [round_open(campaign=campaign, index=0, candidate=chain[0], baseline=chain[0])]
    for v in range(1, versions):
        rounds.append(round_open(campaign=campaign, index=v, candidate=chain[v], baseline=chain[v - 1]))
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.ACTIVE)
    if annotators:
        memberships_add(campaign=campaign, usernames=list(annotators))
    return rounds
