"""Typed settings (environment) and the dataset spec (YAML) that describes a team's CRM export.

The spec is the only thing a data team writes to point leadscore at their data, so every
mistake in it must come back as one plain sentence naming the file and the key.
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

# the monitor's defaults live in `defaults` (the CLI shows them without importing pydantic);
# re-exported here for the library's own modules
from leadscore.defaults import ALARM_EXIT as ALARM_EXIT
from leadscore.defaults import DEFAULT_HORIZON_DAYS as DEFAULT_HORIZON_DAYS
from leadscore.defaults import MAX_AUC_DROP as MAX_AUC_DROP
from leadscore.defaults import MAX_CALIBRATION_GAP as MAX_CALIBRATION_GAP
from leadscore.defaults import MIN_COHORT as MIN_COHORT
from leadscore.errors import SpecError
from leadscore.labels import activity_label, number_text, tier_words

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def project_root() -> Path:
    """The checkout (its `configs/`, `data/raw/`, notebooks), or the working directory when
    leadscore is installed as a package outside one. Never where outputs go: see `Settings.home`.
    """
    if (PROJECT_ROOT / "pyproject.toml").exists():
        return PROJECT_ROOT
    return Path.cwd()


# a registered model's name: it appears in URLs (/v1/models/{name}) and in `models:/` URIs
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


def model_name_from(dataset: str) -> str:
    """The default registered model name for a spec: `bank_marketing` -> `lead-bank-marketing`."""
    slug = re.sub(r"[^a-z0-9]+", "-", dataset.lower()).strip("-") or "leads"
    return f"lead-{slug}"[:100]


class Settings(BaseSettings):
    """Runtime settings, read from `LEADSCORE_*` environment variables when first asked for."""

    model_config = SettingsConfigDict(env_prefix="LEADSCORE_", extra="ignore")

    # where outputs go (embedded MLflow store and artifacts, models/, reports/, cache/):
    # `LEADSCORE_HOME`, else the working directory, never the installed package's folder
    home: Path | None = None
    # overrides the spec's model name for one run (train) or names the model to use (score, API)
    model_name: str | None = None
    model_uri: str | None = None
    # the API: the models to serve (comma-separated names; default every registered model with
    # a @champion) and the one `POST /v1/score` uses (default: the only one served)
    models: str = ""
    default_model: str | None = None
    tracking_uri: str | None = None
    models_dir: Path | None = None
    api_keys: str = ""
    # keys for /v1/admin/* only (comma-separated); unset: the API keys open those routes too
    admin_keys: str = ""
    max_batch: int = 1000
    max_body_bytes: int = 1024 * 1024
    default_reasons: int = 3
    ignore_unknown_fields: bool = False
    reload_seconds: float = 0.0
    log_level: str = "INFO"
    # where built training tables are cached between retrains on unchanged files ("off": never)
    feature_cache: str = "auto"
    # the activity aggregation's engine when --engine is not given (local, duckdb, spark)
    feature_engine: str | None = None
    # a new version takes @champion when its test ROC AUC >= the champion's - this, and its
    # ECE <= the champion's + the next (both scored on the new version's test slice; the one
    # place these defaults are written, tracking.decide reads them)
    promote_auc_tolerance: float = Field(0.005, ge=0.0, le=1.0)
    promote_ece_tolerance: float = Field(0.02, ge=0.0, le=1.0)
    # set: bundles are written with an HMAC-SHA256 signature and refused on load without a
    # valid one (a checksum only catches accidents). A secret: never logged, never in a bundle.
    signing_key: SecretStr | None = None
    # the API appends what it scores to the score history (`store.py`), buffered and written
    # by a background thread at least every `record_flush_seconds`
    record_scores: bool = False
    record_flush_seconds: float = Field(2.0, gt=0.0, le=60.0)

    def signing_secret(self) -> str | None:
        """The signing key, or None when unset or empty."""
        return (self.signing_key.get_secret_value() or None) if self.signing_key else None

    def resolved_tracking_uri(self) -> str:
        """`MLFLOW_TRACKING_URI` wins (a team's shared server), then ours, then the embedded
        store."""
        import os

        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env:
            return env
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{self.resolved_home() / 'mlflow.db'}"

    def resolved_home(self) -> Path:
        return (self.home or Path.cwd()).resolve()

    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.resolved_home() / "models"

    def resolved_reports_dir(self) -> Path:
        return self.resolved_home() / "reports"

    def resolved_feature_cache(self) -> Path | None:
        if self.feature_cache == "off":
            return None
        if self.feature_cache == "auto":
            return self.resolved_home() / "cache" / "features"
        return Path(self.feature_cache)

    def resolved_model_uri(self) -> str | None:
        """`LEADSCORE_MODEL_URI`, else the champion of `LEADSCORE_MODEL_NAME`; None when neither
        is set (the caller then looks in the registry: see `tracking.resolve_model_uri`)."""
        if self.model_uri:
            return self.model_uri
        return f"models:/{self.model_name}@champion" if self.model_name else None

    def served_model_names(self) -> list[str]:
        return [name.strip() for name in self.models.split(",") if name.strip()]

    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    def admin_key_list(self) -> list[str]:
        return [key.strip() for key in self.admin_keys.split(",") if key.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()


def check_model_name(name: str, where: str = "LEADSCORE_MODEL_NAME") -> str:
    """A model name as it may appear in a URL and a `models:/` URI, or one plain error."""
    if not re.match(MODEL_NAME_PATTERN, name):
        raise SpecError(
            f"{where}: {name!r} is not a usable model name (letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 100 characters)"
        )
    return name


def model_name_for(spec: DatasetSpec, settings: Settings) -> str:
    """The registered model a training of `spec` goes to: `LEADSCORE_MODEL_NAME` for one run,
    else the spec's own."""
    if settings.model_name:
        return check_model_name(settings.model_name)
    return spec.model_name


# --------------------------------------------------------------------------- dataset spec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TableSpec(_Strict):
    """Where a table lives and how to read it. Paths are relative to the spec file."""

    path: Path
    delimiter: str | None = None  # None: detected from the first line
    encoding: str | None = None  # None: UTF-8 (BOM allowed), falling back to Latin-1
    missing_values: list[str] = Field(default_factory=lambda: [""])
    # timestamps: a strftime format such as "%d/%m/%Y %H:%M", or dayfirst for 03/04 = 3 April
    date_format: str | None = None
    dayfirst: bool = False


class LeadTableSpec(TableSpec):
    id: str | None = None  # None: the 1-based row number in the file is the lead id
    created_at: str | None = None
    order_by: str | None = None  # a sortable column standing in for time (e.g. a sequential id)
    file_order_is_time: bool = False

    @model_validator(mode="after")
    def _one_clock(self) -> LeadTableSpec:
        clocks = [
            self.created_at,
            self.order_by,
            "file order" if self.file_order_is_time else None,
        ]
        if sum(clock is not None for clock in clocks) > 1:
            raise ValueError("give at most one of created_at, order_by and file_order_is_time")
        return self


class ConversionTableSpec(TableSpec):
    """A separate table of conversions: one row per converted lead, with when it converted."""

    id: str
    converted_at: str


class OutcomeSpec(_Strict):
    """How a lead ended: a column of the lead table, or a separate table of conversions.

    Column form: `positive` values mean converted, `negative` not converted, `open` not yet
    decided (scorable, never trained on). Every value seen must be in one of the lists, unless
    `negative` is empty, when every value that is not positive counts as not converted.
    Table form: a lead absent from the table did not convert; with `horizon_days`, a lead counts
    as converted only within that many days of its creation, and leads younger than the horizon
    at the data cut-off are left out of training rather than labelled negative.
    """

    column: str | None = None
    positive: list[str] = Field(default_factory=list)
    negative: list[str] = Field(default_factory=list)
    open: list[str] = Field(default_factory=list)
    table: ConversionTableSpec | None = None
    horizon_days: int | None = Field(None, ge=1)

    @field_validator("positive", "negative", "open", mode="before")
    @classmethod
    def _as_strings(cls, values: Any) -> Any:
        if isinstance(values, list):
            return [str(v) for v in values]
        return values

    @model_validator(mode="after")
    def _one_form(self) -> OutcomeSpec:
        if (self.column is None) == (self.table is None):
            raise ValueError("give either outcome.column (with positive values) or outcome.table")
        if self.column is not None and not self.positive:
            raise ValueError("outcome.positive must list at least one value meaning 'converted'")
        lists = {"positive": self.positive, "negative": self.negative, "open": self.open}
        for a, b in (("positive", "negative"), ("positive", "open"), ("negative", "open")):
            both = sorted(set(lists[a]) & set(lists[b]))
            if both:
                raise ValueError(f"outcome values {both} are listed as both {a} and {b}")
        if self.horizon_days is not None and self.table is None:
            raise ValueError("outcome.horizon_days needs outcome.table (a conversion timestamp)")
        return self


class DimensionSpec(TableSpec):
    """A table joined to leads by key (accounts, products, teams). Keys are compared after
    trimming, lower-casing and removing spaces when `normalise_keys` is on, so `GTXPro` in the
    pipeline finds `GTX Pro` in the products table."""

    name: str
    key: str
    lead_key: str
    normalise_keys: bool = True
    categorical: list[str] = Field(default_factory=list)
    numeric: list[str] = Field(default_factory=list)


class ActivitySpec(TableSpec):
    """An activity log aggregated per lead as of its scoring time."""

    id: str
    timestamp: str
    type: str
    channel: str | None = None
    windows: list[int] = Field(default_factory=lambda: [7, 30, 90])
    types: list[str] | None = None  # None: the types seen in training (at least min_count times)
    min_count: int = Field(20, ge=1)
    # activity types that are bad news (an unanswered call): their counts may never raise a score
    negative: list[str] = Field(default_factory=list)
    # activity types that are good news (a demo request): their counts may never lower a score
    positive: list[str] = Field(default_factory=list)

    @field_validator("windows")
    @classmethod
    def _windows(cls, values: list[int]) -> list[int]:
        if not values or any(w < 1 for w in values):
            raise ValueError("windows must be a non-empty list of positive day counts")
        return sorted(set(values))


class DeriveSpec(_Strict):
    """Fields sales teams expect, derived from raw columns (raw PII is never a feature)."""

    job_title: str | None = None  # → seniority and department
    email: str | None = None  # → business / free-mail / invalid domain
    phone: str | None = None  # → phone present
    bant: list[str] = Field(default_factory=list)  # → number of BANT questions answered


class LeakAuditSpec(_Strict):
    """Columns that give the outcome away are flagged and dropped unless listed under `keep`."""

    enabled: bool = True
    auc_threshold: float = Field(0.9, gt=0.5, le=1.0)
    # filled in this many times more often for one outcome than for the other
    fill_ratio: float = Field(1.75, gt=1.0)
    min_fill_gap: float = Field(0.2, ge=0.0, le=1.0)
    keep: list[str] = Field(default_factory=list)


class FeaturesSpec(_Strict):
    categorical: list[str] = Field(default_factory=list)
    numeric: list[str] = Field(default_factory=list)
    # +1: more never lowers the score; -1: more never raises it (LightGBM monotone constraints)
    monotone: dict[str, Literal[-1, 1]] = Field(default_factory=dict)
    # who aggregates the activity log: local (in memory), duckdb (SQL over the files, spilling
    # to disk) or spark; LEADSCORE_FEATURE_ENGINE and --engine override it
    engine: Literal["local", "duckdb", "spark"] | None = None


class TrainSpec(_Strict):
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5)
    valid_fraction: float = Field(0.2, gt=0.0, lt=0.5)
    min_per_class: int = Field(40, ge=1)
    seed: int = 42
    params: dict[str, Any] = Field(default_factory=dict)


