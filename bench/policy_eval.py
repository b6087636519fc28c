"""The newest policy against the base, on held-out questions: its win rate
under the simulated raters' preference (no noise), with the run's 95%
Wilson interval (bench/seeds.py gives the interval across seeds), and its
KL to the base; and the figure of both over the rounds of
one or more campaigns (plain SVG, no dependency). bench/simulated_campaign.py
measures each round with these."""
from __future__ import annotations

from annotate.simulation.preference import Judge, preference_margin, preference_outcome, preference_parse
from annotate.stats.intervals import wilson_interval
from bench.seeds import across_seeds


class Evaluator:
    """Answers of the base policy once, of each newest policy after its round,
    judged by the raters' preference without noise; KL of the newest policy
    to the base on its own samples."""

    def __init__(self, prompts: list[str], *, preference: str, new_tokens: int, kl_prompts: int, seed: int = 1234):
        self.prompts, self.new_tokens, self.seed = prompts, new_tokens, seed
        self.kl_prompts = prompts[:kl_prompts]
        self.judge = Judge(preference_parse(preference), preference_parse(preference).arg or None)
        self.base_path: str | None = None
        self.base_scores: list[float] | None = None

    def _answers(self, path: str, seed: int, num_samples: int = 1) -> list[list[str]]:
        from rlhf.generate import GenerateConfig, generate

        config = GenerateConfig(max_new_tokens=self.new_tokens, seed=seed, batch_size=32)
        return generate(path, self.prompts, config, num_samples=num_samples)

    def base(self, path: str) -> dict:
        """The base answers (sample 0: what every version is compared with;
        sample 1: the base as its own challenger, the round-0 point)."""
        self.base_path = path
        answers = self._answers(path, self.seed, num_samples=2)
        self.base_scores = self.judge.scores(self.prompts, [a[0] for a in answers])
        return self._judged([a[1] for a in answers]) | {"kl_estimate": 0.0}

    def newest(self, path: str) -> dict:
        texts = [a[0] for a in self._answers(path, self.seed + 1)]
        return self._judged(texts) | {"kl_estimate": self.kl(path)}

    def _judged(self, texts: list[str]) -> dict:
        scores = self.judge.scores(self.prompts, texts)
        outcomes = [preference_outcome(preference_margin(s, b)) for s, b in zip(scores, self.base_scores)]
        n = len(outcomes)
        wins, ties = outcomes.count(1.0), outcomes.count(0.5)
        rate = sum(outcomes) / n
        lo, hi = wilson_interval(sum(outcomes), n)
        words = [len(t.split()) for t in texts]
        return {"win_rate": rate, "ci95": [lo, hi], "wins": wins, "ties": ties, "losses": n - wins - ties, "n": n,
                "mean_words": sum(words) / n, "example": texts[0][:300]}

    def kl(self, path: str) -> float:
        """Mean over prompts of sum_t log pi(y_t) - log pi_base(y_t), y sampled
        from pi at temperature 1: the estimate the policy step's KL budget
        checks (rlhf.kl.sampled_kl), here on held-out questions."""
        from rlhf import _torch
        from rlhf.generate import load_policy
        from rlhf.kl import sampled_kl

        dev = _torch.device()
        policy, tokenizer = load_policy(path, dev)
        base, _ = load_policy(self.base_path, dev)
        return sampled_kl(policy, base, tokenizer, self.kl_prompts, max_new_tokens=self.new_tokens,
                          seed=self.seed + 2, dist=_torch.Dist())


def pooled(runs: list[dict]) -> dict:
    """One setting over its seeds. Per round: the mean of the seeds' win
    rates with the 95% t interval across them ("ci95": what a figure
    quotes; the per-run Wilson interval where there is one seed), and the
    win rate over every judged pair of every seed with its Wilson interval
    ("pooled", "ci95_wilson_pooled": the sampling error of the questions
    alone); the means of the rest."""
    rounds = []
    for i in range(len(runs[0]["rounds"])):
        points = [r["rounds"][i] for r in runs]
        n = sum(p["n"] for p in points)
        won = sum(p["win_rate"] * p["n"] for p in points)
        lo, hi = wilson_interval(won, n)
        seeds = across_seeds([p["win_rate"] for p in points])
        mean = lambda key: sum(p.get(key) or 0.0 for p in points) / len(points)  # noqa: E731
        rounds.append({"round": points[0]["round"], "win_rate": seeds["mean"],
                       "ci95": seeds["ci95"] or points[0]["ci95"], "across_seeds": seeds,
                       "pooled": won / n, "ci95_wilson_pooled": [lo, hi], "n": n,
                       "kl_estimate": mean("kl_estimate"), "kl_policy_stage": mean("kl_policy_stage") if i else None,
                       "mean_words": mean("mean_words"),
                       "reward_eval_accuracy": mean("reward_eval_accuracy") if i else None})
    return {"preference": runs[0]["preference"], "strength": runs[0]["strength"], "noise": runs[0]["noise"],
            "repeats": len(runs), "rounds": rounds, "seeds": [r["seed"] for r in runs],
            "interval": ("ci95: 95% t interval across the seeds' win rates; ci95_wilson_pooled: Wilson on the pooled "
                         "judged pairs" if len(runs) > 1 else "ci95: Wilson on the run's judged pairs (one seed)"),
            "final_win_rate": rounds[-1]["win_rate"], "final_kl": rounds[-1]["kl_estimate"],
            "final_across_seeds": rounds[-1]["across_seeds"],
            "mean_win_rate": sum(r["mean_win_rate"] for r in runs) / len(runs),
            "mean_win_rate_across_seeds": across_seeds([r["mean_win_rate"] for r in runs]),
            "mean_win_rate_by_seed": [r["mean_win_rate"] for r in runs]}


