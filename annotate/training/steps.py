"""The stage functions of a training run, and the table saying which
function runs each (kind, stage) of annotate/training/stages.py's STAGES.

Run by the gpu worker only (executor.py; annotate/tasks.py imports it inside
the task), so the web process never loads the ML side. The heavy parts
(torch, transformers) are imported inside the functions that train or
generate. Each stage hands `rlhf` plain rows and paths and returns what it
produced (paths, versions, metrics), which bookkeeping.py records as the
stage's outputs. Each is safe to run again after a crash: it first looks for
what an earlier attempt published.
"""
import tempfile
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import transaction

from annotate.models import Answer, Campaign, PolicyVersion, Prompt, RewardModelVersion, SFTModelVersion, TrainingRun
from annotate.selectors.demonstrations import demonstrations_untrained_ids, sft_rows_iter
from annotate.selectors.training import preference_rows, reward_aspect_settings
from annotate.services.rounds import round_open, round_prompts
from annotate.training.reporter import Reporter
from annotate.training.selection import round0_selection, selection_pick, selection_plan
from annotate.training.stages import SCRATCH_DIR, STAGES, stage_record
from rlhf import data as rlhf_data
from rlhf.configs import DPOConfig, GenerateConfig, RewardConfig, RLOOConfig, SFTConfig, from_dict, policy_method
from rlhf.store import ModelStore, holding


def _store() -> ModelStore:
    return ModelStore(settings.MODEL_STORE)


@contextmanager
def _scratch(run: TrainingRun):
    # Inside the store's root so publishing is a rename on one filesystem;
    # held while the stage works in it, so that only a killed stage's folder
    # is swept (recovery.store_leftovers_sweep).
    root = Path(settings.MODEL_STORE) / SCRATCH_DIR
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f"run{run.pk}-") as tmp, holding(tmp):
        yield tmp


def _verified(version) -> str:
    """The version's folder, after checking its sha256 (docs/architecture.md, invariant 4)."""
    return _store().verify(version.path, version.sha256) or version.path


def _base_version(run: TrainingRun) -> PolicyVersion:
    return PolicyVersion.objects.get(campaign=run.campaign, version=0)


def _storable(text: str) -> str:
    # A model can emit any byte; PostgreSQL text cannot hold NUL.
    return text.replace("\x00", "\ufffd")


def _missing(policy: PolicyVersion, prompts: list[Prompt], samples: list[int]) -> tuple[set, list[Prompt]]:
    """The (prompt, sample) answers `policy` already has, and the prompts lacking one."""
    have = set(
        Answer.objects.filter(policy_version=policy, prompt__in=prompts).values_list("prompt_id", "sample_index")
    )
    return have, [p for p in prompts if any((p.pk, s) not in have for s in samples)]


def _generate_missing(run, on_progress, policy: PolicyVersion, missing: tuple[set, list[Prompt]],
                      samples: list[int]) -> int:
    """Answer each prompt of `missing` with `policy` for every sample index
    (len(todo) * len(samples) answers generated; those it has are not stored again)."""
    from rlhf.generate import generate_samples

    have, todo = missing
    if not todo:
        return 0
    config = from_dict(GenerateConfig, run.config.get("generate", {}))
    config.seed = config.seed + 1000 * policy.version
    answers = generate_samples(
        _verified(policy), [p.content for p in todo], config, num_samples=len(samples), on_progress=on_progress
    )
    # metadata["truncated"]: cut at max_new_tokens; the rating page and the console say so.
    rows = [
        Answer(prompt=p, policy_version=policy, sample_index=s, text=_storable(group[i].text), sampling=config.__dict__,
               metadata={"truncated": group[i].truncated})
        for p, group in zip(todo, answers)
        for i, s in enumerate(samples)
        if (p.pk, s) not in have
    ]
    Answer.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


# --- bootstrap: the base model answers round 0 --------------------------------


