"""What a simulated rater wants, and how it decides: pure functions, no
Django and no torch at import, so that bench/ judges its win rates with the
very code the raters use (a reward model is loaded, with torch, only when a
`reward:` preference first judges something).

    preference = preference_parse("keyword:because")   # Preference("keyword", "because")
    margin = Judge(preference).margin(prompt, answer_a, answer_b)   # how much better A is, in log-odds
    simulated_choice(margin, strength=4, noise=0.1, position_bias=0, rng=rng)   # ("A", 2)
    references = references_load("data/finegrainedrlhf_qa_feedback_dev.jsonl")   # question -> reference answer
    Judge(preference_parse("reference"), references=references).margin(...)   # closer to the reference wins
"""
from __future__ import annotations

import json
import math
import random
import re
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

PREFERENCE_KINDS = ("shorter", "longer", "keyword", "reward", "reference")
# |strength x margin| under this is "no visible difference": the rater says tie.
TIE_Z = 0.25
# |strength x margin| at which a pick becomes "clearly" (2) and "much" (3) better.
STRENGTH_Z = (1.5, 3.0)
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Preference:
    """What a simulated rater wants. `arg`: the keyword, or the reward model
    (a folder, or a RewardModelVersion id resolved to its folder)."""

    kind: str
    arg: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind


def preference_parse(spec: str) -> Preference:
    """'shorter' | 'longer' | 'keyword:<word>' | 'reward:<folder or id>' | 'reference';
    ValueError says what is wrong. 'reference' (closer to the question's
    reference answer, word-overlap F1) needs the raters' `references` file."""
    spec = (spec or "").strip()
    kind, _, arg = spec.partition(":")
    kind, arg = kind.strip().lower(), arg.strip()
    if kind not in PREFERENCE_KINDS:
        raise ValueError(
            f"unknown preference {spec!r}; use shorter, longer, keyword:<word>, reward:<reward model folder or version id> or reference"
        )
    if kind in ("shorter", "longer", "reference") and arg:
        raise ValueError(f"'{kind}' takes no argument; got {spec!r}")
    if kind == "keyword" and not _WORD.fullmatch(arg):
        raise ValueError(f"keyword:<word> needs one word of letters or digits, e.g. keyword:because; got {spec!r}")
    if kind == "reward" and not arg:
        raise ValueError("reward:<…> needs a reward model folder or a RewardModelVersion id, e.g. reward:3")
    return Preference(kind, arg.lower() if kind == "keyword" else arg)


def answer_words(text: str) -> int:
    return len(_WORD.findall(text))


# --- reference answers: what a simulated rater writes, and the `reference` preference ---


def references_load(path: str | Path) -> dict[str, str]:
    """question -> reference answer, from a JSONL file of {"prompt",
    "reference"} lines, or of preference pairs {"prompt", "chosen", ...}
    (the shipped FineGrainedRLHF data): the first line of each question
    wins. ValueError names the line that is not usable."""
    references: dict[str, str] = {}
    with Path(path).open(encoding="utf-8") as lines:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}, line {n}: not JSON ({exc})") from None
            text = row.get("reference", row.get("chosen")) if isinstance(row, dict) else None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not isinstance(text, str):
                raise ValueError(f'{path}, line {n}: needs "prompt" and "reference" (or "chosen") strings')
            if answer_words(text):
                references.setdefault(row["prompt"], text)
    if not references:
        raise ValueError(f"{path}: no question with a reference answer in it")
    return references


def prompt_text(prompt) -> str:
    """The question a reference is looked up by: the prompt, or a
    conversation's last user turn ({"role", "content"} dicts)."""
    if isinstance(prompt, str):
        return prompt
    users = [t.get("content", "") for t in prompt if isinstance(t, dict) and t.get("role") == "user"]
    return users[-1] if users else ""


def reference_f1(answer: str, reference: str) -> float:
    """Word-overlap F1 of an answer with the reference (lowercased words,
    counted with repeats, as SQuAD's F1): 1 for the reference itself."""
    a = Counter(w.lower() for w in _WORD.findall(answer))
    r = Counter(w.lower() for w in _WORD.findall(reference))
    common = sum((a & r).values())
    if not common:
        return 0.0
    precision, recall = common / sum(a.values()), common / sum(r.values())
    return 2 * precision * recall / (precision + recall)


def reference_scorer(references: dict[str, str]) -> "Scorer":
    """The `reference` preference's scorer: log(0.01 + F1) with the
    question's reference, so that a difference reads as log-odds (F1 0.1 over
    0.05 is a margin of 0.6) and two answers sharing nothing with it tie.
    A question with no reference cannot be judged (KeyError names it)."""

    def score(prompts: list, answers: list[str]) -> list[float]:
        out = []
        for prompt, answer in zip(prompts, answers):
            question = prompt_text(prompt)
            if question not in references:
                raise KeyError(f"no reference answer for {question[:80]!r}")
            out.append(math.log(0.01 + reference_f1(answer, references[question])))
        return out

    return score


# A scorer maps (prompts, answers) to one float each (rlhf.reward.RewardScorer).
Scorer = Callable[[list, list[str]], list[float]]