class ScorecardRule(_Strict):
    """Points a sales team gives for one field, as in their spreadsheet scorecard."""

    field: str  # feature name or business field
    points: dict[str, int] = Field(default_factory=dict)  # category -> points
    bins: list[float] = Field(default_factory=list)  # numeric inner edges, ascending
    bin_points: list[int] = Field(default_factory=list)  # one more value than bins
    missing: int | None = None

    @model_validator(mode="after")
    def _bins(self) -> ScorecardRule:
        if self.bins != sorted(self.bins):
            raise ValueError(f"scorecard rule {self.field!r}: bins must be ascending")
        if (self.bins or self.bin_points) and len(self.bin_points) != len(self.bins) + 1:
            raise ValueError(
                f"scorecard rule {self.field!r}: bin_points needs {len(self.bins) + 1} values "
                f"for {len(self.bins)} bin edges"
            )
        return self


class ScorecardSpec(_Strict):
    """The points-scorecard baseline: spec rules replace the points derived from conversion
    rates for the fields they name."""

    scale: float = Field(10.0, gt=0)  # points per unit of log-odds lift
    rules: list[ScorecardRule] = Field(default_factory=list)


class FieldLabel(_Strict):
    """What a sales team calls a field and some of its values: `{label: "Previous campaign",
    values: {success: "succeeded"}}`; a plain string is the label alone."""

    label: str | None = Field(None, min_length=1)
    values: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"label": data}
        if isinstance(data, dict) and isinstance(data.get("values"), dict):
            # values are matched as text; YAML reads `yes`, `on` and `true` alike as a boolean
            # and 1.0 as a number, so a key stands for each way the data may spell it
            values: dict[str, str] = {}
            for key, word in data["values"].items():
                for text in _yaml_texts(key):
                    values.setdefault(text, str(word))
            return {**data, "values": values}
        return data


