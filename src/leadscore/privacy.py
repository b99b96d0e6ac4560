"""Personal data in columns nobody declared: e-mail addresses and phone numbers found by shape.

A spec lists its PII columns, but a free-text `notes` field or a `contact` column can hold
addresses too, and as a categorical feature every frequent value would become a category level
in `bundle.json`, in MLflow and in reasons. Training scans candidate text columns here; the
feature builder asks the same question of every level before storing it. Findings are counts,
never values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# up to this many non-empty values of a column are read; a column is personal data when at least
# this share of them holds an e-mail address or a phone number (a few stray ones in a free-text
# field are not a column of contacts, and their levels are filtered anyway)
SAMPLE_SIZE = 2000
FLAG_SHARE = 0.05

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")

# Phone numbers: 7-15 digits written the way people write them. Plain digit runs (ids, amounts,
# zip codes) never count: a number needs a leading "+", an area code in parentheses, or three or
# more groups of digits split by spaces, dashes or dots. Dates and thousands-grouped amounts,
# which share that shape, are ruled out below.
PHONE = re.compile(
    r"""
    (?<![\w+./\-])                                  # not the tail of a longer token
    (?:
        \+\d(?:[\s.\-()]*\d){6,14}                  # +44 20 7946 0958, +4420794609...
      | \(\d{1,5}\)\s?\d{2,5}(?:[\s.\-]\d{2,5})*    # (555) 123-4567
      | \d{1,5}(?:[\s.\-]\d{2,5}){2,}               # 555-123-4567, 01 23 45 67 89
    )
    (?![\w/]|[.\-]\d)                               # nor the head of one
    """,
    re.VERBOSE,
)
_DATE = re.compile(
    r"(\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})(\s\d{1,2})?"
)
_THOUSANDS = re.compile(r"\d{1,3}(?:([\s.])\d{3})(?:\1\d{3})*")
# what a value must contain to be worth the exact check (Arrow's RE2, over whole columns)
_CANDIDATE = r"@|[0-9][0-9\s().\-]{5,}[0-9]|\+[0-9]"


def looks_like_email(text: str) -> bool:
    return EMAIL.search(text) is not None


def looks_like_phone(text: str) -> bool:
    for match in PHONE.finditer(text):
        found = match.group(0)
        digits = sum(ch.isdigit() for ch in found)
        if not 7 <= digits <= 15:
            continue
        if not found.startswith("+") and (
            _DATE.fullmatch(found) or _THOUSANDS.fullmatch(found)
        ):
            continue
        return True
    return False


def detect_contact_details(values: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Which values hold an e-mail address and which a phone number (two boolean arrays).

    Arrow's regex engine picks the few candidates (an `@`, a long run of digits) in one
    vectorised pass; only those are checked exactly, so a column of a million distinct values
    costs milliseconds, not a Python call each.
    """
    array = pa.array([str(v) for v in values], type=pa.string())
    email = np.zeros(len(array), dtype=bool)
    phone = np.zeros(len(array), dtype=bool)
    if len(array) == 0:
        return email, phone
    candidate = pc.match_substring_regex(array, _CANDIDATE).to_numpy(zero_copy_only=False)
    where = np.flatnonzero(candidate)
    for i, text in zip(where, array.take(pa.array(where)).to_pylist(), strict=True):
        email[i] = looks_like_email(text)
        phone[i] = not email[i] and looks_like_phone(text)
    return email, phone


def mark_contact_details(values: Iterable[str]) -> np.ndarray:
    """True where a value looks like an e-mail address or a phone number."""
    email, phone = detect_contact_details(values)
    return email | phone


@dataclass(frozen=True)
class PersonalDataFinding:
    """How many sampled values of one column looked like contact details: counts only."""

    column: str
    sampled: int
    emails: int
    phones: int

    @property
    def share(self) -> float:
        return (self.emails + self.phones) / self.sampled if self.sampled else 0.0

    @property
    def flagged(self) -> bool:
        return self.sampled > 0 and self.share >= FLAG_SHARE

    def describe(self) -> str:
        """The leak report's reason: what was found and how often, never a value."""
        counted = ((self.emails, "an e-mail address"), (self.phones, "a phone number"))
        kinds = [f"{count} {kind}" for count, kind in counted if count]
        return (
            f"personal data: {self.share:.0%} of {self.sampled} sampled non-empty values look "
            f"like contact details ({', '.join(kinds)})"
        )

    def as_dict(self) -> dict[str, int]:
        return {"sampled": self.sampled, "emails": self.emails, "phones": self.phones}


def scan_column(
    column: str,
    values: pd.Series,
    missing_values: Iterable[str] = ("",),
    seed: int = 0,
) -> PersonalDataFinding:
    """Count the e-mail addresses and phone numbers among up to `SAMPLE_SIZE` non-empty values
    (a seeded random sample, so a rerun finds the same; drawn before any text is cleaned, so a
    million-row column costs what a few thousand rows do)."""
    present = values.dropna()
    if len(present) > 4 * SAMPLE_SIZE:
        rng = np.random.default_rng(seed)
        present = present.iloc[np.sort(rng.choice(len(present), 4 * SAMPLE_SIZE, replace=False))]
    text = present.astype(str).str.strip()
    text = text[(text != "") & ~text.isin(list(missing_values))]
    if len(text) > SAMPLE_SIZE:
        rng = np.random.default_rng(seed)
        text = text.iloc[np.sort(rng.choice(len(text), SAMPLE_SIZE, replace=False))]
    email, phone = detect_contact_details(text.tolist())
    return PersonalDataFinding(column, len(text), int(email.sum()), int(phone.sum()))
