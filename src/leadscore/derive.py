"""Fields derived from personal data, so the model can use what they say without storing them:
a job title's seniority and department, an e-mail address's kind of domain (free mail,
corporate, invalid). The raw values never become features (see `privacy`); these words do.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FREE_MAIL = frozenset(
    [
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.fr",
        "ymail.com",
        "hotmail.com",
        "hotmail.co.uk",
        "hotmail.fr",
        "outlook.com",
        "live.com",
        "msn.com",
        "aol.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "mail.com",
        "mail.ru",
        "yandex.ru",
        "yandex.com",
        "protonmail.com",
        "proton.me",
        "zoho.com",
        "qq.com",
        "163.com",
        "126.com",
        "rediffmail.com",
        "libero.it",
        "orange.fr",
        "free.fr",
        "laposte.net",
        "t-online.de",
        "seznam.cz",
        "wp.pl",
        "o2.pl",
        "btinternet.com",
        "comcast.net",
        "verizon.net",
        "att.net",
        "sbcglobal.net",
    ]
)

_SENIORITY = (  # first match wins: "VP of Engineering Operations Manager" is a VP
    (
        "c_level",
        re.compile(
            r"\b(chief|ceo|cto|cfo|coo|cmo|cio|cro|ciso|founder|co-founder|"
            r"owner|president|partner|managing director)\b"
        ),
    ),
    ("vp", re.compile(r"\b(vp|svp|evp|vice president|vice-president)\b")),
    ("director", re.compile(r"\b(director|head of|head)\b")),
    ("manager", re.compile(r"\b(manager|mgr|lead|supervisor|principal)\b")),
    ("intern", re.compile(r"\b(intern|internship|student|trainee|apprentice)\b")),
)
_DEPARTMENT = (
    (
        "sales",
        re.compile(
            r"\b(sales|account executive|business development|bdr|sdr|cro|"
            r"account manager|revenue)\b"
        ),
    ),
    ("marketing", re.compile(r"\b(marketing|cmo|growth|brand|content|seo|demand gen)\b")),
    (
        "engineering",
        re.compile(
            r"\b(engineer|engineering|developer|software|cto|it|devops|"
            r"technology|technical|architect|data|ciso|security)\b"
        ),
    ),
    (
        "finance",
        re.compile(
            r"\b(finance|financial|cfo|accounting|accountant|controller|"
            r"procurement|purchasing)\b"
        ),
    ),
    ("operations", re.compile(r"\b(operations|coo|ops|logistics|supply chain)\b")),
    ("hr", re.compile(r"\b(hr|human resources|people|talent|recruiter|recruiting)\b")),
    ("product", re.compile(r"\b(product)\b")),
    (
        "executive",
        re.compile(
            r"\b(ceo|founder|co-founder|owner|president|managing director|"
            r"general manager)\b"
        ),
    ),
)


def _first_match(title: str, table: tuple[tuple[str, re.Pattern[str]], ...], default: str) -> str:
    text = title.lower()
    return next((label for label, pattern in table if pattern.search(text)), default)


def seniority(title: str) -> str:
    return _first_match(title, _SENIORITY, "individual")


def department(title: str) -> str:
    return _first_match(title, _DEPARTMENT, "other")


def email_domain_type(email: str) -> str:
    """business / free / invalid: the address itself never leaves this function."""
    _, at, domain = email.strip().lower().rpartition("@")
    if not at or "." not in domain or not _ or " " in domain:
        return "invalid"
    return domain_type(domain)


def domain_type(domain: str) -> str:
    if domain == "@":
        return "invalid"
    return "free" if domain in FREE_MAIL else "business"


TEXT_DERIVATIONS: dict[str, Callable[[str], str]] = {
    "seniority": seniority,
    "department": department,
    "email_domain": email_domain_type,
}


def email_domains(array: pa.Array) -> pa.Array:
    """Each address's domain, lower-cased ("@" for an invalid address, null for none): the rule
    of `email_domain_type` (after the last "@", a "." and no space in it, something before it).

    Found with numpy on the string buffers (the positions of the last "@", "." and " " in each
    value) rather than a regular expression per address: 0.5 s per 1M addresses against 1.9 s,
    a quarter of a batch job's encoding time.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.offset:
        array = pa.concat_arrays([array])  # buffers starting at the first value
    n = len(array)
    wide = pa.types.is_large_string(array.type)
    validity, offset_buffer, data = array.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int64 if wide else np.int32, count=n + 1)
    raw = np.frombuffer(data, dtype=np.uint8)[: offsets[-1]] if data else np.zeros(0, np.uint8)
    start, end = offsets[:-1].astype(np.int64), offsets[1:].astype(np.int64)

    def last(byte: int) -> np.ndarray:
        """The position of each value's last `byte` (-1: none)."""
        where = np.flatnonzero(raw == byte)
        if not len(where):
            return np.full(n, -1, dtype=np.int64)
        k = np.searchsorted(where, end) - 1
        found = np.where(k >= 0, where[np.maximum(k, 0)], -1)
        return np.where(found >= start, found, -1)

    at, dot, space = last(ord("@")), last(ord(".")), last(ord(" "))
    valid = (at > start) & (dot > at) & (space < at)
    first = np.where(valid, at + 1, end)
    # each value split in two over the same bytes, no copy: value 2i its head (up to the "@"),
    # value 2i + 1 its domain; Arrow's take then copies the domains alone (a numpy gather of
    # every domain byte through an index array cost three times as much)
    halves = np.empty(2 * n + 1, dtype=np.int64)
    halves[0:-1:2], halves[1::2], halves[-1] = start, first, end[-1] if n else 0
    split = pa.LargeStringArray.from_buffers(2 * n, pa.py_buffer(halves), pa.py_buffer(raw))
    domains = pc.take(split, pa.array(np.arange(1, 2 * n, 2, dtype=np.int64)))
    domains = pc.cast(pc.utf8_lower(domains), pa.string())
    invalid = pc.if_else(pc.is_valid(array), pa.scalar("@"), pa.scalar(None, pa.string()))
    return pc.if_else(pa.array(valid), domains, invalid)
