"""Read and validate raw CRM tables; every error names the file, the column and the rows.

The output of `load_leads` is the `leads` stage: one row per lead, the spec's feature columns
with their original names (typed), and four reserved columns: `_id`, `_label` (1, 0, or NaN for
open leads), `_time` (what orders leads in time, when the spec has a clock) and `_row` (the
1-based data row in the file, for messages). Values never appear in messages: they may be PII.
"""

from __future__ import annotations

import csv
import difflib
import logging
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads

from leadscore.config import DatasetSpec, DimensionSpec
from leadscore.errors import DataError

with warnings.catch_warnings():
    # pandera probes an installed PySpark, which warns about pandas 3 on every import
    warnings.filterwarnings("ignore", message=".*PySpark does not yet fully support.*")
    import pandera.pandas as pandera

log = logging.getLogger(__name__)

ID, LABEL, TIME, ROW = "_id", "_label", "_time", "_row"
RESERVED = (ID, LABEL, TIME, ROW)
DELIMITERS = (",", ";", "\t", "|")


@dataclass
class LoadReport:
    """What happened to every row: nothing is dropped without being counted here."""

    file: str
    rows_read: int = 0
    labelled: int = 0
    positives: int = 0
    open: int = 0
    unusable: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "rows_read": self.rows_read,
            "labelled": self.labelled,
            "positives": self.positives,
            "open": self.open,
            "unusable": dict(self.unusable),
        }


# --------------------------------------------------------------------------- reading files


def detect_encoding(path: Path) -> str:
    """UTF-8 (a BOM is stripped) when the bytes decode, otherwise Latin-1, which always does.

    Exports from Excel on Windows are often Latin-1/CP-1252; guessing wrong would turn `é` into
    two characters and split one category into two.
    """
    with path.open("rb") as handle:
        head = handle.read(1 << 20)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut at the 1 MiB boundary is not a reason to give up on UTF-8
        if exc.start < len(head) - 4:
            return "latin-1"
    return "utf-8-sig"


