"""Rubric aspects (docs/annotators.md, "Aspects"): a campaign's aspects
checked when an admin sets them, and a rating's aspect judgments checked
against its campaign's aspects before anything is written.

A campaign's aspects are [{"name", "question", "key"}]: the rating page shows
one row per aspect with its question; the aspect's key, then 1 / 2 / 3, says
A better / B better / same. A rating stores {name: "A" | "B" | "same"}, the
sides as the overall choice records them (A: the comparison's response_a)."""
import math
import re

from annotate.errors import ValidationFailed

# The rating page's own keys (frontend/static/frontend/rate.js: KEYS, and
# 1-4 in the skip dialog; rate_demo.js adds only Ctrl+Enter and Esc): an
# aspect's key must be none of them, or pressing it would do two things.
RESERVED_KEYS = frozenset("1234567890qwesdri?")
ASPECTS_MAX = 8
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
QUESTION_MAX_CHARS = 200
# The overall choice's name in aspect_weights (the rlhf RewardConfig contract).
OVERALL = "overall"
# What an annotator may say of an aspect, as the rating page sends it.
VALUES = ("A", "B", "same")
# Preference exports: an aspect's name, or this for the weighted combination.
COMBINED = "combined"


def aspects_validate(value) -> tuple[list[dict], str]:
    """(the cleaned aspects, a problem or ""): a list of at most ASPECTS_MAX
    {"name", "question", "key"}; names are lowercase identifiers, unique, not
    "overall"; keys single lowercase letters, unique, none of RESERVED_KEYS."""
    if value is None or value == "":
        return [], ""
    if not isinstance(value, list):
        return [], 'a list of {"name", "question", "key"} objects'
    if len(value) > ASPECTS_MAX:
        return [], f"at most {ASPECTS_MAX} aspects (this is {len(value)})"
    clean, names, keys = [], set(), set()
    for i, aspect in enumerate(value):
        where = f"aspect {i + 1}"
        if not isinstance(aspect, dict) or set(aspect) - {"name", "question", "key"}:
            return [], f'{where}: an object with "name", "question" and "key" only'
        name = str(aspect.get("name") or "").strip()
        question = str(aspect.get("question") or "").strip()
        key = str(aspect.get("key") or "").strip()
        if not NAME_RE.match(name):
            return [], (f"{where}: name {name!r} must be a lowercase identifier (a letter, then letters, digits "
                        "or _; at most 40 characters), e.g. correctness")
        where = f"aspect '{name}'"
        if name == OVERALL or name == COMBINED:
            return [], f"{where}: '{name}' is reserved (the overall choice / the combination); pick another name"
        if name in names:
            return [], f"{where}: two aspects share this name"
        if not question or len(question) > QUESTION_MAX_CHARS or "\n" in question:
            return [], f"{where}: the question is one line of 1 to {QUESTION_MAX_CHARS} characters"
        if len(key) != 1 or not ("a" <= key <= "z"):
            return [], f"{where}: key {key!r} must be one lowercase letter a-z"
        if key in RESERVED_KEYS:
            return [], (f"{where}: key '{key}' is taken by the rating page "
                        f"(its keys: {' '.join(sorted(RESERVED_KEYS))}); pick another letter")
        if key in keys:
            return [], f"{where}: key '{key}' is already another aspect's"
        names.add(name)
        keys.add(key)
        clean.append({"name": name, "question": question, "key": key})
    return clean, ""


def aspect_weights_validate(value, *, aspect_names: list[str]) -> tuple[dict, str]:
    """(the cleaned weights, a problem or ""): {"overall" or an aspect's name:
    a finite number >= 0}, not all 0. Missing names weigh as the rlhf
    RewardConfig contract says: overall 1, aspects 0."""
    if value is None or value == "":
        return {}, ""
    if not isinstance(value, dict):
        return {}, 'an object {"overall": 1.0, "<aspect>": 0.5, ...}'
    clean = {}
    for name, weight in value.items():
        if name != OVERALL and name not in aspect_names:
            return {}, (f"'{name}' is neither 'overall' nor one of the campaign's aspects "
                        f"({', '.join(aspect_names) or 'none'})")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            return {}, f"the weight of '{name}' must be a finite number 0 or more, not {weight!r}"
        clean[name] = float(weight)
    if clean and not any(aspect_weight(clean, n) > 0 for n in [OVERALL, *aspect_names]):
        return {}, "every weight is 0: the combination would say nothing"
    return clean, ""


def aspect_weight(weights: dict, name: str) -> float:
    """A name's weight in the combination, with the contract's defaults."""
    return float(weights.get(name, 1.0 if name == OVERALL else 0.0))


def rating_aspects_validate(*, aspects, campaign_aspects: list[dict], required: bool,
                            form_changed: bool = False) -> dict:
    """A rating's aspect judgments, cleaned: {name: "A" | "B" | "same"}.
    ValidationFailed (nothing is written) names the aspect the campaign does
    not have, the bad value, or the required aspects missing.

    `form_changed`: the rating was made on a page built before the campaign's
    aspects changed (services/rating_form.py). Then what the annotator judged
    is kept as made: an aspect the campaign no longer has is stored under its
    old name (after the current ones; per-aspect figures and training read
    only current names), and none is required. Bad values are refused still."""
    if aspects is None:
        aspects = {}
    if not isinstance(aspects, dict):
        raise ValidationFailed('aspects must be an object {"<aspect name>": "A" | "B" | "same"}.',
                               details={"aspects": "not an object"})
    known = [a["name"] for a in campaign_aspects]
    unknown = sorted(set(aspects) - set(known))
    if unknown and not form_changed:
        raise ValidationFailed(
            f"This campaign has no aspect {', '.join(repr(u) for u in unknown)}; "
            f"its aspects: {', '.join(known) or 'none'}.",
            details={f"aspects.{u}": "not an aspect of this campaign" for u in unknown},
        )
    bad = {name: value for name, value in aspects.items() if value not in VALUES}
    if bad:
        name, value = next(iter(bad.items()))
        raise ValidationFailed(
            f"aspects.{name} is {value!r}; use one of {', '.join(VALUES)} (A better, B better, the same).",
            details={f"aspects.{n}": f"one of {', '.join(VALUES)}" for n in bad},
        )
    if required and not form_changed:
        missing = [n for n in known if n not in aspects]
        if missing:
            raise ValidationFailed(
                f"This campaign requires every aspect; missing: {', '.join(missing)}.",
                details={f"aspects.{n}": "required" for n in missing},
            )
    # The campaign's order, then (form changed only) the ones it no longer has
    # (PostgreSQL's jsonb keeps its own key order; readers go by name).
    return {**{n: aspects[n] for n in known if n in aspects}, **{u: aspects[u] for u in unknown}}


def aspect_sign(value: str, *, chosen_is_a: bool) -> int:
    """A stored judgment ("A" / "B" / "same") relative to a pair's chosen
    answer, as training rows carry it: 1 the chosen is better, -1 the
    rejected is, 0 same."""
    if value == "same":
        return 0
    return 1 if (value == "A") == chosen_is_a else -1
