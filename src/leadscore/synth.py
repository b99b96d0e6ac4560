"""A seeded, vectorised synthetic B2B CRM (leads, activity log, conversions) whose conversions
come from a hidden logit, so models can be scored against the true probability.

Past 600 lines on purpose: the vocabularies, the persona and firmographic draws, the activity
log and the hidden logit are one generator whose parts share the same truth (a field's effect
is stated once, next to how it is drawn); split apart, a reader would chase the truth across
modules."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

log = logging.getLogger(__name__)

FloatArray = np.ndarray
IntArray = np.ndarray

DAY = 86_400  # seconds
NAT = np.iinfo(np.int64).min  # what NaT is underneath a datetime64 column
BASE_RATE = 0.25  # the share of leads that convert, whatever the seed or the size
ACTIVITY_HORIZON_DAYS = 60  # activity is drawn over this many days after a lead is created
TIME_BITS = 23  # seconds within the horizon fit in 23 bits (97 days), used to sort in one pass
TYPE_BITS = 4
POST_CONVERSION_KEEP = 0.35  # customers still browse and open mail, but less than prospects
EARLY_CONVERTER_SHARE = 0.05
CONVERSION_DELAY_DAYS = 20.0  # mean wait after the as-of point for the ordinary converters

# --------------------------------------------------------------------------- vocabularies
# Every table below is (value, weight, logit effect, ...); the effects are the hidden truth.

CHANNELS = (
    # name, share of leads, shift of latent intent, logit effect
    ("direct", 0.11, 0.2, 0.2),
    ("organic_search", 0.20, 0.0, 0.0),
    ("paid_search", 0.15, 0.0, -0.1),
    ("social", 0.10, -0.3, -0.45),
    ("email", 0.09, -0.1, -0.25),
    ("referral", 0.07, 0.6, 0.75),
    ("referral_programme", 0.04, 0.7, 0.85),
    ("event", 0.07, 0.4, 0.55),
    ("cold_outbound", 0.17, -0.8, -1.0),
)
EVENT_CHANNEL = 7
COLD_OUTBOUND = 8

STAGES = ("subscriber", "lead", "mql", "sql")
STAGE_LOGIT = np.array([-0.7, -0.1, 0.3, 0.8])
STAGE_INTENT_SLOPE = np.array([-0.5, 0.0, 0.4, 0.8])
# how a lead enters the CRM depends on where it came from (rows follow CHANNELS)
STAGE_BY_CHANNEL = np.array(
    [
        [-0.2, 0.8, 0.4, -0.3],
        [0.6, 0.7, 0.2, -1.0],
        [0.2, 0.9, 0.2, -1.0],
        [0.9, 0.6, -0.2, -1.5],
        [0.5, 0.6, 0.4, -1.0],
        [-1.0, 0.6, 0.4, 0.4],
        [-1.2, 0.6, 0.5, 0.5],
        [-0.5, 1.0, 0.5, -0.3],
        [-2.0, 1.5, -0.3, -0.6],
    ]
)
# BANT answers go missing more often the earlier the stage: nobody has qualified the lead yet
STAGE_MISSING = np.array([0.62, 0.42, 0.28, 0.14])

SENIORITIES = ("intern", "individual", "manager", "director", "vp", "c_level")
SENIORITY_LOGIT = np.array([-1.4, -0.45, 0.1, 0.45, 0.5, 0.35])
DEPARTMENTS = (
    "sales", "marketing", "engineering", "operations", "finance", "it", "hr", "executive",
)  # fmt: skip
DEPARTMENT_LOGIT = np.array([0.3, 0.25, -0.15, 0.1, -0.05, 0.0, -0.3, 0.0])

JOB_TITLES: tuple[tuple[str, str, str, float], ...] = (
    # title as typed into a form, seniority, department, weight within the seniority
    ("Sales Intern", "intern", "sales", 3),
    ("Marketing Intern", "intern", "marketing", 3),
    ("Software Engineering Intern", "intern", "engineering", 2),
    ("Finance Intern", "intern", "finance", 1),
    ("HR Intern", "intern", "hr", 1),
    ("Operations Intern", "intern", "operations", 1),
    ("Account Executive", "individual", "sales", 5),
    ("Sales Development Representative", "individual", "sales", 3),
    ("SDR", "individual", "sales", 1),
    ("Business Development Representative", "individual", "sales", 2),
    ("Marketing Specialist", "individual", "marketing", 3),
    ("Marketing Coordinator", "individual", "marketing", 2),
    ("Content Marketing Specialist", "individual", "marketing", 1),
    ("Growth Marketer", "individual", "marketing", 1),
    ("Software Engineer", "individual", "engineering", 5),
    ("Senior Software Engineer", "individual", "engineering", 3),
    ("Sr. Software Engineer", "individual", "engineering", 1),
    ("DevOps Engineer", "individual", "engineering", 1),
    ("Data Analyst", "individual", "engineering", 2),
    ("Operations Analyst", "individual", "operations", 2),
    ("Financial Analyst", "individual", "finance", 2),
    ("Accountant", "individual", "finance", 2),
    ("HR Generalist", "individual", "hr", 1),
    ("Recruiter", "individual", "hr", 1),
    ("IT Specialist", "individual", "it", 1),
    ("Systems Administrator", "individual", "it", 2),
    ("Sales Manager", "manager", "sales", 4),
    ("Account Manager", "manager", "sales", 3),
    ("Marketing Manager", "manager", "marketing", 4),
    ("Demand Generation Manager", "manager", "marketing", 2),
    ("Engineering Manager", "manager", "engineering", 3),
    ("Product Manager", "manager", "engineering", 3),
    ("Operations Manager", "manager", "operations", 3),
    ("Office Manager", "manager", "operations", 1),
    ("Finance Manager", "manager", "finance", 2),
    ("HR Manager", "manager", "hr", 2),
    ("IT Manager", "manager", "it", 2),
    ("Director of Sales", "director", "sales", 3),
    ("Sales Director", "director", "sales", 2),
    ("Head of Sales", "director", "sales", 2),
    ("Director of Marketing", "director", "marketing", 3),
    ("Marketing Director", "director", "marketing", 2),
    ("Head of Marketing", "director", "marketing", 2),
    ("Director of Engineering", "director", "engineering", 2),
    ("Head of Engineering", "director", "engineering", 1),
    ("Director of Operations", "director", "operations", 2),
    ("Head of Operations", "director", "operations", 2),
    ("Finance Director", "director", "finance", 2),
    ("IT Director", "director", "it", 1),
    ("Head of IT", "director", "it", 1),
    ("Director, People Operations", "director", "hr", 1),
    ("VP of Sales", "vp", "sales", 3),
    ("VP Sales", "vp", "sales", 1),
    ("Vice President of Sales", "vp", "sales", 1),
    ("SVP, Sales", "vp", "sales", 1),
    ("VP of Marketing", "vp", "marketing", 3),
    ("VP Marketing", "vp", "marketing", 1),
    ("VP of Engineering", "vp", "engineering", 2),
    ("VP of Operations", "vp", "operations", 2),
    ("VP Finance", "vp", "finance", 1),
    ("VP of People", "vp", "hr", 1),
    ("CEO", "c_level", "executive", 4),
    ("Chief Executive Officer", "c_level", "executive", 1),
    ("Founder & CEO", "c_level", "executive", 2),
    ("Co-Founder", "c_level", "executive", 2),
    ("Owner", "c_level", "executive", 2),
    ("Managing Director", "c_level", "executive", 1),
    ("CTO", "c_level", "engineering", 2),
    ("Chief Technology Officer", "c_level", "engineering", 1),
    ("CFO", "c_level", "finance", 1),
    ("COO", "c_level", "operations", 1),
    ("CMO", "c_level", "marketing", 1),
    ("Chief Revenue Officer", "c_level", "sales", 1),
    ("CIO", "c_level", "it", 1),
)

INDUSTRIES = (
    ("software", 0.18, 0.35),
    ("financial_services", 0.12, 0.2),
    ("healthcare", 0.11, 0.0),
    ("manufacturing", 0.13, -0.1),
    ("retail", 0.11, -0.3),
    ("education", 0.08, -0.5),
    ("professional_services", 0.13, 0.15),
    ("media", 0.07, -0.2),
    ("logistics", 0.07, -0.05),
)

SIZES = (
    # band, share of leads, logit effect, share of free-mail addresses
    ("1-10", 0.20, -0.6, 0.50),
    ("11-50", 0.25, -0.1, 0.30),
    ("51-200", 0.22, 0.3, 0.15),
    ("201-1000", 0.16, 0.35, 0.10),
    ("1001-5000", 0.10, 0.15, 0.08),
    ("5000+", 0.07, -0.15, 0.06),
)
# small firms are run by their founders; large ones answer through their staff (rows: SIZES)
SENIORITY_BY_SIZE = np.array(
    [
        [0.03, 0.30, 0.12, 0.08, 0.05, 0.42],
        [0.04, 0.38, 0.22, 0.14, 0.08, 0.14],
        [0.05, 0.42, 0.25, 0.15, 0.08, 0.05],
        [0.05, 0.45, 0.26, 0.15, 0.07, 0.02],
        [0.05, 0.47, 0.27, 0.14, 0.06, 0.01],
        [0.06, 0.48, 0.27, 0.13, 0.05, 0.01],
    ]
)

COUNTRIES = (
    # ISO code, share, logit effect, calling code, top-level domain
    ("US", 0.40, 0.1, "1", "com"),
    ("GB", 0.11, 0.1, "44", "co.uk"),
    ("CA", 0.07, 0.05, "1", "ca"),
    ("DE", 0.07, 0.0, "49", "de"),
    ("IN", 0.07, -0.4, "91", "in"),
    ("FR", 0.05, -0.05, "33", "fr"),
    ("AU", 0.05, 0.05, "61", "com.au"),
    ("NL", 0.04, 0.05, "31", "nl"),
    ("BR", 0.04, -0.3, "55", "com.br"),
    ("ES", 0.03, -0.15, "34", "es"),
    ("SE", 0.02, 0.05, "46", "se"),
    ("SG", 0.02, 0.0, "65", "sg"),
    ("MX", 0.02, -0.3, "52", "com.mx"),
    ("IE", 0.01, 0.05, "353", "ie"),
)

FIRST_NAMES = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Oliver", "Sophia", "Elijah", "Isabella", "James",
    "Mia", "William", "Amelia", "Benjamin", "Harper", "Lucas", "Evelyn", "Henry", "Abigail",
    "Alexander", "Priya", "Arjun", "Mei", "Wei", "Sofia", "Mateo", "Lena", "Jonas", "Chloe",
    "Hugo", "Aisha", "Omar", "Yuki", "Kenji", "Fatima", "Diego", "Ingrid", "Lars", "Zoe", "Ethan",
)  # fmt: skip
LAST_NAMES = (
    # as written, as it appears in an e-mail address
    ("Smith", "smith"), ("Johnson", "johnson"), ("Williams", "williams"), ("Brown", "brown"),
    ("Jones", "jones"), ("Garcia", "garcia"), ("Miller", "miller"), ("Davis", "davis"),
    ("Rodriguez", "rodriguez"), ("Martinez", "martinez"), ("Hernandez", "hernandez"),
    ("Lopez", "lopez"), ("Wilson", "wilson"), ("Anderson", "anderson"), ("Thomas", "thomas"),
    ("Taylor", "taylor"), ("Moore", "moore"), ("Jackson", "jackson"), ("Martin", "martin"),
    ("Lee", "lee"), ("Patel", "patel"), ("Kumar", "kumar"), ("Chen", "chen"), ("Wang", "wang"),
    ("Müller", "mueller"), ("Schmidt", "schmidt"), ("O'Brien", "obrien"), ("Dubois", "dubois"),
    ("Rossi", "rossi"), ("Silva", "silva"), ("Santos", "santos"), ("Nguyen", "nguyen"),
    ("Kim", "kim"), ("Tanaka", "tanaka"), ("Johansson", "johansson"), ("de Vries", "devries"),
    ("Murphy", "murphy"), ("Kowalski", "kowalski"), ("Novak", "novak"), ("Ali", "ali"),
)  # fmt: skip
FREE_MAIL = (
    ("gmail.com", 0.55), ("yahoo.com", 0.15), ("hotmail.com", 0.15), ("outlook.com", 0.15),
)  # fmt: skip
COMPANY_PARTS = (
    (
        "Blue", "North", "Bright", "Iron", "Silver", "Red", "Green", "Summit", "Clear", "Swift",
        "Atlas", "Nova", "Pioneer", "Granite", "Maple", "Harbor", "Cedar", "Golden", "Quantum",
        "Vertex", "Apex", "Prime", "Evergreen", "Polar", "Sun", "Crystal", "Falcon", "Eagle",
        "Orbit", "Pacific", "Urban", "Metro", "Alpine", "Coastal", "Liberty", "Beacon", "Union",
        "Sterling", "Copper", "Lunar",
    ),
    (
        "river", "peak", "stone", "field", "wave", "bridge", "point", "gate", "line", "works",
        "forge", "path", "light", "leaf", "spring", "rock", "view", "wind", "star", "core",
        "crest", "ridge", "bay", "vale", "hill", "port", "mark", "scale", "shift", "stream",
    ),
    (
        "Analytics", "Systems", "Labs", "Group", "Logistics", "Health", "Software", "Partners",
        "Capital", "Foods", "Retail", "Media", "Solutions", "Industries", "Consulting",
        "Learning", "Networks", "Energy", "Bio", "Tech",
    ),
)  # fmt: skip
LEADS_PER_COMPANY = 5

BUDGET = ("yes", "no", "unknown")
AUTHORITY = ("yes", "no")
NEED = ("low", "medium", "high")
TIMELINE = ("now", "this_quarter", "this_year", "none")
BANT = {
    # answers, base logits, slope on latent intent, logit effects, extra missing share
    "budget": (BUDGET, [0.0, -0.2, 0.3], [0.8, -0.6, 0.0], [0.6, -0.8, -0.05], 0.0),
    "need": (NEED, [0.0, 0.3, -0.2], [-0.8, 0.0, 0.8], [-0.6, 0.1, 0.6], -0.02),
    "timeline": (
        TIMELINE, [-1.0, -0.2, 0.3, 0.0], [0.8, 0.5, 0.0, -0.8], [0.7, 0.45, 0.0, -0.9], 0.05,
    ),
}  # fmt: skip
# authority is a yes/no about the person, so it follows seniority rather than intent
AUTHORITY_BY_SENIORITY = np.array([-2.5, -1.2, 0.0, 0.8, 1.5, 2.5])
AUTHORITY_LOGIT = np.array([0.35, -0.3])
AUTHORITY_MISSING = 0.1

ACTIVITY_TYPES = (
    # type, default channel, base count over the horizon, slope on intent, decay (days),
    # logit weight on log1p(count in the first as_of_days)
    ("web_visit", "web", 6.0, 0.3, 12.0, 0.08),
    ("pricing_page_view", "web", 1.0, 0.8, 12.0, 0.45),
    ("form_fill", "web", 0.8, 0.4, 10.0, 0.25),
    ("email_open", "email", 6.5, 0.1, 20.0, 0.05),
    ("email_click", "email", 1.4, 0.5, 20.0, 0.2),
    ("demo_request", "web", 0.18, 1.0, 12.0, 1.2),
    ("free_trial_start", "web", 0.14, 0.9, 10.0, 0.9),
    ("call_answered", "phone", 0.7, 0.5, 10.0, 0.35),
    ("call_unanswered", "phone", 1.6, -0.5, 10.0, -0.5),
)
ACTIVITY_CHANNELS = ("web", "email", "phone", "event")
FORM_FILL, DEMO_REQUEST, CALL_ANSWERED, CALL_UNANSWERED = 2, 5, 7, 8
EVENT_SCAN_SHARE = 0.6  # forms and demo requests of event leads are badge scans at the booth
ACTIVITY_SCALE_SIGMA = 0.7  # lead-to-lead spread of activity beyond what intent explains
# web, pricing, form, open, click, demo, trial, answered, unanswered
_CALLS = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1], dtype=bool)
_WEB = np.array([1, 1, 1, 0, 0, 1, 1, 0, 0], dtype=bool)
_MAIL = np.array([0, 0, 0, 1, 1, 0, 0, 0, 0], dtype=bool)

FREE_MAIL_LOGIT = -0.25
BUDGET_AND_AUTHORITY_LOGIT = 0.3
FOUNDER_OF_SMALL_FIRM_LOGIT = 0.3


@dataclass(frozen=True)
class SynthData:
    """One synthetic CRM export; `truth` is what no real export has: the true probability."""

    leads: pd.DataFrame  # one row per lead
    activities: pd.DataFrame  # activity log, sorted by lead then time
    conversions: pd.DataFrame  # lead_id, converted_at  (only leads that converted)
    truth: pd.DataFrame  # lead_id, p_true  (true conversion probability from the hidden logit)


# --------------------------------------------------------------------------- sampling helpers


def _column(table: tuple[tuple[object, ...], ...], index: int) -> np.ndarray:
    return np.array([row[index] for row in table])


def _normalised(weights: np.ndarray) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    return weights / weights.sum(axis=-1, keepdims=True)


def _draw(rng: np.random.Generator, weights: np.ndarray, size: int) -> IntArray:
    """Codes drawn from one fixed distribution (int16: every vocabulary here is small)."""
    return rng.choice(len(weights), size=size, p=_normalised(weights)).astype(np.int16)


def _draw_grouped(rng: np.random.Generator, group: IntArray, probs: np.ndarray) -> IntArray:
    """Codes drawn from `probs[group]` without materialising one row of probabilities per lead.

    Each group's cumulative distribution is shifted by its group number, so a single
    `searchsorted` over all groups finds every lead's code; this keeps 1M leads x 70 titles
    out of memory.
    """
    n_groups, n_codes = probs.shape
    cumulative = np.cumsum(_normalised(probs), axis=1)
    cumulative[:, -1] = 1.0
    flat = (cumulative + np.arange(n_groups)[:, None]).ravel()
    u = rng.random(len(group)) * (1.0 - 1e-9)
    found = np.searchsorted(flat, group + u, side="right") - group.astype(np.int64) * n_codes
    return np.minimum(found, n_codes - 1).astype(np.int16)


def _draw_rows(rng: np.random.Generator, logits: np.ndarray) -> IntArray:
    """One code per row from that row's own softmax (for answers that depend on intent)."""
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    cumulative = np.cumsum(weights, axis=1)
    u = rng.random(len(logits)) * cumulative[:, -1]
    return (u[:, None] >= cumulative[:, :-1]).sum(axis=1).astype(np.int16)