def stage_import(run: TrainingRun, reporter: Reporter) -> dict:
    from rlhf.base_model import materialize

    campaign = run.campaign
    existing = PolicyVersion.objects.filter(campaign=campaign, version=0).first()
    if existing is None:
        store = _store()
        in_store = store.find(campaign.base_model)
        if in_store is not None:
            # Already a verified store folder (make run imports SmolLM2 once):
            # point at it instead of copying half a gigabyte per campaign.
            published = in_store
        else:
            with _scratch(run) as tmp:
                folder = materialize(campaign.base_model, Path(tmp) / "model")
                published = store.publish(folder, f"campaign-{campaign.pk}/policy-v0")
        existing, _ = PolicyVersion.objects.get_or_create(
            campaign=campaign, version=0, defaults={"path": published.path, "sha256": published.sha256, "training_run": run}
        )
    return {"policy_version": existing.version, "path": existing.path, "sha256": existing.sha256}


def stage_generate_round0(run: TrainingRun, reporter: Reporter) -> dict:
    base = _base_version(run)
    prompts = round_prompts(campaign=run.campaign, index=0)
    # Two samples for pairs, k for a campaign ranking k-sets (rounds.k_set_samples).
    samples = list(range(max(2, run.campaign.rank_k)))
    written = _generate_missing(run, reporter.progress, base, _missing(base, prompts, samples), samples=samples)
    return {"responses": written, "prompts": len(prompts)}


def stage_open_round0(run: TrainingRun, reporter: Reporter) -> dict:
    base = _base_version(run)
    # No reward model before the first ratings: random, and the round says why.
    selection = round0_selection(campaign=run.campaign)
    round_ = round_open(campaign=run.campaign, index=0, candidate=base, baseline=base, selection=selection)
    return {"round": round_.index, "comparisons": round_.comparisons.count(), "selection": selection}


# --- train: ratings -> reward model -> policy step -> next round ---------------


def stage_snapshot(run: TrainingRun, reporter: Reporter) -> dict:
    if run.dataset_sha256:
        return {"path": run.dataset_path, "sha256": run.dataset_sha256}
    rows = preference_rows(campaign=run.campaign)
    with _scratch(run) as tmp:
        path = Path(tmp) / "preferences.jsonl"
        rlhf_data.write_jsonl(rows, path)
        published = _store().publish_file(path, f"campaign-{run.campaign_id}/datasets/run-{run.pk}")
    TrainingRun.objects.filter(pk=run.pk).update(dataset_path=published.path, dataset_sha256=published.sha256)
    return {"path": published.path, "sha256": published.sha256, "pairs": len(rows)}


def _dataset_rows(run: TrainingRun) -> list[dict]:
    run.refresh_from_db(fields=["dataset_path", "dataset_sha256"])
    folder = _store().verify(run.dataset_path, run.dataset_sha256) or run.dataset_path
    return rlhf_data.read_jsonl(Path(folder) / "preferences.jsonl")


def _sft_decision(run: TrainingRun) -> tuple[list[int], str]:
    """(the accepted demonstrations to fine-tune on, why none) by the plan the
    run started with (config["sft_plan"], runs.py) and what is not yet learned."""
    plan = run.config.get("sft_plan")
    if plan is None:
        return [], "the run started before the sft stage existed"
    requested, schedule, every_n = plan.get("requested"), plan.get("schedule"), plan.get("every_n") or 1
    if requested is False:
        return [], "the trigger asked for no sft this run (sft: false)"
    if requested is not True:
        if schedule == Campaign.SFTSchedule.TRIGGER:
            return [], "sft_schedule is trigger and this run's trigger did not ask for it (sft: true)"
        if schedule == Campaign.SFTSchedule.EVERY_N and (run.round.index + 1) % every_n:
            due = run.round.index + every_n - (run.round.index + 1) % every_n
            return [], f"sft_schedule is every {every_n} rounds: round {run.round.index} is not one (next: round {due})"
    ids = demonstrations_untrained_ids(campaign=run.campaign)
    if not ids:
        return [], "no accepted demonstrations that an earlier SFT model has not learned"
    return ids, ""


