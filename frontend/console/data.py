"""Console pages about a campaign's data: prompts, answers and gold-pair
imports (with a "Check" dry run), the gold pool, data quality, the models
leaderboard and exports. Thin views: read the form, call one service or selector, render.
Each page makes a fixed number of queries whatever the number of rows
(pinned in tests/annotate/test_gold.py and test_imports.py).

Campaign admins (and staff) may import and export; ML engineers may look."""
from functools import partial
from math import ceil

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import redirect, render

from annotate.errors import ServiceError
from annotate.models import Campaign, Export, Role
from annotate.selectors.answers import campaign_external_models
from annotate.selectors.exports import campaign_exports
from annotate.selectors.gold import gold_pool, gold_pool_totals
from annotate.selectors.leaderboard import campaign_leaderboard
from annotate.selectors.run_page import POLICY_COLUMNS, REWARD_COLUMNS, SFT_COLUMNS, metric_table
from annotate.selectors.prompts import campaign_prompts
from annotate.selectors.quality import campaign_quality_with_standing
from annotate.selectors.rounds import campaign_round, campaign_round_indexes
from annotate.selectors.training import campaign_policy_versions, campaign_reward_versions, campaign_sft_versions
from annotate.services.answers import answers_import
from annotate.services.exports import export_create
from annotate.services.gold import gold_import
from annotate.services.prompts import import_format, prompts_import
from frontend.console.access import console_view

PAGE_SIZE = 50


data_view = console_view(post_role=Role.CAMPAIGN_ADMIN, post_refusal="Only campaign admins can import or export.")


def _upload(request, importer, campaign: Campaign) -> dict:
    """Run `importer` on the uploaded file: a dry run for "Check", the
    import for "Import". What the template shows: {checked, result, error,
    errors, filename}."""
    upload = request.FILES.get("file")
    dry_run = request.POST.get("action") != "import"
    report = {"dry_run": dry_run, "filename": upload.name if upload else ""}
    if upload is None:
        report["error"] = "Choose a file first."
        return report
    try:
        format = import_format(
            format=request.POST.get("format") or None, filename=upload.name or "", content_type=upload.content_type or ""
        )
        report["format"] = format
        # The file itself, not its bytes: the importer reads it a line at a time.
        report["result"] = importer(campaign=campaign, data=upload, format=format, dry_run=dry_run)
    except ServiceError as exc:
        report["error"] = exc.message
        report["errors"] = exc.details if isinstance(exc.details, list) else []
    return report


def _page(request, queryset):
    return Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))


@data_view
def prompts(request, campaign_id: int):
    campaign = request.campaign
    report = _upload(request, prompts_import, campaign) if request.method == "POST" else None
    return render(
        request,
        "frontend/console/prompts.html",
        {"campaign": campaign, "report": report, "page": _page(request, campaign_prompts(campaign=campaign))},
        status=400 if report and report.get("error") else 200,
    )


@data_view
def answers(request, campaign_id: int):
    campaign = request.campaign
    importer = partial(answers_import, created_by=request.user)
    report = _upload(request, importer, campaign) if request.method == "POST" else None
    return render(
        request,
        "frontend/console/answers.html",
        {"campaign": campaign, "report": report, "models": campaign_external_models(campaign=campaign)},
        status=400 if report and report.get("error") else 200,
    )


@data_view
def gold(request, campaign_id: int):
    campaign = request.campaign
    report = _upload(request, gold_import, campaign) if request.method == "POST" else None
    return render(
        request,
        "frontend/console/gold.html",
        {
            "campaign": campaign,
            "report": report,
            "totals": gold_pool_totals(campaign=campaign),
            "page": _page(request, gold_pool(campaign=campaign)),
        },
        status=400 if report and report.get("error") else 200,
    )


@data_view
def quality(request, campaign_id: int):
    campaign = request.campaign
    rounds = campaign_round_indexes(campaign=campaign)
    try:
        round_ = campaign_round(campaign=campaign, index=request.GET.get("round"))
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect("console-quality", campaign_id=campaign.pk)
    report = campaign_quality_with_standing(campaign=campaign, round_=round_, stale_ok=True)
    return render(
        request,
        "frontend/console/quality.html",
        {"campaign": campaign, "rounds": rounds, "round": round_, "q": report},
    )


# The interval plot's geometry, in SVG user units.
PLOT_WIDTH, PLOT_LEFT, PLOT_RIGHT, ROW_HEIGHT, PLOT_TOP = 720, 150, 20, 28, 30


