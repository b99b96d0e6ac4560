"""Words for people: field labels, value words, reason sentences and tier words.

Sales teams read reasons in a CRM, not column names, so every reason carries a label and a
one-line text. Labels are resolved once at training (spec `labels` win, else a prettified name,
activity aggregates in words) and stored in the bundle, so scoring needs no spec.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TIERS = ("A", "B", "C", "D")
DEFAULT_TIER_WORDS: dict[str, str] = {"A": "hot", "B": "warm", "C": "cool", "D": "cold"}
ACTIVITY_PREFIX = "activity."  # as features.ACTIVITY_PREFIX (not imported: no cycle)
MISSING_WORDS = "not given"
MINUS = "\N{MINUS SIGN}"

# short forms CRM exports use, written out (bank marketing's `emp.var.rate` -> "Employment
# variation rate"); only unambiguous ones: a wrong expansion reads worse than none
ABBREVIATIONS = {
    "nr": "number", "num": "number", "emp": "employment", "var": "variation",
    "cons": "consumer", "conf": "confidence", "idx": "index", "pct": "percent",
    "avg": "average", "amt": "amount", "qty": "quantity", "dept": "department",
    "cnt": "count", "tot": "total", "prev": "previous", "addr": "address",
}
ACRONYMS = {"id", "url", "crm", "bant", "api", "sms", "b2b", "b2c", "ceo", "cto", "cfo", "roi",
            "seo", "ppc", "utm", "gdp", "vat", "uk", "us", "eu"}
# how a derived field is named and its value shown (see features.FeatureBuilder._planned)
# (a job title is shown as typed, so its label needs no suffix; an email only by its domain)
DERIVED_SUFFIX = {"email_domain": "domain"}
PRESENT_WORDS = {1.0: "given", 0.0: MISSING_WORDS}

_ACTIVITY_COUNT = re.compile(r"^activity\.(?P<kind>.+)\.(?P<days>\d+)d$")
_SINCE = re.compile(r"^activity\.days_since_last(?:\.(?P<kind>.+))?$")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[._\-\s]+")


def prettify(name: str) -> str:
    """A column name as words: `emp.var.rate` -> "Employment variation rate", `lead_source` ->
    "Lead source", `leadSource` -> "Lead source". A name already written for people (it has a
    space and a capital, like `Lead Source`) is kept as it is."""
    if " " in name.strip() and name != name.lower():
        return name.strip()
    parts = [p for p in _SEPARATORS.split(_CAMEL.sub(" ", name)) if p]
    if not parts:
        return name
    words = [_word(p.lower()) for p in parts]
    text = " ".join(words)
    return text[0].upper() + text[1:]


def _word(part: str) -> str:
    if part in ACRONYMS:
        return part.upper()
    return ABBREVIATIONS.get(part, part)


def _plural(words: str) -> str:
    """`unanswered call` -> `unanswered calls`; enough English for activity type names."""
    if words.endswith(("s", "x", "ch", "sh")):
        return words if words.endswith("s") else words + "es"
    if words.endswith("y") and len(words) > 1 and words[-2] not in "aeiou":
        return words[:-1] + "ies"
    return words + "s"


def _lower_first(text: str) -> str:
    """`Unanswered calls` -> `unanswered calls`; an acronym (`BANT questions`) keeps its case."""
    first = text.split(" ", 1)[0]
    return text if len(first) > 1 and first.isupper() else text[:1].lower() + text[1:]


def _lower_words(name: str) -> str:
    return _lower_first(prettify(name))


def _activity_words(kind: str) -> str:
    """An activity type as a noun phrase: `call_unanswered` -> "unanswered call" (a trailing
    participle goes in front), `demo_request` -> "demo request"."""
    words = _lower_words(kind).split(" ")
    if len(words) > 1 and words[-1].endswith("ed"):
        words = [words[-1], *words[:-1]]
    return " ".join(words)


def activity_label(name: str) -> str | None:
    """Activity aggregates in words, or None when `name` is not one: `activity.call.14d` ->
    "Calls in the last 14 days", `activity.days_since_last` -> "Days since the last activity"."""
    words = activity_words(name)
    return words[0] if words else None


def activity_words(name: str) -> tuple[str, str | None] | None:
    """An activity aggregate's label and, for a count, its form for exactly one ("Demo request
    in the last 14 days"); None when `name` is not an activity aggregate."""
    if not name.startswith(ACTIVITY_PREFIX):
        return None
    if name == f"{ACTIVITY_PREFIX}first_channel":
        return "First-touch channel", None
    if name == f"{ACTIVITY_PREFIX}last_channel":
        return "Last-touch channel", None
    since = _SINCE.match(name)
    if since:
        kind = since.group("kind")
        what = _activity_words(kind) if kind else "activity"
        return f"Days since the last {what}", f"Day since the last {what}"
    count = _ACTIVITY_COUNT.match(name)
    if count:
        kind, days = count.group("kind"), int(count.group("days"))
        one = "activity" if kind == "total" else _activity_words(kind)
        many = "activities" if kind == "total" else _plural(one)
        span = "day" if days == 1 else f"{days} days"
        return (f"{many[0].upper()}{many[1:]} in the last {span}",
                f"{one[0].upper()}{one[1:]} in the last {span}")
    return None


