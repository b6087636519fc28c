"""Simulated raters on a campaign: annotator accounts that rate through the
annotator API's own operations, with a chosen preference, noise, position
bias and speed.

For dry-running a campaign before paying annotators, for load, and to show
that the loop moves the model (bench/simulated_campaign.py). A simulated
rater is an ordinary user in the `annotator` group and the `simulated`
group, named `sim-c<campaign>-<label><i>`, added to the campaign's pool like
anyone else: the quality pages, gold pairs and auto-pause treat it as they
treat a person.

    python manage.py simulate_raters --campaign 1 --raters 3 --preference shorter --noise 0.1
    POST /api/campaigns/1/simulate/ {"raters": 3, "preference": "shorter", "noise": 0.1}   (staff)

Here: the config checked against the database, the raters' accounts, and
running them (simulation_run; simulation_start and simulation_step for the
Celery task behind the staff API). ServiceRaterClient lets them rate in this
process through the services the annotator API calls. The Django-free parts
are in annotate/simulation/: the preference and the rater's decision
(preference.py), the raters' loop and the config (raters.py), the client
interface and its HTTP implementation (clients.py).
"""
from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.http import Http404
from django.shortcuts import get_object_or_404
from rest_framework.authtoken.models import Token

from annotate.errors import Conflict, ServiceError, ValidationFailed
from annotate.models import Campaign, Comparison, Demonstration, DemonstrationReview, Rating, RewardModelVersion, Role
from annotate.selectors.access import campaigns_visible_to, user_roles
from annotate.selectors.leases import annotator_round_status, comparison_lease_payload
from annotate.selectors.rounds import campaign_current_round
from annotate.services.leases import comparison_lease_next_visible, lease_skip
from annotate.services.memberships import memberships_add
from annotate.services.demonstrations import demonstration_review
from annotate.services.ratings import rating_create
from annotate.services.users import user_create_or_update
from annotate.simulation.clients import HttpRaterClient, RaterClient
from annotate.simulation.preference import Judge, preference_parse, references_load
from annotate.simulation.raters import Simulation, SimulationConfig, SimulationResult, simulation_config_errors
from config.celery import task_named

User = get_user_model()

SIMULATED_GROUP = "simulated"
USERNAME_PREFIX = "sim-"
# The task that runs a simulation, by name (config.celery.task_named says why).
SIMULATE_TASK = "annotate.tasks.simulate_raters_task"


# --- the raters' client in this process ------------------------------------------------