def _yaml_texts(key: Any) -> list[str]:
    if isinstance(key, bool):
        words = ("true", "yes", "on") if key else ("false", "no", "off")
        return [spelling for w in words for spelling in (w, w.capitalize(), w.upper())]
    if isinstance(key, int | float):
        return [number_text(float(key))]
    return [str(key)]


class TiersSpec(_Strict):
    """The word the sales team uses for each tier (default hot, warm, cool, cold); only the
    tiers named change."""

    words: dict[str, str] = Field(default_factory=dict)

    @field_validator("words")
    @classmethod
    def _known_tiers(cls, words: dict[str, str]) -> dict[str, str]:
        for tier, word in words.items():
            if tier not in ("A", "B", "C", "D"):
                raise ValueError(f"{tier!r} is not a tier (A, B, C, D)")
            if not str(word).strip():
                raise ValueError(f"the word for tier {tier} is empty")
        cleaned = {tier: str(word).strip() for tier, word in words.items()}
        merged = {**tier_words(), **cleaned}
        twice = sorted({w for w in merged.values() if list(merged.values()).count(w) > 1})
        if twice:
            raise ValueError(f"{twice[0]!r} would name two tiers; give each tier its own word")
        return cleaned


class ModelSpec(_Strict):
    """The registered model this spec trains: one per dataset or line of business, so a second
    dataset never takes the first one's @champion."""

    name: str | None = Field(None, pattern=MODEL_NAME_PATTERN)