def leaderboard_plot(board: list[dict]) -> dict:
    """Positions for the server-drawn interval plot: one row per model, a
    dot at its score and a line over its 95% interval, and below them the
    same for its length-controlled score, on a shared axis with ticks every
    50 (or 100, 200...) points."""
    scored = [v for v in board if v["score"] is not None]
    if not scored:
        return {"rows": [], "ticks": [], "width": PLOT_WIDTH, "height": PLOT_TOP + ROW_HEIGHT}
    lo = min(min(v["lower"], v["lc_lower"]) for v in scored)
    hi = max(max(v["upper"], v["lc_upper"]) for v in scored)
    step = 50
    while (hi - lo) / step > 8:
        step *= 2
    lo, hi = step * (lo // step), step * ceil(hi / step)
    if hi <= lo:
        hi = lo + step
    inner = PLOT_WIDTH - PLOT_LEFT - PLOT_RIGHT

    def x(value: float) -> float:
        return round(PLOT_LEFT + inner * (value - lo) / (hi - lo), 1)

    rows = []
    # Policy versions in order, then external models by name.
    for n, v in enumerate(sorted(scored, key=lambda v: (v["kind"] != "policy", v["version"] or 0, v["name"]))):
        y = PLOT_TOP + n * ROW_HEIGHT + ROW_HEIGHT / 2
        rows.append(
            {
                **v,
                "y": y - 4,
                "y_lc": y + 5,
                "y_lc_box": y + 1,  # the square's corner
                "x": x(v["score"]),
                "x_lower": x(v["lower"]),
                "x_upper": x(v["upper"]),
                "x_lc": x(v["lc_score"]),
                "x_lc_box": x(v["lc_score"]) - 4,  # the square's corner
                "x_lc_lower": x(v["lc_lower"]),
                "x_lc_upper": x(v["lc_upper"]),
            }
        )
    ticks = [{"value": int(t), "x": x(t)} for t in range(int(lo), int(hi) + 1, step)]
    height = PLOT_TOP + len(rows) * ROW_HEIGHT + 10
    return {"rows": rows, "ticks": ticks, "width": PLOT_WIDTH, "height": height, "axis_y": height - 5}


# The tables that grow by a row a round (rounds, pairs, versions) show the
# latest TABLE_ROWS rows unless ?all=1: at 100 rounds they made the models
# page 258 KiB, and rendering it, not the statistics, missed 150 ms.
TABLE_ROWS = 20


def _latest(rows: list, show_all: bool) -> dict:
    shown = rows if show_all else rows[-TABLE_ROWS:]
    return {"rows": shown, "total": len(rows), "hidden": len(rows) - len(shown)}


def _shortened(table: dict, show_all: bool) -> dict:
    """A metric_table with only its latest rows (_latest)."""
    latest = _latest(table["rows"], show_all)
    return {**table, "rows": latest["rows"], "total": latest["total"], "hidden": latest["hidden"]}


@data_view
def models(request, campaign_id: int):
    campaign = request.campaign
    show_all = request.GET.get("all") == "1"
    board = campaign_leaderboard(campaign=campaign, by_round=True, stale_ok=True)
    for r in board["rounds"]:
        # Win-rate bars as percentages of their cell's width.
        r["bar"] = (
            {"lower": 100 * r["lower"], "width": 100 * (r["upper"] - r["lower"]), "at": 100 * r["win_rate"]}
            if r["win_rate"] is not None
            else None
        )
    policies = list(campaign_policy_versions(campaign=campaign))
    # The leaderboard's models say which were fine-tuned on demonstrations first (sft_version).
    ranked = board["models"]
    return render(
        request,
        "frontend/console/models.html",
        {
            "campaign": campaign,
            "board": board,
            "ranked": ranked,
            "plot": leaderboard_plot(board["models"]),
            "policies": _shortened(metric_table(policies, POLICY_COLUMNS), show_all),
            "rewards": _shortened(metric_table(list(campaign_reward_versions(campaign=campaign)), REWARD_COLUMNS),
                                  show_all),
            "sft": _shortened(metric_table(list(campaign_sft_versions(campaign=campaign)), SFT_COLUMNS), show_all),
            "rounds": _latest(board["rounds"], show_all),
            "pairs": _latest(board["pairs"], show_all),
            "show_all": show_all,
        },
    )


@data_view
def exports(request, campaign_id: int):
    campaign = request.campaign
    rounds = campaign_round_indexes(campaign=campaign)
    form = {"kind": Export.Kind.PREFERENCES, "format": Export.Format.JSONL, "round": "", "aspect": ""}
    error = None
    if request.method == "POST":
        form = {k: request.POST.get(k, "") for k in form}
        try:
            export = export_create(
                campaign=campaign,
                kind=form["kind"],
                format=form["format"],
                round_=campaign_round(campaign=campaign, index=form["round"] or None),
                user=request.user,
                aspect=form["aspect"] if form["kind"] == Export.Kind.PREFERENCES else "",
            )
        except ServiceError as exc:
            error = exc.message
        else:
            messages.success(request, f"Export {export.pk} written: {export.rows} rows, sha256 {export.sha256[:12]}…")
            return redirect("console-exports", campaign_id=campaign.pk)
    return render(
        request,
        "frontend/console/exports.html",
        {
            "campaign": campaign,
            "rounds": rounds,
            "form": form,
            "error": error,
            "kinds": Export.Kind.choices,
            "formats": Export.Format.choices,
            "page": _page(request, campaign_exports(campaign=campaign)),
        },
        status=400 if error else 200,
    )