class ServiceRaterClient:
    """A rater's calls answered by the services the annotator API calls
    (annotate/apis/annotator.py), in this process and without a request:
    the same checks in the same order (the token, the annotator role, the
    campaign or comparison visible to the rater, then the service), and the
    same statuses and bodies, a ServiceError as the API's {"error",
    "detail"}. What the Celery task behind the staff API uses."""

    # The API's answers (annotate/apis/errors.py) to a token DRF does not
    # accept, and IsAnnotator's refusal.
    UNKNOWN_TOKEN = {"error": "authentication_failed", "detail": "Invalid token."}
    INACTIVE = {"error": "authentication_failed", "detail": "User inactive or deleted."}
    NOT_ANNOTATOR = {"error": "permission_denied", "detail": "Only annotators can do this; ask a campaign admin to add you to the 'annotator' group."}

    def __init__(self, token: str):
        self.token = token

    def next(self, campaign_id: int) -> tuple[int, object]:
        def call(user):
            found = comparison_lease_next_visible(annotator=user, campaign_id=campaign_id, exclude=[])
            if found is None:
                raise Http404("No Campaign matches the given query.")  # as the API says
            campaign, lease = found
            if lease is None:
                return 204, None
            payload = comparison_lease_payload(comparison_id=lease.comparison_id, annotator=user, campaign=campaign)
            return 200, {**payload, "leased_until": _iso(lease.leased_until)}

        return self._answer(call, annotator=True)

    def rate(self, rating: dict) -> tuple[int, object]:
        def call(user):
            made, created = rating_create(
                annotator=user, comparison_id=rating["comparison"], choice=rating.get("choice", ""),
                strength=rating.get("strength"), reason=rating.get("reason", ""), ranking=rating.get("ranking"),
                time_on_task_ms=rating.get("time_on_task_ms"), idempotency_key=uuid.UUID(rating["idempotency_key"]),
                demonstration=rating.get("demonstration"), aspects=rating.get("aspects"),
                form=rating.get("form") or None,
            )
            return 201 if created else 200, {
                "id": made.pk, "comparison": made.comparison_id, "choice": made.choice, "strength": made.strength,
                "ranking": made.ranking,
                "reason": made.reason, "time_on_task_ms": made.time_on_task_ms, "aspects": made.aspects,
                "idempotency_key": str(made.idempotency_key), "created_at": _iso(made.created_at),
                "form_changed": getattr(made, "form_changed", False),
            }

        return self._answer(call, annotator=True)

    def skip(self, comparison_id: int, reason: str) -> tuple[int, object]:
        def call(user):
            get_object_or_404(Comparison.objects.filter(round__campaign__in=campaigns_visible_to(user=user)),
                              pk=comparison_id)
            lease = lease_skip(annotator=user, comparison_id=comparison_id, reason=reason)
            return 200, {"comparison": lease.comparison_id, "status": lease.status, "skip_reason": lease.skip_reason}

        return self._answer(call, annotator=True)

    def progress(self, campaign_id: int) -> tuple[int, object]:
        def call(user):
            campaign = get_object_or_404(campaigns_visible_to(user=user), pk=campaign_id)
            return 200, annotator_round_status(annotator=user, campaign=campaign)

        return self._answer(call, annotator=False)

    def _answer(self, call: Callable, *, annotator: bool) -> tuple[int, object]:
        # Read again on every call, as the API authenticates every request:
        # an admin may have deactivated the account or taken its role away.
        user = User.objects.filter(auth_token__key=self.token).first()
        if user is None:
            return 401, self.UNKNOWN_TOKEN
        if not user.is_active:
            return 401, self.INACTIVE
        if annotator and Role.ANNOTATOR not in user_roles(user=user):
            return 403, self.NOT_ANNOTATOR
        try:
            return call(user)
        except ServiceError as exc:  # as annotate/apis/errors.exception_handler answers it
            body = {"error": exc.code, "detail": exc.message}
            return exc.status_code, body if exc.details is None else {**body, "errors": exc.details}
        except Http404 as exc:
            return 404, {"error": "not_found", "detail": str(exc)}


def _iso(moment: dt.datetime) -> str:
    """A time as the API writes it (DRF: ISO 8601, UTC as 'Z')."""
    text = moment.astimezone(dt.timezone.utc).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def rater_client_factory(url: str | None) -> Callable[[str], RaterClient]:
    """token -> a rater's client: the API over HTTP at `url`, or the services in this process when url is None."""
    if url:
        return lambda token: HttpRaterClient(url, token)
    return ServiceRaterClient


# --- the config and the accounts --------------------------------------------------------


def simulated_username(*, campaign_id: int, label: str, index: int) -> str:
    return f"{USERNAME_PREFIX}c{campaign_id}-{label}{index}"


def simulation_config_build(*, campaign: Campaign, values: dict) -> tuple[SimulationConfig, str | None]:
    """A checked config and the reward model folder its preference needs (if
    any); ValidationFailed naming every bad field otherwise. Reads only."""
    errors = simulation_config_errors(values)
    if errors:
        raise ValidationFailed(
            "Bad simulation settings: " + "; ".join(f"{k} {v}" for k, v in errors.items()), details=errors
        )
    config = SimulationConfig(**values)
    if config.references and config.write and campaign.demonstrations == Campaign.Demonstrations.OFF:
        raise ValidationFailed(
            f"references: campaign '{campaign.name}' takes no demonstrations, so the raters could not write; "
            "set its demonstrations to both_bad or optional, or set write false (judge by the references only).",
            details={"references": "the campaign takes no demonstrations"},
        )
    preference = preference_parse(config.preference)
    reward_path = None
    if preference.kind == "reward":
        if preference.arg.isdigit():
            version = RewardModelVersion.objects.filter(pk=int(preference.arg), campaign=campaign).first()
            if version is None:
                raise ValidationFailed(
                    f"preference: no reward model version with id {preference.arg} in campaign '{campaign.name}'.",
                    details={"preference": f"no reward model version {preference.arg} in this campaign"},
                )
            reward_path = version.path
        else:
            folder = Path(preference.arg)
            if not (folder / "config.json").is_file():
                raise ValidationFailed(
                    f"preference: {preference.arg} is not a reward model folder (no config.json in it).",
                    details={"preference": "not a reward model folder (no config.json)"},
                )
            reward_path = str(folder)
    return config, reward_path