def _sft_rows(run: TrainingRun) -> list[dict]:
    folder = _store().verify(run.sft_dataset_path, run.sft_dataset_sha256) or run.sft_dataset_path
    return rlhf_data.read_conversations(Path(folder) / "conversations.jsonl")


def stage_sft(run: TrainingRun, reporter: Reporter) -> dict:
    """Fine-tune the round's candidate on the accepted demonstrations not yet
    learned (snapshot first, kept for a retry as the preference snapshot is),
    or skip, saying why. The SFT model is no policy version: the policy step
    starts from it (docs/training.md, "The sft stage")."""
    from rlhf.sft import train_sft

    existing = SFTModelVersion.objects.filter(training_run=run).first()
    if existing is None:
        run.refresh_from_db(fields=["sft_dataset_path", "sft_dataset_sha256"])
        if not run.sft_dataset_sha256:
            ids, reason = _sft_decision(run)
            if not ids:
                return {"skipped": True, "reason": reason}
            rows = list(sft_rows_iter(campaign=run.campaign, ids=ids))
            with _scratch(run) as tmp:
                path = Path(tmp) / "conversations.jsonl"
                rlhf_data.write_jsonl(rows, path)
                published = _store().publish_file(path, f"campaign-{run.campaign_id}/datasets/run-{run.pk}-sft")
            TrainingRun.objects.filter(pk=run.pk).update(
                sft_dataset_path=published.path, sft_dataset_sha256=published.sha256
            )
            run.sft_dataset_path, run.sft_dataset_sha256 = published.path, published.sha256
        rows = _sft_rows(run)
        start = run.round.candidate
        config = from_dict(SFTConfig, run.config.get("sft", {}))
        with _scratch(run) as tmp:
            out = Path(tmp) / "sft"
            metrics = train_sft(
                config, rows, _verified(start), out, on_metrics=reporter.metrics, on_progress=reporter.progress,
                meta={"campaign": run.campaign_id, "training_run": run.pk, "start_version": start.version,
                      "dataset_sha256": run.sft_dataset_sha256},
            )
            reporter.check_cancelled(force=True)
            published = _store().publish(out, f"campaign-{run.campaign_id}/sft-run{run.pk}")
        with transaction.atomic():
            previous = SFTModelVersion.objects.filter(campaign=run.campaign).order_by("-version").first()
            existing = SFTModelVersion.objects.create(
                campaign=run.campaign,
                version=(previous.version + 1) if previous else 1,
                start=start,
                path=published.path,
                sha256=published.sha256,
                training_run=run,
                dataset_path=run.sft_dataset_path,
                dataset_sha256=run.sft_dataset_sha256,
                demonstration_ids=sorted(int(r["demonstration_id"]) for r in rows),
                metrics=metrics,
            )
    return {"sft_version": existing.version, "start_version": existing.start.version, "path": existing.path,
            "sha256": existing.sha256, "dataset_path": existing.dataset_path,
            "dataset_sha256": existing.dataset_sha256, "conversations": len(existing.demonstration_ids),
            "metrics": existing.metrics}


def _anchor(run: TrainingRun, current: PolicyVersion, sft: SFTModelVersion | None) -> tuple[str, object]:
    """(what the policy step is held close to, its version record): the base
    model, unless the run's plan says sft; then this run's SFT model or, when
    this run trained none, the latest one the candidate descends from."""
    if (run.config.get("sft_plan") or {}).get("anchor") == Campaign.SFTAnchor.SFT:
        if sft is not None:
            return f"sft-v{sft.version}", sft
        node = current
        while node is not None:
            if node.sft_model_id:
                return f"sft-v{node.sft_model.version}", node.sft_model
            node = node.parent
    return "base", _base_version(run)


