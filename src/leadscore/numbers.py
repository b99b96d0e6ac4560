"""What counts as a number in a numeric field: one rule for the API and for batch scoring.

A number is a finite float (never NaN or +-inf), or text matching `NUMBER_TEXT` (CRM webhooks,
spreadsheets and CSV files send numbers as text) that reads as a finite float: "-1e308" (how
pandas writes a huge float) is a number, "1e400", "nan" and "inf" are refused the same way
whether they arrive in JSON, in a CSV cell or in a Parquet float column. The API applies the
rule per value (`number_from_text`, with pydantic's `allow_inf_nan=False` for JSON numbers);
batch applies it to a whole Arrow column at once (`to_numbers`), with the same pattern.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from leadscore.errors import DataError

# Every match is finite, so the schema's pattern and the check agree (a schema-driven client
# never meets a pattern-valid number that is refused): up to 30+30 digits with a 2-digit
# exponent (< 1e129), or one digit (and a fraction) with a 3-digit exponent: any negative one
# (it underflows towards 0), 100 to 307, or 308 below 1.7 (the largest double is 1.797e308).
# So "-1e+308", how pandas writes a huge float, is a number; "1e400" and ".1e509" are not.
NUMBER_TEXT = (
    r"^ *[+-]?(?:(?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})(?:[eE][+-]?[0-9]{1,2})?"
    r"|[0-9](?:\.[0-9]{0,15})?[eE](?:-[0-9]{3}|\+?(?:[12][0-9]{2}|30[0-7]))"
    r"|1(?:\.[0-6][0-9]{0,14})?[eE]\+?308) *$"
)
_NUMBER = re.compile(NUMBER_TEXT)
# the reject reason for a value that reads as a number the rule refuses (counted in the summary)
OUT_OF_RANGE = "is NaN, infinite or out of range"


def number_from_text(text: str) -> float:
    """A number written as text, or ValueError: the API's rule for text in a numeric field."""
    value = float(text) if _NUMBER.fullmatch(text) else math.inf
    if not math.isfinite(value):  # the pattern allows 1e999, which overflows
        raise ValueError("not a finite number")
    return value


def _positions(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask).astype(np.int64)


def _unparsable(array: pa.Array) -> np.ndarray:
    """Positions whose text Arrow cannot read as a float at all, found by bisection: a few
    casts per bad value (the rest read as NaN, +-inf, or beyond the pattern's range)."""
    bad: list[int] = []
    stack = [(0, len(array))]
    while stack:
        lo, hi = stack.pop()
        try:
            pc.cast(array.slice(lo, hi - lo), pa.float64())
            continue
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        if hi - lo == 1:
            bad.append(lo)
        else:
            mid = (lo + hi) // 2
            stack += [(mid, hi), (lo, mid)]
    return np.array(sorted(bad), dtype=np.int64)


def to_numbers(
    array: pa.Array | pa.ChunkedArray, name: str, missing: Sequence[str]
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """A float64 column, the positions that are not numbers, and the positions that read as
    numbers the rule refuses (NaN, +-inf, out of range); both kinds become null.

    Text is trimmed and the spec's missing markers and empty cells become null before the rule
    applies, so one bad cell costs its own row, never the chunk.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    empty = np.zeros(0, dtype=np.int64)
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = pc.cast(array, kind.value_type)
        kind = array.type
    if pa.types.is_null(kind):
        return pa.nulls(len(array), pa.float64()), empty, empty
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_decimal(kind):
        return pc.cast(array, pa.float64()), empty, empty
    if pa.types.is_floating(kind):
        numbers = pc.cast(array, pa.float64())
        refused = pc.fill_null(pc.invert(pc.is_finite(numbers)), False)
        if not pc.any(refused).as_py():
            return numbers, empty, empty
        return (
            pc.if_else(refused, pa.scalar(None, pa.float64()), numbers),
            empty,
            _positions(refused.to_numpy(zero_copy_only=False)),
        )
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"column {name!r} holds {kind}, not numbers")
    array = pc.utf8_trim_whitespace(array)
    markers = pa.array(sorted({*missing, ""}), type=array.type)
    array = pc.if_else(pc.is_in(array, value_set=markers), pa.scalar(None, array.type), array)
    numbers, outside = _outside_the_rule(array)
    if numbers is not None and not len(outside):
        return numbers, empty, empty
    unparsable = outside[_unparsable(array.take(pa.array(outside)))]
    mask = np.zeros(len(array), dtype=bool)
    mask[outside] = True
    numbers = pc.cast(pc.if_else(pa.array(mask), pa.scalar(None, array.type), array), pa.float64())
    return numbers, unparsable, np.setdiff1d(outside, unparsable)


def _outside_the_rule(array: pa.Array) -> tuple[pa.Array | None, np.ndarray]:
    """The text cast to floats (None: some does not parse), and the positions of (non-null)
    text that does not match `NUMBER_TEXT`.

    The pattern runs only where a plain cast cannot settle it: text that does not parse, parses
    to NaN or +-inf, is longer than 30 characters or has an exponent. Everything else Arrow
    parses is digits, a point and a sign, which the pattern accepts; so a clean column costs a
    cast and three cheap kernels, not a regular expression per cell.
    """
    suspect: np.ndarray | None = None
    numbers: pa.Array | None = None
    try:
        numbers = pc.cast(array, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    else:
        doubtful = pc.or_(
            pc.invert(pc.is_finite(numbers)),
            pc.or_(
                pc.greater(pc.utf8_length(array), 30),
                pc.match_substring(array, "e", ignore_case=True),
            ),
        )
        suspect = _positions(pc.fill_null(doubtful, False).to_numpy(zero_copy_only=False))
        if not len(suspect):
            return numbers, suspect
    values = array if suspect is None else array.take(pa.array(suspect))
    matched = pc.fill_null(pc.match_substring_regex(values, NUMBER_TEXT), True)
    # a match can still overflow (1e999): the matches all parse, so cast just them
    floats = pc.cast(pc.if_else(matched, values, pa.scalar(None, values.type)), pa.float64())
    finite = pc.fill_null(pc.is_finite(floats), True)
    outside = _positions(~pc.and_(matched, finite).to_numpy(zero_copy_only=False))
    return numbers, outside if suspect is None else suspect[outside]