def simulated_raters_ensure(*, campaign: Campaign, config: SimulationConfig) -> list[tuple[str, str]]:
    """The pool's accounts, (username, API token) each: created when missing
    (annotator role, `simulated` group, an unusable password: they
    authenticate by token) and added to the campaign's pool through the pool
    service. A rater paused earlier stays paused. A username taken by someone
    who is not simulated is a Conflict: this never touches a person's account."""
    names = [simulated_username(campaign_id=campaign.pk, label=config.label, index=i) for i in range(config.raters)]
    with transaction.atomic():
        group, _ = Group.objects.get_or_create(name=SIMULATED_GROUP)
        existing = {u.username: u for u in User.objects.filter(username__in=names).prefetch_related("groups")}
        people = sorted(n for n, u in existing.items() if SIMULATED_GROUP not in {g.name for g in u.groups.all()})
        if people:
            raise Conflict(f"Usernames {', '.join(people)} belong to people, not simulated raters; use another label.",
                           details={"label": "taken by real accounts; use another label"})
        for name in names:
            if name not in existing:
                # password None: an unusable one (no hashing, nobody can log in
                # with it); simulated raters authenticate with their token.
                user, _ = user_create_or_update(username=name, password=None, roles=[Role.ANNOTATOR])
                user.groups.add(group)
        memberships_add(campaign=campaign, usernames=names)
        tokens = dict(Token.objects.filter(user__username__in=names).values_list("user__username", "key"))
        for name in names:
            if name not in tokens:
                tokens[name] = Token.objects.create(user=User.objects.get(username=name)).key
    return [(name, tokens[name]) for name in names]


def simulated_reviewers_ensure(*, campaign: Campaign, config: SimulationConfig) -> list:
    """The pool's reviewers, `sim-c<campaign>-<label>-review<j>`, as many as
    an accepted demonstration needs (the campaign's demonstration_reviews):
    in the `simulated` group, no role, no password and no token. They never
    sign in; they review in this process through the service the console's
    review form calls, so its rules (not the author, once each) hold."""
    names = [f"{USERNAME_PREFIX}c{campaign.pk}-{config.label}-review{j}"
             for j in range(max(1, campaign.demonstration_reviews))]
    with transaction.atomic():
        group, _ = Group.objects.get_or_create(name=SIMULATED_GROUP)
        reviewers = []
        for name in names:
            user = User.objects.filter(username=name).prefetch_related("groups").first()
            if user is not None and SIMULATED_GROUP not in {g.name for g in user.groups.all()}:
                raise Conflict(f"Username {name} belongs to a person, not a simulated reviewer; use another label.",
                               details={"label": "taken by real accounts; use another label"})
            if user is None:
                user, _ = user_create_or_update(username=name, password=None, roles=[])
                user.groups.add(group)
                Token.objects.filter(user=user).delete()  # nothing signs in as a reviewer
            reviewers.append(user)
    return reviewers


def simulated_review(*, campaign: Campaign, reviewers: list, rating_id: int, written: str) -> str:
    """The simulated reviewers' verdicts on the demonstration stored with
    this rating: accept (each reviewer in turn, until it is decided) when its
    text is what the rater wrote, reject with the reason otherwise. Returns
    its status; one a person decided first is left as it is."""
    demonstration = Demonstration.objects.filter(rating_id=rating_id, comparison__round__campaign=campaign).first()
    if demonstration is None:
        return "missing"
    for reviewer in reviewers:
        if demonstration.status != Demonstration.Status.PENDING:
            break
        same = demonstration.text == written
        try:
            demonstration = demonstration_review(
                campaign=campaign, demonstration_id=demonstration.pk, reviewer=reviewer,
                verdict=DemonstrationReview.Verdict.ACCEPT if same else DemonstrationReview.Verdict.REJECT,
                reason="" if same else "not the reference answer the simulated rater wrote",
            )
        except Conflict:  # decided or reviewed by someone meanwhile
            demonstration.refresh_from_db()
    return demonstration.status