def stage_reward(run: TrainingRun, reporter: Reporter) -> dict:
    from rlhf.reward import train_reward

    existing = RewardModelVersion.objects.filter(training_run=run).first()
    if existing is None:
        rows = _dataset_rows(run)
        config = from_dict(RewardConfig, {**run.config.get("reward", {}), **reward_aspect_settings(run.campaign)})
        with _scratch(run) as tmp:
            out = Path(tmp) / "reward"
            metrics = train_reward(
                config,
                rows,
                _verified(_base_version(run)),
                out,
                on_metrics=reporter.metrics,
                on_progress=reporter.progress,
                meta={"campaign": run.campaign_id, "training_run": run.pk, "dataset_sha256": run.dataset_sha256},
            )
            reporter.check_cancelled(force=True)
            published = _store().publish(out, f"campaign-{run.campaign_id}/reward-run{run.pk}")
        with transaction.atomic():
            previous = RewardModelVersion.objects.filter(campaign=run.campaign).order_by("-version").first()
            existing = RewardModelVersion.objects.create(
                campaign=run.campaign,
                version=(previous.version + 1) if previous else 1,
                parent=previous,
                path=published.path,
                sha256=published.sha256,
                training_run=run,
                dataset_sha256=run.dataset_sha256,
                metrics=metrics,
            )
    return {"reward_version": existing.version, "path": existing.path, "sha256": existing.sha256, "metrics": existing.metrics}


def _policy_step(run: TrainingRun, reporter: Reporter, current: PolicyVersion, reward, out: Path,
                 sft: SFTModelVersion | None = None) -> dict:
    """One policy update by the run's method: RLOO samples and scores with the
    reward model; DPO learns from the human pairs directly. Both start from
    this run's SFT model when its sft stage made one, else from `current`,
    and keep the base model as the reference unless the plan's anchor is sft
    (_anchor)."""
    rows = _dataset_rows(run)
    anchor, ref = _anchor(run, current, sft)
    meta = {
        "campaign": run.campaign_id,
        "training_run": run.pk,
        "parent_version": current.version,
        "start": f"sft-v{sft.version}" if sft is not None else f"policy-v{current.version}",
        "reference": anchor,
        "reward_version": reward.version,
        "dataset_sha256": run.dataset_sha256,
    }
    common = dict(
        policy_path=_verified(sft if sft is not None else current),
        ref_path=_verified(ref),
        out_dir=out,
        on_metrics=reporter.metrics,
        on_progress=reporter.progress,
        meta=meta,
    )
    if policy_method(run.config) == "dpo":
        from rlhf.dpo import dpo_train

        # A KL check samples answers as long as the ones the campaign serves.
        served = run.config.get("generate", {}).get("max_new_tokens", GenerateConfig.max_new_tokens)
        config = from_dict(DPOConfig, {"kl_max_new_tokens": served, **run.config.get("dpo", {})})
        return dpo_train(config, rows, **common)
    from rlhf.rloo import rloo_train

    prompts = list({row["prompt_id"]: row["prompt"] for row in rows}.values())
    config = from_dict(RLOOConfig, run.config.get("policy", {}))
    return rloo_train(config, prompts, reward_path=_verified(reward), **common)


def stage_policy(run: TrainingRun, reporter: Reporter) -> dict:
    existing = PolicyVersion.objects.filter(training_run=run).first()
    if existing is None:
        current = run.round.candidate
        # DPO does not use the reward model, but the run trained one all the
        # same: its metrics (held-out accuracy, calibration) say how
        # learnable the round's preferences were.
        reward = RewardModelVersion.objects.get(training_run=run)
        sft = SFTModelVersion.objects.filter(training_run=run).first()
        with _scratch(run) as tmp:
            out = Path(tmp) / "policy"
            metrics = _policy_step(run, reporter, current, reward, out, sft)
            reporter.check_cancelled(force=True)
            published = _store().publish(out, f"campaign-{run.campaign_id}/policy-run{run.pk}")
        # Usually current.version + 1; higher when a cancelled run of this
        # round had already published a policy (the parent says where it came from).
        latest = PolicyVersion.objects.filter(campaign=run.campaign).order_by("-version").first()
        existing = PolicyVersion.objects.create(
            campaign=run.campaign,
            version=max(current.version, latest.version) + 1,
            parent=current,
            path=published.path,
            sha256=published.sha256,
            training_run=run,
            reward_model=reward,
            sft_model=sft,
            metrics=metrics,
        )
    # Where the step started and what held it (meta.json of the checkpoint says the same).
    start = f"sft-v{existing.sft_model.version}" if existing.sft_model_id else f"policy-v{existing.parent.version}"
    return {"policy_version": existing.version, "path": existing.path, "sha256": existing.sha256,
            "start": start, "reference": _anchor(run, existing.parent, existing.sft_model)[0],
            "metrics": existing.metrics}