def detect_delimiter(path: Path, encoding: str) -> str:
    """The delimiter that splits the header line into the most fields (`;` from European Excel)."""
    with path.open("r", encoding=encoding, newline="") as handle:
        header = handle.readline()
    counts = {d: len(next(csv.reader([header], delimiter=d))) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 1 else ","


def check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        if not any(path.glob("*.parquet")):
            raise DataError(f"{path}: folder holds no .parquet files")
        return
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    if path.suffix.lower() in {".xlsx", ".xls", ".xlsm", ".ods"}:
        raise DataError(f"{path}: spreadsheets are not read directly; save the sheet as CSV")
    if path.suffix.lower() in {".gz", ".zip", ".bz2", ".xz"}:
        raise DataError(f"{path}: compressed files are not read directly; extract it first")


def read_table(
    path: Path,
    *,
    delimiter: str | None = None,
    encoding: str | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read a CSV or Parquet file with every CSV cell as text, so nothing is guessed or lost.

    Types are applied later from the spec, where a bad value can be reported by column and row.
    """
    check_file(path)
    if path.is_dir() or path.suffix.lower() in {".parquet", ".pq"}:
        try:
            table = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types for a corrupt file
            raise DataError(
                f"{path}: not a readable Parquet file ({type(exc).__name__})"
            ) from None
        return table.astype(
            {c: object for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])}
        )
    encoding = encoding or detect_encoding(path)
    delimiter = delimiter or detect_delimiter(path, encoding)
    try:
        raw = pd.read_csv(
            path,
            sep=delimiter,
            encoding=encoding,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            usecols=list(columns) if columns is not None else None,
            engine="c",
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: cannot be parsed as delimited text: {exc}") from None
    except UnicodeDecodeError:
        raise DataError(
            f"{path}: not readable as {encoding}; set leads.encoding in the spec"
        ) from None
    if raw.empty:
        raise DataError(f"{path}: has a header but no data rows")
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw


def require_columns(path: Path, available: Iterable[str], wanted: Iterable[str]) -> None:
    """Fail on the first missing column, suggesting the nearest real one (a typo in the spec)."""
    have = list(available)
    missing = [c for c in dict.fromkeys(wanted) if c not in have]
    if not missing:
        return
    parts = []
    for column in missing:
        near = difflib.get_close_matches(column, have, n=1, cutoff=0.6)
        parts.append(f"{column!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    raise DataError(f"{path}: column(s) not in the file: {', '.join(parts)}")


def _rows(mask: np.ndarray | pd.Series, limit: int = 5) -> str:
    """Data row numbers as a user counts them in a spreadsheet: header is line 1."""
    positions = np.flatnonzero(np.asarray(mask))[:limit]
    shown = ", ".join(str(p + 2) for p in positions)
    more = int(np.asarray(mask).sum()) - len(positions)
    return f"line(s) {shown}" + (f" and {more} more" if more > 0 else "")


def to_numeric(path: Path, column: str, values: pd.Series) -> pd.Series:
    """Numbers from text cells; a cell that is neither a number nor missing is an error."""
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    text = values.astype("string").str.strip()
    numbers = pd.to_numeric(text, errors="coerce").astype("float64")
    bad = numbers.isna() & text.notna() & (text != "")
    if bad.any():
        raise DataError(
            f"{path}: column {column!r} should be numeric but {int(bad.sum())} value(s) are not "
            f"numbers ({_rows(bad)}){_number_hint(text[bad].head(200))}"
        )
    return numbers


# What a spreadsheet or a formatted report does to numbers, and what to do about it. The message
# describes the shape only: a cell's own text may be personal data in a mis-declared column.
_NUMBER_SHAPES = (
    (re.compile(r"^[-+(]?\s*[$€£¥]\s*[-+]?[\d.,' ]+\)?$|^[-+]?[\d.,' ]+\s*(€|EUR|USD|GBP)$"),
     "currency amounts (like $1,200.00): export them without the symbol and separators"),
    (re.compile(r"^[-+]?[\d.,]+\s*%$"),
     "percentages (like 15%): export them as plain numbers"),
    (re.compile(r"^[-+]?\d{1,3}([,' ]\d{3})+(\.\d+)?$"),
     "numbers with thousands separators (like 1,200): export them without separators"),
    (re.compile(r"^[-+]?\d+,\d+$"),
     "numbers with a decimal comma (like 0,5): export them with a decimal point"),
)


def _number_hint(bad: pd.Series) -> str:
    """`; they look like ...` when most bad cells share one known shape, else a generic hint."""
    values = [str(v) for v in bad]
    for pattern, hint in _NUMBER_SHAPES:
        if sum(bool(pattern.match(v)) for v in values) >= 0.8 * len(values):
            return f"; they look like {hint}"
    return "; if the column holds categories or text, list it under features.categorical"


def _missing_to_nan(values: pd.Series, missing: set[str]) -> pd.Series:
    """Trimmed text with the spec's missing markers (and empty cells) as NaN, vectorised."""
    if pd.api.types.is_numeric_dtype(values):
        return values
    text = values.astype("string").str.strip()
    text = text.mask(text.isin(list(missing | {""})))
    return text.astype(object).where(text.notna(), np.nan)


# --------------------------------------------------------------------------- the lead table


def lead_schema(spec: DatasetSpec) -> pandera.DataFrameSchema:
    """The pandera contract of the `leads` stage, generated from the spec."""
    columns: dict[str, pandera.Column] = {
        ID: pandera.Column(str, nullable=False, unique=True),
        LABEL: pandera.Column(float, pandera.Check.isin([0.0, 1.0]), nullable=True),
        ROW: pandera.Column(int, pandera.Check.ge(1)),
    }
    for name in spec.features.categorical:
        columns[name] = pandera.Column(nullable=True)  # text: object or pandas str dtype
    for name in spec.features.numeric:
        columns[name] = pandera.Column(float, nullable=True)
    return pandera.DataFrameSchema(columns, strict=False, coerce=False)


def conversion_schema() -> pandera.DataFrameSchema:
    return pandera.DataFrameSchema(
        {
            ID: pandera.Column(str, nullable=False),
            "converted_at": pandera.Column("datetime64[ns]"),
        },
        strict=True,
    )


def dimension_schema(dim: DimensionSpec) -> pandera.DataFrameSchema:
    columns: dict[str, pandera.Column] = {"_key": pandera.Column(nullable=False, unique=True)}
    for name in dim.categorical:
        columns[f"{dim.name}.{name}"] = pandera.Column(nullable=True)
    for name in dim.numeric:
        columns[f"{dim.name}.{name}"] = pandera.Column(float, nullable=True)
    return pandera.DataFrameSchema(columns, strict=True)


def validate(
    schema: pandera.DataFrameSchema, frame: pd.DataFrame, file: Path | str
) -> pd.DataFrame:
    """Run a pandera contract; a failure names the file and the columns, never the values."""
    try:
        return schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        failed = sorted({str(c) for c in exc.failure_cases["column"].dropna()})
        checks = sorted({str(c) for c in exc.failure_cases["check"].dropna()})[:3]
        raise DataError(
            f"{file}: table does not match the spec in column(s) {failed} (checks: {checks})"
        ) from None


def load_leads(spec: DatasetSpec, path: Path | None = None) -> tuple[pd.DataFrame, LoadReport]:
    """The lead table as the spec describes it: typed, labelled, checked; or one `DataError`."""
    file = path or spec.resolve(spec.leads.path)
    raw = read_table(file, delimiter=spec.leads.delimiter, encoding=spec.leads.encoding)
    leads, report = prepare_leads(raw, spec, file)
    return leads, report


def prepare_leads(
    raw: pd.DataFrame, spec: DatasetSpec, file: Path
) -> tuple[pd.DataFrame, LoadReport]:
    """Type and label a raw lead table already in memory (tests and the feature cache use it)."""
    lt = spec.leads
    wanted = [c for c in (lt.id, lt.created_at, lt.order_by, spec.outcome.column) if c]
    wanted += spec.feature_columns + text_columns(spec)
    require_columns(file, raw.columns, wanted)
    clash = sorted(set(raw.columns) & set(RESERVED))
    if clash:
        raise DataError(f"{file}: column names {clash} are reserved by leadscore; rename them")

    report = LoadReport(file=str(file), rows_read=len(raw))
    missing = set(lt.missing_values)
    leads = pd.DataFrame(index=pd.RangeIndex(len(raw)))
    leads[ROW] = np.arange(1, len(raw) + 1, dtype=np.int64)

    if lt.id:
        ids = raw[lt.id].astype("string").str.strip()
        empty = ids.isna() | (ids == "")
        if empty.any():
            raise DataError(f"{file}: id column {lt.id!r} is empty on {_rows(empty)}")
        dupes = ids.duplicated(keep=False)
        if dupes.any():
            raise DataError(
                f"{file}: id column {lt.id!r} has {int(ids.duplicated().sum())} duplicate "
                f"value(s) ({_rows(dupes)})"
            )
        leads[ID] = ids.astype(object).to_numpy()
    else:
        leads[ID] = leads[ROW].astype(str).to_numpy(dtype=object)

    if spec.outcome.column is not None:
        leads[LABEL] = label_outcome(file, spec, raw[spec.outcome.column])
    else:
        leads[LABEL] = np.nan  # filled from the conversion table by the feature pipeline
    if lt.created_at:
        # an open deal may not have reached the stage that dates it (no engage date yet): it is
        # still scored, as of now; a labelled lead without a date is an error
        optional = leads[LABEL].isna().to_numpy() if spec.outcome.column is not None else None
        leads[TIME] = parse_times(
            file, lt.created_at, raw[lt.created_at], optional, lt.date_format, lt.dayfirst
        )
    elif lt.order_by:
        leads[TIME] = to_numeric(file, lt.order_by, _missing_to_nan(raw[lt.order_by], missing))
        if leads[TIME].isna().any():
            raise DataError(
                f"{file}: order column {lt.order_by!r} is empty on {_rows(leads[TIME].isna())}"
            )
    elif lt.file_order_is_time:
        leads[TIME] = leads[ROW].astype("float64")

    for name in text_columns(spec):
        leads[name] = _missing_to_nan(raw[name], missing).to_numpy(dtype=object)
    for name in spec.features.categorical:
        leads[name] = _missing_to_nan(raw[name], missing).to_numpy(dtype=object)
    for name in spec.features.numeric:
        leads[name] = to_numeric(file, name, _missing_to_nan(raw[name], missing)).to_numpy()

    empty_cols = [c for c in spec.feature_columns if leads[c].isna().all()]
    if empty_cols:
        raise DataError(
            f"{file}: feature column(s) {empty_cols} are empty on every row; "
            "fill them or remove them from the spec's features"
        )

    validate(lead_schema(spec), leads, file)

    labelled = leads[LABEL].notna()
    report.labelled = int(labelled.sum())
    report.positives = int((leads[LABEL] == 1).sum())
    report.open = int((~labelled).sum()) if spec.outcome.column is not None else 0
    if report.open:
        report.unusable["open outcome (scorable, not trained on)"] = report.open
    if spec.outcome.column is None:  # labels come later, from the outcome table and horizon
        log.info("read %s: %d rows (outcomes from the outcome table)", file.name,
                 report.rows_read)
    else:
        log.info(
            "read %s: %d rows, %d labelled (%d converted), %d open",
            file.name,
            report.rows_read,
            report.labelled,
            report.positives,
            report.open,
        )
    return leads, report


def parse_times(
    file: Path,
    column: str,
    values: pd.Series,
    optional: np.ndarray | None = None,
    date_format: str | None = None,
    dayfirst: bool = False,
) -> pd.Series:
    """Timestamps in any ISO-like format; unparseable or future ones are errors (clock skew or a
    wrong column would silently reorder the train/test split). Rows marked `optional` may be
    empty, never unparseable."""
    text = values.astype("string").str.strip()
    if date_format:
        times = pd.to_datetime(text, errors="coerce", format=date_format, utc=True)
    else:
        times = pd.to_datetime(text, errors="coerce", format="mixed", dayfirst=dayfirst, utc=True)
    times = times.dt.tz_localize(None)
    bad = times.isna()
    if optional is not None:
        empty = (text.isna() | (text == "")).fillna(True).to_numpy(dtype=bool)
        bad = bad & ~(empty & optional)
    if bad.any():
        raise DataError(
            f"{file}: column {column!r} has {int(bad.sum())} empty or unparseable timestamp(s) "
            f"({_rows(bad)})"
        )
    future = times > pd.Timestamp.now(tz="UTC").tz_localize(None) + pd.Timedelta(days=1)
    if future.any():
        raise DataError(
            f"{file}: column {column!r} has {int(future.sum())} timestamp(s) in the future "
            f"({_rows(future)})"
        )
    return times.astype("datetime64[ns]")


def text_columns(spec: DatasetSpec) -> list[str]:
    """Lead columns read as text besides the features: derivation sources and join keys."""
    cols = [*spec.derived_sources, *spec.derive.bant, *(d.lead_key for d in spec.dimensions)]
    features = set(spec.feature_columns)
    return [c for c in dict.fromkeys(cols) if c not in features]


def label_outcome(file: Path, spec: DatasetSpec, values: pd.Series) -> np.ndarray:
    """1 for converted, 0 for not, NaN for open or empty; an unmapped value is an error (a new
    stage nobody told the spec about would otherwise be trained on as a loss)."""
    outcome = spec.outcome
    # outcome values match whatever their case ("won", "Won", "WON"): exports are inconsistent
    text = values.astype("string").str.strip()
    folded = text.str.casefold()

    def among(values_: list[str]) -> np.ndarray:
        wanted = [v.strip().casefold() for v in values_]
        return folded.isin(wanted).fillna(False).to_numpy(dtype=bool)

    positive = among(outcome.positive)
    filled = (text.notna() & (text != "")).fillna(False).to_numpy(dtype=bool)
    if outcome.negative:
        negative = among(outcome.negative)
        is_open = among(outcome.open)
        unmapped = filled & ~positive & ~negative & ~is_open
        if unmapped.any():
            values_seen = sorted(text[unmapped].unique().tolist())[:10]
            raise DataError(
                f"{file}: outcome column {outcome.column!r} has {int(unmapped.sum())} value(s) "
                f"mapped to none of positive/negative/open: {values_seen} ({_rows(unmapped)}); "
                "add them to the spec's outcome lists"
            )
    else:
        negative = ~positive & filled
    label = np.full(len(values), np.nan)
    label[positive] = 1.0
    label[negative] = 0.0
    if not positive.any():
        seen = sorted(text.dropna().unique().tolist())[:10]
        raise DataError(
            f"{file}: outcome column {outcome.column!r} never holds a positive value "
            f"{outcome.positive}; values seen: {seen}"
        )
    return label


def load_conversions(spec: DatasetSpec) -> pd.DataFrame:
    """The conversion table as (_id, converted_at); a lead listed twice keeps its first time."""
    table = spec.outcome.table
    assert table is not None
    file = spec.resolve(table.path)
    raw = read_table(file, delimiter=table.delimiter, encoding=table.encoding)
    require_columns(file, raw.columns, [table.id, table.converted_at])
    ids = raw[table.id].astype("string").str.strip()
    times = parse_times(
        file, table.converted_at, raw[table.converted_at], None, table.date_format, table.dayfirst
    )
    out = pd.DataFrame({ID: ids.to_numpy(dtype=object), "converted_at": times.to_numpy()})
    out = out.sort_values("converted_at", kind="stable").drop_duplicates(ID, keep="first")
    return validate(conversion_schema(), out, file)


def load_dimension(spec: DatasetSpec, dim: DimensionSpec) -> pd.DataFrame:
    """A dimension table keyed by its (normalised) key, with its typed columns."""
    file = spec.resolve(dim.path)
    raw = read_table(file, delimiter=dim.delimiter, encoding=dim.encoding)
    require_columns(file, raw.columns, [dim.key, *dim.categorical, *dim.numeric])
    missing = set(dim.missing_values)
    keys = normalise_keys(raw[dim.key], dim.normalise_keys)
    dupes = keys.duplicated(keep=False) & keys.notna()
    if dupes.any():
        raise DataError(
            f"{file}: key column {dim.key!r} has {int(keys[dupes].duplicated().sum())} duplicate "
            f"key(s) after normalisation ({_rows(dupes)})"
        )
    out = pd.DataFrame({"_key": keys.to_numpy(dtype=object)})
    for name in dim.categorical:
        out[f"{dim.name}.{name}"] = _missing_to_nan(raw[name], missing).to_numpy(dtype=object)
    for name in dim.numeric:
        out[f"{dim.name}.{name}"] = to_numeric(
            file, name, _missing_to_nan(raw[name], missing)
        ).to_numpy()
    return validate(dimension_schema(dim), out.dropna(subset=["_key"]), file)


def normalise_keys(values: pd.Series, normalise: bool) -> pd.Series:
    """Trim, lower-case and drop inner spaces, so ` GTX Pro` and `GTXPro` meet."""
    text = values.astype("string").str.strip()
    if normalise:
        text = text.str.lower().str.replace(r"\s+", "", regex=True)
    return text.where(text != "", pd.NA)


def load_activities(spec: DatasetSpec) -> pa.Table:
    """The activity log as an Arrow table (id, timestamp, type[, channel]), read multi-threaded:
    at 20M rows, pandas' object strings would cost gigabytes and tens of seconds."""
    act = spec.activities
    assert act is not None
    file = spec.resolve(act.path)
    check_file(file)
    columns = [c for c in (act.id, act.timestamp, act.type, act.channel) if c]
    if file.is_dir() or file.suffix.lower() in {".parquet", ".pq"}:
        table = pads.dataset(str(file), format="parquet")
        require_columns(file, table.schema.names, columns)
        raw = table.to_table(columns=columns)
    else:
        encoding = act.encoding or detect_encoding(file)
        delimiter = act.delimiter or detect_delimiter(file, encoding)
        with file.open("r", encoding=encoding, newline="") as handle:
            header = [
                h.strip() for h in next(csv.reader([handle.readline()], delimiter=delimiter), [])
            ]
        require_columns(file, header, columns)

        def read(timestamp_type: pa.DataType) -> pa.Table:
            types: dict[str, pa.DataType] = {c: pa.string() for c in columns}
            types[act.timestamp] = timestamp_type
            return pacsv.read_csv(
                str(file),
                read_options=pacsv.ReadOptions(
                    encoding="utf8" if encoding.startswith("utf-8") else encoding
                ),
                parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    include_columns=columns,
                    column_types=types,
                    null_values=[*act.missing_values, ""],
                    strings_can_be_null=True,
                ),
            )

        try:
            # ISO timestamps parse inside the multi-threaded reader; anything else falls back
            # to text and the tolerant parser below, which names the bad rows
            raw = read(pa.timestamp("ns"))
        except pa.ArrowInvalid:
            try:
                raw = read(pa.string())
            except pa.ArrowInvalid as exc:
                raise DataError(f"{file}: cannot be read: {str(exc).splitlines()[0]}") from None
    if raw.num_rows == 0:
        raise DataError(f"{file}: has a header but no data rows")
    stamp = raw.column(act.timestamp)
    if not pa.types.is_timestamp(stamp.type):
        try:
            stamp = pc.cast(pc.utf8_trim_whitespace(stamp.cast(pa.string())), pa.timestamp("ns"))
        except pa.ArrowInvalid:
            times = pd.to_datetime(
                pd.Series(stamp.to_pandas(), dtype="string"),
                errors="coerce",
                format="mixed",
                utc=True,
            ).dt.tz_localize(None)
            bad = times.isna().to_numpy()
            if bad.any():
                raise DataError(
                    f"{file}: column {act.timestamp!r} has {int(bad.sum())} empty or "
                    f"unparseable timestamp(s) ({_rows(bad)})"
                ) from None
            stamp = pa.array(times.astype("datetime64[ns]"))
    nulls = pc.is_null(stamp).to_numpy(zero_copy_only=False)
    if nulls.any():
        raise DataError(f"{file}: column {act.timestamp!r} is empty on {_rows(nulls)}")
    out = {
        "id": pc.utf8_trim_whitespace(raw.column(act.id).cast(pa.string())),
        "ts": stamp.cast(pa.timestamp("ns")),
        "type": pc.utf8_trim_whitespace(raw.column(act.type).cast(pa.string())),
    }
    if act.channel:
        out["channel"] = pc.utf8_trim_whitespace(raw.column(act.channel).cast(pa.string()))
    return pa.table(out)


def check_ready(leads: pd.DataFrame, spec: DatasetSpec, file: Path | str) -> None:
    """Refuse to train on too little history, as the commercial products do."""
    need = spec.train.min_per_class
    positives = int((leads[LABEL] == 1).sum())
    negatives = int((leads[LABEL] == 0).sum())
    if positives < need or negatives < need:
        raise DataError(
            f"{file}: column {spec.outcome.column!r} has {positives} converted and {negatives} "
            f"not-converted labelled leads; training needs at least {need} of each "
            "(train.min_per_class in the spec)"
        )
