"""Request and response models. The lead model is generated from the loaded bundle's fields, so
`/docs` shows the real field names and types and a wrong type is caught before scoring."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StringConstraints,
    create_model,
)
from typing_extensions import TypedDict

from leadscore.numbers import NUMBER_TEXT, number_from_text
from leadscore.scoring import ModelBundle


class Reason(BaseModel):
    """One factor behind a lead's score: LightGBM's `pred_contrib` summed over the field's
    features and converted to score points."""

    feature: str = Field(description="Business field (derived parts count as their source field).")
    value: Any = Field(description="The lead's value for that field (null when missing).")
    impact: float = Field(
        description="Score points (0–100 scale, 2 decimals) this field added (> 0) or removed "
        "(< 0), against the average lead; never 0 (fields that rounded to 0 are left out)."
    )
    label: str = Field(
        description="The field in words: the spec's label, else the name prettified "
        "(activity aggregates worded, e.g. `Unanswered calls in the last 14 days`)."
    )
    text: str = Field(
        description="One line for a person: label, value in words, points rounded to whole "
        "numbers (one decimal below 1), e.g. `Previous campaign succeeded: +18 points`."
    )


class ScoredLead(BaseModel):
    id: str | None = Field(description="The lead id from the request, when given.")
    probability: float = Field(ge=0, le=1, description="Calibrated conversion probability.")
    score: int = Field(ge=0, le=100, description="Probability as a 0–100 score.")
    tier: str = Field(description="A (best) to D, by cutoffs chosen on validation leads.")
    tier_label: str = Field(
        description="The sales team's word for the tier: hot, warm, cool, cold by default, or "
        "the spec's `tiers.words`."
    )
    percentile: int = Field(ge=0, le=100, description="Share of validation leads scored lower.")
    reasons: list[Reason] = Field(
        default_factory=list,
        description="Up to k factors that raised the score (largest impact first), then up to k "
        "that lowered it (most negative first): between 0 and 2k entries, k = `?reasons`. Over "
        "all fields the impacts add up to this lead's score minus the average lead's.",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="Empty unless the lead was scored on a value far outside what the model was "
        "trained on, e.g. `nr.employed outside the training range` (beyond the training range "
        "widened by its own width on either side, or infinite): the score is then an "
        "extrapolation.",
    )
    model_name: str
    model_version: str


class ScoreResponse(BaseModel):
    results: list[ScoredLead] = Field(description="One per lead, in the request's order.")


class ModelInfo(BaseModel):
    name: str
    version: str | None = Field(description="The served version (null until one is loaded).")
    loaded: bool = True
    default: bool = Field(False, description="`POST /v1/score` uses this model.")
    uri: str | None = None
    trained_at: str | None = None
    dataset: str | None = None
    split: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    tiers: dict[str, float] = Field(default_factory=dict)
    tier_words: dict[str, str] = Field(default_factory=dict,
                                       description="Tier → the sales team's word (hot, warm…).")
    labels: dict[str, str] = Field(default_factory=dict,
                                   description="Business field → its label in reasons.")
    id_field: str | None = None
    features: dict[str, str] = Field(default_factory=dict,
                                     description="Input field → categorical | numeric.")
    pending: dict[str, str] | None = Field(
        None, description="A version the model's source points at that is not served yet, "
        "and why (`version`, `reason`).")
    error: str | None = Field(None, description="Why no version is loaded, when none is.")


class ModelList(BaseModel):
    default: str | None = Field(description="The model `POST /v1/score` uses, if any.")
    models: list[ModelInfo]


class ReloadResult(BaseModel):
    status: str = Field(description="`reloaded`.")
    model: str
    version: str
    previous_version: str | None


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `invalid_lead`.")
    message: str = Field(description="What is wrong, for a person; never a submitted value.")
    details: list[dict[str, Any]] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    error: ErrorBody


Category = str | int | float | bool
# A numeric field takes a number, or a number written as text (CRM webhooks and spreadsheets send
# both), never a boolean (pydantic's lax mode would read `true` as 1.0). The text form is spelled
# out as a pattern, so the schema says exactly what is accepted; the rule (`leadscore.numbers`)
# is the one batch scoring applies to CSV and Parquet columns.
Number = (
    Annotated[StrictFloat, Field(allow_inf_nan=False)]
    | Annotated[str, StringConstraints(pattern=NUMBER_TEXT), AfterValidator(number_from_text)]
    | None
)


ID_MIN, ID_MAX = -(2**63), 2**64 - 1


def _whole_float_as_int(value: Any) -> Any:
    """JSON has one number type: `-511.0` is the integer -511 to JSON Schema and to any client
    that serialises through a double, so it is accepted as that id (echoed "-511"); `1.5`,
    `true` and everything else go on to the strict check unchanged."""
    # only up to 2**53, where every whole number is exactly a double: beyond, the float may
    # already be another number than the one sent (-2**63-1 parses as -2**63)
    if type(value) is float and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


def categorical_levels(bundle: ModelBundle) -> dict[str, tuple[str, ...]]:
    """Each plain categorical input field's levels (derived fields such as a job title are free
    text: no list)."""
    return {f.source: f.levels for f in bundle.builder.features_
            if f.kind == "categorical" and not f.derive and f.levels}


def lead_model(bundle: ModelBundle, *, forbid_extra: bool = True) -> type[Any]:
    """A lead as a typed dict keyed by the model's own field names (`emp.var.rate` included).

    Every field is optional: a missing field is scored as missing. Validation returns plain
    dicts, which is what `score_records` reads, so no model instance is built per lead.
    """
    id_field = bundle.id_column
    levels = categorical_levels(bundle)
    words = dict(zip(bundle.sources, (w.label for w in bundle.words_), strict=True))
    fields: dict[str, Any] = {
        id_field: Annotated[
            # strict: `true` or 1.5 is no id (lax mode echoed "1"); the JSON parser reads whole
            # numbers up to 64 bits exactly, so that is the stated limit (bigger: send text)
            str | Annotated[StrictInt, Field(ge=ID_MIN, le=ID_MAX)] | None,
            BeforeValidator(_whole_float_as_int),
            Field(title=id_field, description="Lead id, echoed back in the result: text, or a "
                  f"whole number from {ID_MIN} to {ID_MAX} (send bigger ids as text)."),
        ]
    }
    for name, kind in bundle.input_types().items():
        if name == id_field:
            continue
        if kind == "numeric":
            fields[name] = Annotated[
                Number, Field(title=name, description="Number (or a number written as text).")
            ]
        elif name in levels:
            # the levels the model knows, for clients and forms; another value is accepted and
            # scored as missing (a new category must not fail a CRM webhook), so they are
            # `examples`, not an `enum` the server would then have to enforce
            known = list(levels[name])
            fields[name] = Annotated[
                Category | None,
                Field(title=name, examples=known,
                      description=f"{words.get(name, name)}: one of the {len(known)} values the "
                      "model knows (another value is scored as missing)."),
            ]
        else:
            fields[name] = Annotated[
                Category | None, Field(title=name, description="Category (text).")
            ]
    lead = TypedDict("Lead", fields, total=False)  # type: ignore[misc]
    lead.__pydantic_config__ = ConfigDict(  # type: ignore[attr-defined]
        title="Lead",
        extra="forbid" if forbid_extra else "ignore",
        hide_input_in_errors=True,
    )
    return lead  # type: ignore[no-any-return]


def request_model(
    lead: type[Any], max_batch: int, *, forbid_extra: bool = True
) -> type[BaseModel]:
    """The documented request body; validation itself runs per lead for index-aware errors.
    Like the lead, it declares `additionalProperties: false` when unknown fields are refused,
    so clients and schema-driven tools know what the server accepts."""
    return create_model(  # type: ignore[call-overload,no-any-return]
        "ScoreRequest",
        __config__=ConfigDict(extra="forbid" if forbid_extra else "ignore"),
        leads=(list[lead], Field(min_length=1, max_length=max_batch)),  # type: ignore[valid-type]
    )