@dataclass(frozen=True)
class FieldWords:
    """How one business field reads: its label, words for some of its values, and whether a
    number goes first ("3 unanswered calls in the last 14 days")."""

    label: str
    values: Mapping[str, str] = field(default_factory=dict)
    number_first: bool = False
    one: str | None = None  # the label after the number 1 ("1 demo request in ...")

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "values": dict(self.values),
                "number_first": self.number_first, "one": self.one}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> FieldWords:
        values = {str(k): str(v) for k, v in (state.get("values") or {}).items()}
        one = state.get("one")
        return cls(str(state["label"]), values, bool(state.get("number_first", False)),
                   str(one) if one else None)


def field_words(source: str, derive: str | None, given: Mapping[str, Any] | None) -> FieldWords:
    """A field's words: the spec's label and value words (`given`) over the generated ones."""
    values: dict[str, str] = {}
    number_first, one = False, None
    generated = activity_words(source)
    if generated is not None:
        label, one = generated
        number_first = one is not None
    elif derive == "count_filled":  # BANT questions answered: "3 BANT questions answered"
        label, one, number_first = "BANT questions answered", "BANT question answered", True
    else:
        label = prettify(source)
        if derive in DERIVED_SUFFIX:
            label = f"{label} {DERIVED_SUFFIX[derive]}"
    if derive == "present":
        values = {"1": PRESENT_WORDS[1.0], "0": PRESENT_WORDS[0.0]}
    if given:
        if given.get("label"):
            label, number_first, one = str(given["label"]), False, None
        values.update({str(k): str(v) for k, v in (given.get("values") or {}).items()})
    return FieldWords(label, values, number_first, one)


def resolve(features: Iterable[Any], spec_labels: Mapping[str, Any] | None = None
            ) -> dict[str, dict[str, Any]]:
    """Every business field's words, keyed by source, as stored in `bundle.json`.

    `features` are the builder's fitted features (their `source` and `derive`); `spec_labels`
    the spec's `labels` (field -> {label, values}), which win over generated words.
    """
    given = dict(spec_labels or {})
    out: dict[str, dict[str, Any]] = {}
    for feature in features:
        if feature.source in out:
            continue
        words = field_words(feature.source, feature.derive, _as_mapping(given.get(feature.source)))
        out[feature.source] = words.to_dict()
    return out


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        return value.model_dump()  # type: ignore[no-any-return]
    if isinstance(value, str):
        return {"label": value}
    return value  # type: ignore[no-any-return]


def tier_words(spec_words: Mapping[str, str] | None = None) -> dict[str, str]:
    """The word for each tier: the defaults (hot, warm, cool, cold) with the spec's over them."""
    return {**DEFAULT_TIER_WORDS, **dict(spec_words or {})}


def number_text(value: float) -> str:
    """A number as a person writes it: 3, 12.5, 0.25 (at most two decimals)."""
    if math.isinf(value):
        return "infinite" if value > 0 else "minus infinite"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def value_text(words: FieldWords, value: Any) -> str:
    """A reason's value in words: the spec's word for it, else the value itself."""
    if value is None:
        return MISSING_WORDS
    if isinstance(value, bool):
        key = "true" if value else "false"
        return words.values.get(key, words.values.get(str(value), "yes" if value else "no"))
    if isinstance(value, int | float):
        number = number_text(float(value))
        return words.values.get(number, number)
    text = str(value)
    return words.values.get(text, text)


def points_text(impact: float) -> str:
    """Score points for people: whole points (one decimal below 1), signed, "−" for minus."""
    size = abs(impact)
    shown = f"{size:.1f}" if round(size) < 1 else str(round(size))
    sign = "+" if impact > 0 else MINUS
    unit = "point" if shown == "1" else "points"
    return f"{sign}{shown} {unit}"


def reason_text(words: FieldWords, value: Any, impact: float) -> str:
    """One line a sales rep reads: "Previous campaign succeeded: +18 points",
    "3 unanswered calls in the last 14 days: −7 points"."""
    shown = value_text(words, value)
    if words.number_first and isinstance(value, int | float) and not isinstance(value, bool):
        label = words.one if words.one and value == 1 else words.label
        head = f"{shown} {_lower_first(label)}"
    else:
        head = f"{words.label} {shown}"
    return f"{head}: {points_text(impact)}"


def chance_text(probability: float) -> str:
    """A probability as people say it: "about 1 in 3 leads like this one convert" (0.33; one in
    N below one half, N to two figures), "about 7 in 10 ..." (0.7: tenths from one half);
    "fewer than 1 in 1,000" near zero, "almost every" near one."""
    p = float(probability)
    tail = "leads like this one convert"
    if not math.isfinite(p) or p < 0.001:
        return f"fewer than 1 in 1,000 {tail}"
    if p >= 0.95:
        return f"almost every lead like this one converts (about {round(p * 100)} in 100)"
    if p >= 0.5:
        return f"about {round(p * 10)} in 10 {tail}"
    one_in = 1.0 / p
    # two significant figures: 1 in 4, 1 in 12, 1 in 250, 1 in 1,300
    digits = max(0, len(str(int(one_in))) - 2)
    rounded = int(round(one_in / 10**digits) * 10**digits)
    return f"about 1 in {rounded:,} {tail}"
