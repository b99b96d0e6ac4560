"""Request and response models. The lead model is generated from the loaded bundle's fields, so
`/docs` shows the real field names and a wrong type is caught before scoring."""

from __future__ import annotations

import keyword
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from leadscore.scoring import ModelBundle


class Reason(BaseModel):
    feature: str = Field(description="Business field (derived parts count as their source field).")
    value: Any = Field(description="The lead's value for that field (null when missing).")
    impact: float = Field(description="Score points this field added (+) or removed (−).")


class ScoredLead(BaseModel):
    id: str | None = Field(description="The lead id from the request, when given.")
    probability: float = Field(ge=0, le=1, description="Calibrated conversion probability.")
    score: int = Field(ge=0, le=100, description="Probability as a 0–100 score.")
    tier: str = Field(description="A (best) to D, by cutoffs chosen on validation leads.")
    percentile: int = Field(ge=0, le=100, description="Share of validation leads scored lower.")
    reasons: list[Reason] = Field(default_factory=list)
    model_name: str
    model_version: str


class ScoreResponse(BaseModel):
    results: list[ScoredLead]


class ModelInfo(BaseModel):
    name: str
    version: str
    uri: str | None
    trained_at: str | None
    dataset: str | None
    split: str | None
    metrics: dict[str, float]
    tiers: dict[str, float]
    id_field: str
    features: dict[str, str] = Field(description="Input field → categorical | numeric.")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    error: ErrorBody


def _python_name(field: str, taken: set[str]) -> str:
    """A valid, unique Python identifier for a column such as `emp.var.rate` or `Lead Origin`."""
    name = re.sub(r"\W", "_", field).strip("_") or "field"
    if name[0].isdigit() or keyword.iskeyword(name) or name.startswith("model_"):
        name = f"f_{name}"
    base, i = name, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


Category = str | int | float | bool


def lead_model(bundle: ModelBundle, *, forbid_extra: bool = True) -> type[BaseModel]:
    """A pydantic model of one lead: every field optional (missing is scored as missing)."""
    taken: set[str] = set()
    fields: dict[str, Any] = {}
    id_field = bundle.id_column
    fields[_python_name(id_field, taken)] = (
        str | int | None,
        Field(None, alias=id_field, description="Lead id, echoed back in the result."),
    )
    for name, kind in bundle.input_types().items():
        if name == id_field:
            continue
        annotation: Any
        if kind == "numeric":
            annotation = Annotated[float | None, Field(allow_inf_nan=False)]
            description = "Number."
        else:
            annotation = Category | None
            description = "Category (text)."
        fields[_python_name(name, taken)] = (annotation, Field(None, alias=name, description=description))
    config = ConfigDict(
        extra="forbid" if forbid_extra else "ignore",
        populate_by_name=False,
        hide_input_in_errors=True,
    )
    return create_model("Lead", __config__=config, **fields)  # type: ignore[call-overload,no-any-return]


def request_model(lead: type[BaseModel], max_batch: int) -> type[BaseModel]:
    """The documented request body; validation itself runs per lead for index-aware errors."""
    return create_model(  # type: ignore[call-overload,no-any-return]
        "ScoreRequest",
        leads=(list[lead], Field(min_length=1, max_length=max_batch)),  # type: ignore[valid-type]
    )