def simulation_until_round(*, campaign: Campaign, config: SimulationConfig) -> int | None:
    """The last round index to rate: rounds counted from the round open now
    (from round 0 when none is open yet); None when rounds is None."""
    if config.rounds is None:
        return None
    current = campaign_current_round(campaign=campaign)
    return (current.index if current is not None else 0) + config.rounds - 1


# --- running them -----------------------------------------------------------------------


def simulation_run(*, campaign: Campaign, config: SimulationConfig, reward_path: str | None = None,
                   url: str | None = None, until_round: int | None = None, on_event=None, step: int = 0,
                   rated_before: int = 0, time_budget_s: float | None = None, deadline: float | None = None,
                   wait: bool = True) -> SimulationResult:
    """Create (or find) the raters and let them rate: through the API over
    HTTP at `url`, or through its services in this process when url is None
    (ServiceRaterClient). See Simulation.run."""
    accounts = simulated_raters_ensure(campaign=campaign, config=config)
    references = references_load(config.references) if config.references else None
    judge = Judge(preference_parse(config.preference), reward_path, references=references)
    review = None
    if config.review:
        reviewers = simulated_reviewers_ensure(campaign=campaign, config=config)

        def review(rating_id: int, written: str) -> None:
            simulated_review(campaign=campaign, reviewers=reviewers, rating_id=rating_id, written=written)

    simulation = Simulation(campaign_id=campaign.pk, config=config, accounts=accounts,
                            make_client=rater_client_factory(url), judge=judge, step=step, on_event=on_event,
                            review=review)
    return simulation.run(until_round=until_round, rated_before=rated_before, time_budget_s=time_budget_s,
                          deadline=deadline, wait=wait)


# One Celery task call rates for about this long, then hands the worker back
# (the task queues itself again), so a long simulation never holds up the
# round-complete checks and exports that share the default queue.
STEP_SECONDS = 60.0


@dataclass
class SimulationStart:
    campaign: int
    usernames: list[str]
    config: dict
    until_round: int | None
    task_id: str


def simulation_start(*, campaign: Campaign, values: dict) -> SimulationStart:
    """Check the config, create the raters and put them in the pool, and
    queue the task that runs them (after the commit). Nothing is written
    when the config is bad or the campaign takes no ratings."""
    config, _ = simulation_config_build(campaign=campaign, values=values)
    if campaign.status in (Campaign.Status.PAUSED, Campaign.Status.ARCHIVED):
        raise Conflict(f"Campaign '{campaign.name}' is {campaign.status}; simulated raters would get no work.")
    with transaction.atomic():
        accounts = simulated_raters_ensure(campaign=campaign, config=config)
        until_round = simulation_until_round(campaign=campaign, config=config)
        task_id = str(uuid.uuid4())
        kwargs = dict(campaign_id=campaign.pk, config=asdict(config), until_round=until_round,
                      started_at=time.time(), deadline=time.time() + config.wait_timeout_s)
        transaction.on_commit(lambda: task_named(SIMULATE_TASK).apply_async(kwargs=kwargs, task_id=task_id))
    return SimulationStart(campaign=campaign.pk, usernames=[a[0] for a in accounts], config=asdict(config),
                           until_round=until_round, task_id=task_id)


def simulation_step(*, campaign_id: int, config: dict, until_round: int | None, started_at: float, deadline: float,
                    step: int = 0) -> float | None:
    """One Celery task's share of a simulation: rate in-process for up to
    STEP_SECONDS; returns the delay before the next share, or None when the
    simulation is over. Ratings since `started_at` by this pool count
    against max_ratings, so a redelivered step never rates past the cap."""
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        return None
    checked, reward_path = simulation_config_build(campaign=campaign, values=config)
    names = [simulated_username(campaign_id=campaign_id, label=checked.label, index=i) for i in range(checked.raters)]
    rated_before = Rating.objects.filter(
        annotator__username__in=names, comparison__round__campaign=campaign,
        created_at__gte=dt.datetime.fromtimestamp(started_at, tz=dt.timezone.utc),
    ).count()
    if checked.max_ratings is not None and rated_before >= checked.max_ratings:
        return None
    result = simulation_run(campaign=campaign, config=checked, reward_path=reward_path, until_round=until_round,
                            step=step, rated_before=rated_before, time_budget_s=STEP_SECONDS, deadline=deadline,
                            wait=False)
    if result.ended == "time budget of this step used":
        return 0.0
    if result.waiting_for_round is not None:
        return 5.0
    return None