class DatasetSpec(_Strict):
    """A CRM export described in YAML: the lead table, how each lead ended, optional activity log
    and dimension tables, and the moment each lead would have been scored (its as-of time)."""

    name: str
    description: str = ""
    leads: LeadTableSpec
    outcome: OutcomeSpec
    features: FeaturesSpec = Field(default_factory=lambda: FeaturesSpec())
    dimensions: list[DimensionSpec] = Field(default_factory=list)
    activities: ActivitySpec | None = None
    derive: DeriveSpec = Field(default_factory=lambda: DeriveSpec())
    # a lead is scored this many days after it was created: only what was known then counts
    as_of_days: float = Field(0.0, ge=0.0)
    # the data's cut-off time (default: the latest timestamp in the data)
    cutoff: str | None = None
    leak_audit: LeakAuditSpec = Field(default_factory=lambda: LeakAuditSpec())
    drop: list[str] = Field(default_factory=list)
    pii: list[str] = Field(default_factory=list)
    # hard limits per numeric field, both included ({age: [16, 110]}): a lead outside them is
    # refused (API 422, batch rejects file) rather than scored
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict)
    train: TrainSpec = Field(default_factory=TrainSpec)
    scorecard: ScorecardSpec = Field(default_factory=lambda: ScorecardSpec())
    model: ModelSpec = Field(default_factory=lambda: ModelSpec())
    # words for people: field -> {label, values} (reasons, pages) and tier -> word
    labels: dict[str, FieldLabel] = Field(default_factory=dict)
    tiers: TiersSpec = Field(default_factory=lambda: TiersSpec())

    # set by load_spec, not by the YAML
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        features = self.features.categorical + self.features.numeric
        dupes = sorted({c for c in features if features.count(c) > 1})
        if dupes:
            raise ValueError(f"columns listed twice under features: {dupes}")
        for group, cols in (("drop", self.drop), ("pii", self.pii)):
            clash = sorted(set(cols) & set(features))
            if clash:
                raise ValueError(f"columns {clash} are both features and listed under {group}")
        if self.outcome.column is not None and self.outcome.column in features:
            raise ValueError(f"the outcome column {self.outcome.column!r} cannot be a feature")
        for identity in (self.leads.id, self.leads.created_at):
            if identity is not None and identity in features:
                raise ValueError(f"column {identity!r} identifies or dates a lead; not a feature")
        pii_features = sorted(set(self.pii) & set(features))
        if pii_features:
            raise ValueError(f"PII columns {pii_features} cannot be features")
        derived_pii = [c for c in (self.derive.email, self.derive.phone) if c and c in features]
        if derived_pii:
            raise ValueError(f"columns {derived_pii} are derived from, never used as features")
        needs_clock = self.outcome.table is not None or self.activities is not None
        if (needs_clock or self.as_of_days) and self.leads.created_at is None:
            raise ValueError(
                "leads.created_at is required with an activity log, a conversion table "
                "or as_of_days (the as-of time is created_at + as_of_days)"
            )
        has_any = (
            features
            or self.dimensions
            or self.activities
            or any((self.derive.job_title, self.derive.email, self.derive.phone, self.derive.bant))
        )
        if not has_any:
            raise ValueError("features lists no categorical and no numeric column")
        for name, (low, high) in self.bounds.items():
            if name not in self.features.numeric:
                hint = difflib.get_close_matches(name, self.features.numeric, n=1)
                raise ValueError(
                    f"bounds names {name!r}, which is not under features.numeric"
                    + (f"; did you mean {hint[0]!r}?" if hint else "")
                )
            if not low < high:
                raise ValueError(f"bounds.{name}: the low bound must be below the high bound")
        fields = self.labelable_fields
        for name in self.labels:
            activity = self.activities is not None and activity_label(name) is not None
            if name not in fields and not activity:
                hint = difflib.get_close_matches(name, fields, n=1)
                raise ValueError(
                    f"labels names {name!r}, which is not an input field"
                    + (f"; did you mean {hint[0]!r}?" if hint else "")
                )
        return self

    @property
    def labelable_fields(self) -> list[str]:
        """The business fields a reason can name: features, dimension fields, fields derived
        from (job title, email, phone), and `activity.*` aggregates (checked by pattern)."""
        fields = [*self.feature_columns, *self.derived_sources]
        for dim in self.dimensions:
            fields += [f"{dim.name}.{c}" for c in (*dim.categorical, *dim.numeric)]
        if self.derive.bant:
            fields.append("BANT answered")
        return fields

    @property
    def derived_sources(self) -> list[str]:
        """Raw lead columns read only to derive features (job title, email, phone)."""
        d = self.derive
        return [c for c in (d.job_title, d.email, d.phone) if c]

    @property
    def model_name(self) -> str:
        """The registered model: `model.name`, else derived from `name`."""
        return self.model.name or model_name_from(self.name)

    @property
    def feature_columns(self) -> list[str]:
        return [*self.features.categorical, *self.features.numeric]

    def resolve(self, path: Path) -> Path:
        """A path from the spec, relative to the spec file's folder."""
        if path.is_absolute() or self.source is None:
            return path
        return (self.source.parent / path).resolve()

    def with_lead_path(self, path: Path) -> DatasetSpec:
        """The same spec reading another lead file (`--data`), e.g. the full copy in ../shared."""
        leads = self.leads.model_copy(update={"path": path.resolve()})
        return self.model_copy(update={"leads": leads})


def _describe(error: ValidationError, source: Path) -> str:
    """One line per problem, naming the key path in the YAML."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            parent = item["loc"][:-1]
            known = _known_keys(parent)
            hint = difflib.get_close_matches(str(item["loc"][-1]), known, n=1)
            message = "unknown key" + (f"; did you mean {hint[0]!r}?" if hint else "")
        elif item["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{where}: {message}")
    return f"{source}: " + "; ".join(lines)


def _known_keys(location: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = DatasetSpec
    for part in location:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return []
    return list(model.model_fields)


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate a dataset spec; any problem is one `SpecError` naming the file and key."""
    source = Path(path)
    if not source.is_file():
        raise SpecError(f"{source}: spec file not found")
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise SpecError(f"{source}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: expected a mapping of keys (name, leads, outcome, features)")
    try:
        spec = DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_describe(exc, source)) from None
    return spec.model_copy(update={"source": source.resolve()})