def _sigmoid(x: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))


def _intercept_for(logit: FloatArray, rate: float) -> float:
    """The shift that makes the mean true probability equal `rate` (bisection: it is monotone),
    so the base rate stays put however the effects above are tuned."""
    low, high = -30.0, 30.0
    for _ in range(60):
        mid = (low + high) / 2.0
        if float(_sigmoid(logit + mid).mean()) < rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


def _categorical(codes: IntArray, values: tuple[str, ...] | np.ndarray) -> pd.Categorical:
    """Codes (-1 for missing) as a categorical: a byte a lead instead of a string."""
    return pd.Categorical.from_codes(codes, categories=pd.Index(list(values), dtype="str"))


TEXT = pa.large_string()  # what backs pandas' "str" dtype


def _vocab(values: list[str] | np.ndarray) -> pa.Array:
    return pa.array(list(values), type=TEXT)


def _take(vocab: pa.Array, codes: IntArray) -> pa.Array:
    """Strings by code: building 1M strings in Arrow costs milliseconds, in Python seconds."""
    return vocab.take(pa.array(codes))


def _concat(*parts: pa.Array | str) -> pa.Array:
    pieces = [pa.scalar(part, type=TEXT) if isinstance(part, str) else part for part in parts]
    return pc.binary_join_element_wise(*pieces, pa.scalar("", type=TEXT))