def preference_scores(preference: Preference, prompts: list, answers: list[str], *, scorer: Scorer | None = None) -> list[float]:
    """How much the preference likes each answer (higher is better), on a
    log scale so that differences read as log-odds. An answer with no word
    in it answers nothing: -inf under every preference, so that "shorter"
    can never be won by saying nothing."""
    if preference.kind in ("reward", "reference"):
        if scorer is None:
            raise ValueError("a reward preference needs its scorer (rlhf.reward.RewardScorer); "
                             "a reference one its references (reference_scorer)")
        raw = scorer(list(prompts), list(answers))
    else:
        raw = []
        for text in answers:
            if preference.kind == "keyword":
                raw.append(math.log1p(len(re.findall(rf"\b{re.escape(preference.arg)}\b", text, flags=re.I))))
            else:
                n = answer_words(text)
                raw.append(math.log1p(n) * (-1.0 if preference.kind == "shorter" else 1.0))
    return [(-math.inf if answer_words(text) == 0 else float(s)) for s, text in zip(raw, answers)]


def preference_margin(score_a: float, score_b: float) -> float:
    """How much better A is than B (log-odds units); NaN when both answer nothing."""
    if score_a == score_b:
        return 0.0 if not math.isinf(score_a) else math.nan
    return score_a - score_b


def preference_outcome(margin: float) -> float:
    """The preference's own verdict for A: 1 win, 0.5 tie, 0 loss (no noise, no bias)."""
    if math.isnan(margin) or margin == 0:
        return 0.5
    return 1.0 if margin > 0 else 0.0


def simulated_choice(
    margin: float, *, strength: float, noise: float, position_bias: float, rng: random.Random
) -> tuple[str, int | None]:
    """One rater's answer for a comparison whose margin (A over B) is given.

    With probability `noise` a random pick of A or B with a random strength
    (a careless click); with probability `position_bias` A, the left answer,
    whatever it says; otherwise the Bradley-Terry rater: A with probability
    sigmoid(strength x margin), a tie when the difference is too small to see,
    and a rating strength that grows with how clear the difference is."""
    u = rng.random()
    if u < noise:
        return rng.choice("AB"), rng.randint(1, 3)
    if u < noise + position_bias:
        return "A", rng.randint(1, 3)
    if math.isnan(margin):
        return "both_bad", None
    z = strength * margin
    if abs(z) < TIE_Z:
        return "tie", None
    p_a = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
    choice = "A" if rng.random() < p_a else "B"
    return choice, 1 + sum(abs(z) >= cut for cut in STRENGTH_Z)


def simulated_ranking(
    scores: list[float], *, strength: float, noise: float, rng: random.Random
) -> list[list[int]]:
    """One rater's ranking of a k-set whose answers (positions 1..k) the
    preference scores so: tie groups of positions, best first.

    With probability `noise` a random order (a careless rater); otherwise
    Plackett-Luce, the Bradley-Terry rater of simulated_choice extended to
    k: the best drawn with probability proportional to exp(strength x
    score), then the best of the rest, and so on; neighbours in that order
    whose scores are closer than the rater can see (TIE_Z) share a place.
    An answer that says nothing (score -inf) goes last. No position bias."""
    positions = list(range(1, len(scores) + 1))
    if rng.random() < noise:
        rng.shuffle(positions)
        return [[p] for p in positions]
    z = {p: s if math.isinf(s) else strength * s for p, s in zip(positions, scores)}
    order, left = [], positions[:]
    while left:
        top = max(z[p] for p in left)
        if math.isinf(top):  # only -inf left, or an inf that always wins
            weights = [1.0 if z[p] == top else 0.0 for p in left]
        else:
            weights = [math.exp(z[p] - top) if not math.isinf(z[p]) else 0.0 for p in left]
        pick = rng.choices(left, weights=weights)[0]
        order.append(pick)
        left.remove(pick)
    ranking = [[order[0]]]
    for before, p in zip(order, order[1:]):
        same = z[before] == z[p] or (not math.isinf(z[p]) and abs(z[before] - z[p]) < TIE_Z)
        if same:
            ranking[-1].append(p)
        else:
            ranking.append([p])
    return ranking


class Judge:
    """A preference ready to score answers; a reward model is loaded (torch,
    lazily) the first time it is needed, once, and shared by every rater.
    `references` (question -> reference answer): what the `reference`
    preference compares with, and what raters write on both bad."""

    def __init__(self, preference: Preference, reward_path: str | None = None,
                 references: dict[str, str] | None = None):
        self.preference, self.reward_path, self.references = preference, reward_path, references
        self._scorer = reference_scorer(references) if preference.kind == "reference" and references else None
        self._lock = threading.Lock()

    def scorer(self) -> Scorer | None:
        if self.preference.kind == "reference":
            if self._scorer is None:
                raise ValueError("the reference preference needs the raters' references (a JSONL file)")
            return self._scorer
        if self.preference.kind != "reward":
            return None
        with self._lock:
            if self._scorer is None:
                from rlhf.reward import RewardScorer  # torch: only where a reward preference is judged

                self._scorer = RewardScorer(self.reward_path)
            return self._scorer

    def scores(self, prompts: list, answers: list[str]) -> list[float]:
        return preference_scores(self.preference, prompts, answers, scorer=self.scorer())

    def margin(self, prompt, answer_a: str, answer_b: str) -> float:
        a, b = self.scores([prompt, prompt], [answer_a, answer_b])
        return preference_margin(a, b)

    def reference_margin(self, prompt, answer_a: str, answer_b: str) -> tuple[str, float] | None:
        """(the question's reference, how much it beats the better of the two
        answers under this preference), or None when there is no reference
        for the question: what a rater weighs before calling both bad."""
        reference = (self.references or {}).get(prompt_text(prompt))
        if reference is None:
            return None
        ref, a, b = self.scores([prompt] * 3, [reference, answer_a, answer_b])
        return reference, ref - max(a, b)