def svg_plot(reports: list[dict], *, title: str, kl_budget: float | None, target: float | None) -> str:
    w, h, left, right, top, gap, panel = 760, 420, 60, 150, 40, 50, 150
    rounds = max(len(r["rounds"]) for r in reports)
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]

    def x(i: int) -> float:
        return left + (w - left - right) * (i / max(rounds - 1, 1))

    def y_win(v: float) -> float:
        return top + panel * (1 - v)

    kl_max = max([p["kl_estimate"] or 0 for r in reports for p in r["rounds"]] + [kl_budget or 0, 1e-6]) * 1.15
    top2 = top + panel + gap

    def y_kl(v: float) -> float:
        return top2 + panel * (1 - v / kl_max)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{_esc(title)}</text>']
    for y0, label in ((top, "win rate vs base"), (top2, "KL to base (nats)")):
        out.append(f'<rect x="{left}" y="{y0}" width="{w - left - right}" height="{panel}" fill="none" stroke="#999"/>')
        out.append(f'<text x="14" y="{y0 + panel / 2}" transform="rotate(-90 14 {y0 + panel / 2})" text-anchor="middle">{label}</text>')
    for v in (0, 0.25, 0.5, 0.75, 1.0):
        out.append(f'<text x="{left - 6}" y="{y_win(v) + 4}" text-anchor="end">{v:g}</text>')
    out.append(f'<line x1="{left}" x2="{w - right}" y1="{y_win(0.5)}" y2="{y_win(0.5)}" stroke="#777" stroke-dasharray="4 3"/>')
    if target is not None:
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y_win(target)}" y2="{y_win(target)}" stroke="#2ca02c" stroke-dasharray="2 2"/>')
        out.append(f'<text x="{w - right + 4}" y="{y_win(target) + 4}" fill="#2ca02c">target {target:g}</text>')
    for v in (0, kl_max / 2, kl_max):
        out.append(f'<text x="{left - 6}" y="{y_kl(v) + 4}" text-anchor="end">{v:.2g}</text>')
    if kl_budget is not None:
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y_kl(kl_budget)}" y2="{y_kl(kl_budget)}" stroke="#d62728" stroke-dasharray="2 2"/>')
        out.append(f'<text x="{w - right + 4}" y="{y_kl(kl_budget) + 4}" fill="#d62728">budget {kl_budget:g}</text>')
    for i in range(rounds):
        out.append(f'<text x="{x(i)}" y="{top2 + panel + 16}" text-anchor="middle">{"base" if i == 0 else f"after round {i - 1}"}</text>')
    for n, report in enumerate(reports):
        colour = colours[n % len(colours)]
        pts = report["rounds"]
        dx = (n - (len(reports) - 1) / 2) * 4  # side by side when several series
        out.append('<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(
            colour, " ".join(f"{x(i) + dx:.1f},{y_win(p['win_rate']):.1f}" for i, p in enumerate(pts))))
        for i, p in enumerate(pts):
            lo, hi = p["ci95"]
            out.append(f'<line x1="{x(i) + dx:.1f}" x2="{x(i) + dx:.1f}" y1="{y_win(lo):.1f}" y2="{y_win(hi):.1f}" stroke="{colour}"/>')
            out.append(f'<circle cx="{x(i) + dx:.1f}" cy="{y_win(p["win_rate"]):.1f}" r="3" fill="{colour}"/>')
        out.append('<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(
            colour, " ".join(f"{x(i) + dx:.1f},{y_kl(p['kl_estimate'] or 0):.1f}" for i, p in enumerate(pts))))
        label = f"strength {report['strength']:g}, noise {report['noise']:g}"
        if report.get("preference"):
            label = f"{report['preference']}: {label}"
        out.append(f'<text x="{w - right + 4}" y="{top + 70 + 16 * n}" fill="{colour}">{_esc(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