def _digits(values: IntArray, width: int) -> pa.Array:
    """Integers as zero-padded text, e.g. 123 -> "0123"."""
    return pc.utf8_lpad(pc.cast(pa.array(values), TEXT), width=width, padding="0")


def _strings(values: pa.Array, missing: np.ndarray | None = None) -> pd.Series:
    """An Arrow string array as a pandas "str" column (no copy), empty where `missing`."""
    if missing is not None:
        values = pc.if_else(pa.array(missing), pa.scalar(None, type=TEXT), values)
    return pd.Series(pd.array(values, dtype="str"))


# --------------------------------------------------------------------------- the generator


class _Contacts(NamedTuple):
    name: pa.Array
    email: pa.Array
    email_missing: np.ndarray
    free_mail: np.ndarray
    phone: pa.Array
    phone_missing: np.ndarray


class _Log(NamedTuple):
    """The activity log as parallel arrays: lead index, seconds after creation, type code."""

    lead: IntArray
    offset: IntArray
    kind: IntArray


def generate(
    n_leads: int, seed: int = 0, start: str = "2024-01-01", days: int = 540, as_of_days: int = 14
) -> SynthData:
    """A synthetic CRM of `n_leads` leads created over `days` days from `start`.

    Conversion is drawn from a logit that only sees what is on record `as_of_days` after a lead
    is created (its fields and its activity so far), so a point-in-time model can approach the
    truth; later activity carries no true signal, only leakage (it thins out after a purchase).
    """
    if n_leads < 1:
        raise ValueError(f"n_leads must be at least 1, got {n_leads}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if not 1 <= as_of_days < ACTIVITY_HORIZON_DAYS:
        raise ValueError(f"as_of_days must be in [1, {ACTIVITY_HORIZON_DAYS}), got {as_of_days}")
    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    n = n_leads

    first_day = pd.Timestamp(start)
    if first_day.tzinfo is not None:
        first_day = first_day.tz_convert(None)
    origin = (first_day - pd.Timestamp(0)) // pd.Timedelta(seconds=1)
    created = origin + _creation_seconds(rng, n, days, first_day.dayofweek)

    # firmographics belong to the company, so colleagues share them
    companies = _companies(rng, max(1, n // LEADS_PER_COMPANY))
    company = rng.integers(0, len(companies["size"]), size=n)
    industry, size, country = (companies[key][company] for key in ("industry", "size", "country"))

    channel = _draw(rng, _column(CHANNELS, 1).astype(float), n)
    # intent is hidden: it shapes the stage, the BANT answers and the activity, never the logit
    intent = rng.standard_normal(n) + _column(CHANNELS, 2).astype(float)[channel]

    seniority = _draw_grouped(rng, size, SENIORITY_BY_SIZE)
    title_seniority = np.array([SENIORITIES.index(row[1]) for row in JOB_TITLES])
    title_weights = np.array([row[3] for row in JOB_TITLES], dtype=float)
    in_seniority = title_seniority[None, :] == np.arange(len(SENIORITIES))[:, None]
    title = _draw_grouped(rng, seniority, np.where(in_seniority, title_weights, 0.0))
    department = np.array([DEPARTMENTS.index(row[2]) for row in JOB_TITLES])[title]

    stage = _draw_rows(rng, STAGE_BY_CHANNEL[channel] + intent[:, None] * STAGE_INTENT_SLOPE)
    bant = _bant(rng, intent, seniority, size, stage)
    contacts = _contact_details(rng, companies, company, size, country)

    log_, early = _activities(rng, intent, channel, stage, as_of_days)
    logit = _hidden_logit(
        channel=channel, stage=stage, seniority=seniority, department=department,
        industry=industry, size=size, country=country, bant=bant,
        free_mail=contacts.free_mail & ~contacts.email_missing, early=early,
    )  # fmt: skip
    logit += _intercept_for(logit, BASE_RATE)
    p_true = _sigmoid(logit)
    converted = rng.random(n) < p_true
    conversion = _conversion_offsets(rng, converted, as_of_days)
    log_ = _thin_after_conversion(rng, log_, conversion, as_of_days)

    lead_ids = _lead_ids(n)
    leads = pd.DataFrame(
        {
            "lead_id": _strings(lead_ids),
            "created_at": _timestamps(created.copy()),
            "name": _strings(contacts.name),
            "email": _strings(contacts.email, contacts.email_missing),
            "phone": _strings(contacts.phone, contacts.phone_missing),
            "source_channel": _categorical(channel, _column(CHANNELS, 0)),
            "job_title": _strings(_take(_vocab([row[0] for row in JOB_TITLES]), title)),
            "seniority": _categorical(seniority, SENIORITIES),
            "industry": _categorical(industry, _column(INDUSTRIES, 0)),
            "company_size": _categorical(size, _column(SIZES, 0)),
            "country": _categorical(country, _column(COUNTRIES, 0)),
            "budget": _categorical(bant["budget"], BUDGET),
            "authority": _categorical(bant["authority"], AUTHORITY),
            "need": _categorical(bant["need"], NEED),
            "timeline": _categorical(bant["timeline"], TIMELINE),
            "stage_at_creation": _categorical(stage, STAGES),
            "converted": converted.astype(np.int64),
            "converted_at": _timestamps(np.where(converted, created + conversion, NAT)),
        }
    )
    activities = _activity_frame(rng, log_, leads["lead_id"], created, channel)
    conversions = leads.loc[converted, ["lead_id", "converted_at"]].reset_index(drop=True)
    truth = pd.DataFrame({"lead_id": leads["lead_id"], "p_true": p_true})
    log.info(
        "generated %d leads (%.1f%% converted) and %d activities in %.1fs",
        n, 100.0 * converted.mean(), len(activities), time.perf_counter() - began,
    )  # fmt: skip
    return SynthData(leads=leads, activities=activities, conversions=conversions, truth=truth)


def _timestamps(seconds: IntArray) -> pd.Series:
    """Epoch seconds (NAT where absent) as a datetime64[ns] column, as `data.parse_times` makes.

    Works in place on `seconds`: the activity log's 20M timestamps are not copied twice.
    """
    np.multiply(seconds, 1_000_000_000, out=seconds, where=seconds != NAT)
    return pd.Series(seconds.view("datetime64[ns]"), copy=False)


def _lead_ids(n: int) -> pa.Array:
    return _concat("L", _digits(np.arange(1, n + 1), max(7, len(str(n)))))


def _creation_seconds(rng: np.random.Generator, n: int, days: int, weekday: int) -> IntArray:
    """Sorted creation times with a working-week rhythm (fewer leads at weekends and at night),
    as a real inbound funnel shows, but the same mix of leads every week: no trend in the rate."""
    weekend = (weekday + np.arange(days)) % 7 >= 5  # Saturday and Sunday
    day_weights = np.where(weekend, 0.35, 1.0)
    day = rng.choice(days, size=n, p=day_weights / day_weights.sum())
    office = rng.random(n) < 0.8
    second = np.where(
        office,
        np.clip(rng.normal(14.5 * 3600, 3.0 * 3600, size=n), 0, DAY - 1),
        rng.integers(0, DAY, size=n),
    ).astype(np.int64)
    return np.sort(day.astype(np.int64) * DAY + second)


def _companies(rng: np.random.Generator, wanted: int) -> dict[str, Any]:
    """A pool of invented companies with their own industry, size band, country and domain."""
    first, middle, last = (len(parts) for parts in COMPANY_PARTS)
    combos = first * middle * last
    count = min(wanted, combos)
    pick = rng.choice(combos, size=count, replace=False)
    i, rest = np.divmod(pick, middle * last)
    j, k = np.divmod(rest, last)
    country = _draw(rng, _column(COUNTRIES, 1).astype(float), count)
    # a US company, or half of the others, uses .com; the rest their country's domain
    dot_com = (country == 0) | (rng.random(count) < 0.5)
    tld = _take(_vocab(["com", *(row[4] for row in COUNTRIES)]), np.where(dot_com, 0, country + 1))
    words = [_vocab([part.lower() for part in parts]) for parts in COMPANY_PARTS]
    stem = _concat(*(_take(vocab, code) for vocab, code in zip(words, (i, j, k), strict=True)))
    return {
        "domain": _concat(stem, ".", tld),
        "industry": _draw(rng, _column(INDUSTRIES, 1).astype(float), count),
        "size": _draw(rng, _column(SIZES, 1).astype(float), count),
        "country": country,
    }


def _bant(
    rng: np.random.Generator, intent: FloatArray, seniority: IntArray, size: IntArray,
    stage: IntArray,
) -> dict[str, IntArray]:  # fmt: skip
    """BANT answers (-1 when not asked yet): intent tilts them, the stage decides if they exist."""
    n = len(intent)
    answers: dict[str, IntArray] = {}
    for field, (_, base, slope, _, extra_missing) in BANT.items():
        codes = _draw_rows(rng, np.asarray(base) + intent[:, None] * np.asarray(slope))
        if field == "budget":  # a one-person shop rarely has a budget line for software
            codes[(size == 0) & (codes == 0) & (rng.random(n) < 0.4)] = 2
        codes[rng.random(n) < STAGE_MISSING[stage] + extra_missing] = -1
        answers[field] = codes
    has_authority = rng.random(n) < _sigmoid(AUTHORITY_BY_SENIORITY[seniority] + 0.3 * intent)
    authority = np.where(has_authority, 0, 1).astype(np.int16)
    authority[rng.random(n) < STAGE_MISSING[stage] + AUTHORITY_MISSING] = -1
    answers["authority"] = authority
    return answers


def _contact_details(
    rng: np.random.Generator,
    companies: dict[str, Any],
    company: IntArray,
    size: IntArray,
    country: IntArray,
) -> _Contacts:
    """Names, e-mail addresses and phone numbers; people at small firms use free mail more."""
    n = len(company)
    # every (first, last) pair is spelt once, then looked up by code
    firsts = np.repeat(np.array(FIRST_NAMES, dtype=object), len(LAST_NAMES))
    lasts = np.tile(np.array([row[0] for row in LAST_NAMES], dtype=object), len(FIRST_NAMES))
    first_mail = np.char.lower(firsts.astype(str)).astype(object)
    last_mail = np.tile(np.array([row[1] for row in LAST_NAMES], dtype=object), len(FIRST_NAMES))
    dotted = first_mail + "." + last_mail
    initial = np.array([name[0] for name in first_mail], dtype=object) + last_mail
    person = rng.integers(0, len(firsts), size=n)
    name = _take(_vocab(firsts + " " + lasts), person)

    free_mail = rng.random(n) < _column(SIZES, 3).astype(float)[size]
    full = rng.random(n) < 0.6  # first.last@ rather than flast@
    business = _take(_vocab(np.concatenate([dotted, initial])), person + len(firsts) * ~full)
    personal = _concat(_take(_vocab(dotted), person), _digits(rng.integers(0, 100, size=n), 2))
    local = pc.if_else(pa.array(free_mail), personal, business)
    free_domain = _draw(rng, _column(FREE_MAIL, 1).astype(float), n)
    domains = pa.concat_arrays([companies["domain"], _vocab([row[0] for row in FREE_MAIL])])
    domain = np.where(free_mail, len(companies["domain"]) + free_domain, company)
    email = _concat(local, "@", _take(domains, domain))

    prefixes = _vocab([f"+{row[3]} 555 " for row in COUNTRIES])
    block = _digits(rng.integers(0, 10_000, size=n), 4)
    tail = _digits(rng.integers(0, 1_000, size=n), 3)
    phone = _concat(_take(prefixes, country), block, " ", tail)
    return _Contacts(
        name=name,
        email=email,
        email_missing=rng.random(n) < 0.10,
        free_mail=free_mail,
        phone=phone,
        phone_missing=rng.random(n) < 0.30,
    )


def _activity_multipliers() -> tuple[np.ndarray, np.ndarray]:
    """How the source channel and the stage reshape activity: outbound leads get called rather
    than browse; subscribers get newsletters, SQLs get sales calls."""
    by_channel = np.ones((len(CHANNELS), len(ACTIVITY_TYPES)))
    by_channel[COLD_OUTBOUND, _CALLS] = 3.0
    by_channel[COLD_OUTBOUND, _WEB] = 0.5
    by_stage = np.ones((len(STAGES), len(ACTIVITY_TYPES)))
    by_stage[0, _CALLS] = 0.3
    by_stage[0, _MAIL] = 1.5
    # qualified leads get called more, and pick up more often
    by_stage[2, CALL_ANSWERED] = 1.3
    by_stage[3, CALL_ANSWERED] = 2.0
    by_stage[3, CALL_UNANSWERED] = 1.2
    return by_channel, by_stage


def _activities(
    rng: np.random.Generator, intent: FloatArray, channel: IntArray, stage: IntArray,
    as_of_days: int,
) -> tuple[_Log, IntArray]:  # fmt: skip
    """Every lead's activity over the horizon and its per-type counts in the first as_of_days.

    Counts per (lead, type) are Poisson, then expanded with `np.repeat`: the only loop is over
    the nine types. Times decay exponentially from creation (interest peaks right after sign-up).
    """
    n = len(intent)
    sigma = ACTIVITY_SCALE_SIGMA
    scale = rng.lognormal(-(sigma**2) / 2.0, sigma, size=n)
    by_channel, by_stage = _activity_multipliers()
    horizon = ACTIVITY_HORIZON_DAYS * DAY
    leads = np.arange(n, dtype=np.int32)
    parts: list[tuple[IntArray, IntArray]] = []
    early = np.zeros((n, len(ACTIVITY_TYPES)), dtype=np.int64)
    for kind, (_, _, base, slope, decay_days, _) in enumerate(ACTIVITY_TYPES):
        rate = np.exp(slope * intent)
        rate *= base * by_channel[channel, kind] * by_stage[stage, kind]
        rate *= scale
        lead = np.repeat(leads, rng.poisson(rate))
        # inverse CDF of an exponential truncated at the horizon
        tau = decay_days * DAY
        u = rng.random(len(lead))
        u *= np.expm1(-horizon / tau)  # minus the share of the exponential inside the horizon
        np.log1p(u, out=u)
        u *= -tau
        offset = np.minimum(u, horizon - 1).astype(np.int64)
        early[:, kind] = np.bincount(lead[offset < as_of_days * DAY], minlength=n)
        parts.append((lead, offset))
    kinds = np.repeat(
        np.arange(len(ACTIVITY_TYPES), dtype=np.int8), [len(lead) for lead, _ in parts]
    )
    log_ = _Log(
        lead=np.concatenate([lead for lead, _ in parts]),
        offset=np.concatenate([offset for _, offset in parts]),
        kind=kinds,
    )
    return log_, early


def _effect(effects: np.ndarray | list[float], codes: IntArray) -> FloatArray:
    """Per-lead effect of a categorical answer; a missing answer (-1) contributes nothing."""
    return np.append(np.asarray(effects, dtype=float), 0.0)[codes]


def _hidden_logit(
    *,
    channel: IntArray,
    stage: IntArray,
    seniority: IntArray,
    department: IntArray,
    industry: IntArray,
    size: IntArray,
    country: IntArray,
    bant: dict[str, IntArray],
    free_mail: np.ndarray,
    early: IntArray,
) -> FloatArray:
    """The true logit (without intercept), from what is on record as_of_days after creation.

    Activity enters as log1p(count): the second demo request says less than the first.
    """
    logit = (
        _column(CHANNELS, 3).astype(float)[channel]
        + STAGE_LOGIT[stage]
        + SENIORITY_LOGIT[seniority]
        + DEPARTMENT_LOGIT[department]
        + _column(INDUSTRIES, 2).astype(float)[industry]
        + _column(SIZES, 2).astype(float)[size]
        + _column(COUNTRIES, 2).astype(float)[country]
        + FREE_MAIL_LOGIT * free_mail
    )
    for field, (_, _, _, effects, _) in BANT.items():
        logit += _effect(effects, bant[field])
    logit += _effect(AUTHORITY_LOGIT, bant["authority"])
    logit += BUDGET_AND_AUTHORITY_LOGIT * ((bant["budget"] == 0) & (bant["authority"] == 0))
    logit += FOUNDER_OF_SMALL_FIRM_LOGIT * ((size == 0) & (seniority == len(SENIORITIES) - 1))
    logit += np.log1p(early) @ _column(ACTIVITY_TYPES, 5).astype(float)
    return logit


def _conversion_offsets(
    rng: np.random.Generator, converted: np.ndarray, as_of_days: int
) -> IntArray:
    """Seconds from creation to conversion (NAT for leads that never convert).

    Most deals close after the as-of point; a few close inside it, as fast deals do.
    """
    n = len(converted)
    fast = rng.random(n) < EARLY_CONVERTER_SHARE
    inside = rng.uniform(0.1 * DAY, as_of_days * DAY, size=n)
    after = as_of_days * DAY + rng.exponential(CONVERSION_DELAY_DAYS * DAY, size=n)
    seconds = np.where(fast, inside, after).astype(np.int64)
    return np.where(converted, seconds, NAT)


def _thin_after_conversion(
    rng: np.random.Generator, log_: _Log, conversion: IntArray, as_of_days: int
) -> _Log:
    """Drop most activity after a lead converted; only after the as-of point, so the counts the
    logit saw stay exactly what a point-in-time feature builder will count."""
    never = conversion == NAT
    cutoff = np.where(never, np.iinfo(np.int64).max, np.maximum(conversion, as_of_days * DAY))
    late = log_.offset > cutoff[log_.lead]
    drop = np.zeros(len(late), dtype=bool)
    drop[late] = rng.random(int(late.sum())) >= POST_CONVERSION_KEEP
    keep = ~drop
    return _Log(lead=log_.lead[keep], offset=log_.offset[keep], kind=log_.kind[keep])


def _activity_frame(
    rng: np.random.Generator,
    log_: _Log,
    lead_ids: pd.Series,
    created: IntArray,
    lead_channel: IntArray,
) -> pd.DataFrame:
    """The log sorted by lead then time, with lead_id as a categorical over all lead ids (4 bytes
    a row instead of a string: the log has ~20 rows a lead)."""
    # one int64 sort of (lead, offset, type) instead of an argsort and three gathers
    key = (log_.lead.astype(np.int64) << (TIME_BITS + TYPE_BITS)) | (log_.offset << TYPE_BITS)
    key |= log_.kind
    key.sort()
    lead = (key >> (TIME_BITS + TYPE_BITS)).astype(np.int32)
    offset = (key >> TYPE_BITS) & ((1 << TIME_BITS) - 1)
    kind = (key & ((1 << TYPE_BITS) - 1)).astype(np.int8)
    del key

    default_channel = np.array(
        [ACTIVITY_CHANNELS.index(row[1]) for row in ACTIVITY_TYPES], dtype=np.int8
    )
    channel = default_channel[kind]
    at_booth = (kind == FORM_FILL) | (kind == DEMO_REQUEST)
    scanned = (lead_channel[lead] == EVENT_CHANNEL) & at_booth
    scanned[scanned] = rng.random(int(scanned.sum())) < EVENT_SCAN_SHARE
    channel[scanned] = ACTIVITY_CHANNELS.index("event")

    categories = pd.Index(lead_ids.to_numpy(), dtype="str")
    return pd.DataFrame(
        {
            "lead_id": pd.Categorical.from_codes(lead, categories=categories, validate=False),
            "timestamp": _timestamps(created[lead] + offset),
            "type": _categorical(kind, _column(ACTIVITY_TYPES, 0)),
            "channel": _categorical(channel, ACTIVITY_CHANNELS),
        },
        copy=False,
    )


# --------------------------------------------------------------------------- writing


def write(
    data: SynthData, out_dir: Path, fmt: Literal["csv", "parquet"] = "csv"
) -> dict[str, Path]:
    """Write the four tables as `<table>.<fmt>` into `out_dir` (created), as a CRM export would."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {
        "leads": data.leads,
        "activities": data.activities,
        "conversions": data.conversions,
        "truth": data.truth,
    }
    paths: dict[str, Path] = {}
    for table, frame in tables.items():
        path = out_dir / f"{table}.{fmt}"
        if fmt == "csv":
            _write_csv(frame, path)
        else:
            frame.to_parquet(path, index=False)
        paths[table] = path
        log.info("wrote %s (%d rows)", path, len(frame))
    return paths


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """CSV through Arrow (20M activity rows in seconds), ISO timestamps, missing as empty cells.

    Strings stay unquoted unless a value needs quoting (a job title with a comma); Arrow then
    quotes every string in that file, which any CSV reader undoes.
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    columns = []
    for column in table.columns:
        if pa.types.is_timestamp(column.type):
            seconds = pc.cast(column, pa.timestamp("s"), safe=False)
            text = pc.cast(seconds, pa.string())  # "2024-01-01 08:15:22"
            column = pc.utf8_replace_slice(text, start=10, stop=11, replacement="T")
        elif pa.types.is_dictionary(column.type):
            column = pc.cast(column, pa.string())
        columns.append(column)
    table = pa.table(columns, names=table.column_names)
    try:
        pa_csv.write_csv(table, path, write_options=pa_csv.WriteOptions(quoting_style="none"))
    except pa.ArrowInvalid:
        pa_csv.write_csv(table, path, write_options=pa_csv.WriteOptions(quoting_style="needed"))