def stage_generate_next(run: TrainingRun, reporter: Reporter) -> dict:
    """Answer the next round's prompts with the new and the previous policy;
    with a selection strategy and a reward model, answer selection_pool times
    as many and pick the round's comparisons among them (selection.py)."""
    new = PolicyVersion.objects.get(training_run=run)
    previous = run.round.candidate
    index = run.round.index + 1
    plan = selection_plan(campaign=run.campaign, run=run)
    prompts = round_prompts(campaign=run.campaign, index=index, pool=plan.pool)
    # Two pieces of work, one bar: answers done over the answers of both.
    # k - 1 samples of the new policy where the campaign ranks k-sets (rounds.k_set_samples).
    new_samples = list(range(max(1, run.campaign.rank_k - 1)))
    mine, theirs = _missing(new, prompts, new_samples), _missing(previous, prompts, [0])
    total = len(mine[1]) + len(theirs[1])
    written = _generate_missing(run, reporter.part(0, len(mine[1]), total), new, mine, samples=new_samples)
    written += _generate_missing(run, reporter.part(len(mine[1]), len(theirs[1]), total), previous, theirs,
                                 samples=[0])
    selection = plan.as_round()
    if plan.reward is not None:
        selection = selection_pick(
            plan=plan, campaign=run.campaign, index=index, prompts=prompts, candidate=new, baseline=previous,
            rated_rows=_dataset_rows(run), n=len(round_prompts(campaign=run.campaign, index=index)), samples=[0],
        )
    return {"responses": written, "prompts": len(prompts), "selection": selection}


def stage_open_next(run: TrainingRun, reporter: Reporter) -> dict:
    new = PolicyVersion.objects.get(training_run=run)
    # The picks the generate stage made (none recorded: the prompts in turn).
    selection = stage_record(run, "generate").get("outputs", {}).get("selection")
    round_ = round_open(campaign=run.campaign, index=run.round.index + 1, candidate=new, baseline=run.round.candidate,
                        selection=selection)
    return {"round": round_.index, "comparisons": round_.comparisons.count()}


STAGE_FUNCTIONS = {
    (TrainingRun.Kind.BOOTSTRAP, "import"): stage_import,
    (TrainingRun.Kind.BOOTSTRAP, "generate"): stage_generate_round0,
    (TrainingRun.Kind.BOOTSTRAP, "open"): stage_open_round0,
    (TrainingRun.Kind.TRAIN, "snapshot"): stage_snapshot,
    (TrainingRun.Kind.TRAIN, "sft"): stage_sft,
    (TrainingRun.Kind.TRAIN, "reward"): stage_reward,
    (TrainingRun.Kind.TRAIN, "policy"): stage_policy,
    (TrainingRun.Kind.TRAIN, "generate"): stage_generate_next,
    (TrainingRun.Kind.TRAIN, "open"): stage_open_next,
}



def _table_matches_stage_order() -> None:
    """Every stage of STAGES has exactly one function, checked at import so
    that a stage added to one and not the other stops the worker at start."""
    table = set(STAGE_FUNCTIONS)
    order = {(kind, stage) for kind, stages in STAGES.items() for stage in stages}
    if table != order:
        raise RuntimeError(
            f"STAGE_FUNCTIONS and STAGES (annotate/training/stages.py) disagree: no function for "
            f"{sorted(order - table)}, a function for no stage {sorted(table - order)}; "
            "give each stage of STAGES one function in STAGE_FUNCTIONS"
        )


_table_matches_stage_order()
