"""The API warns about values far outside the training range and refuses values outside a
spec's bounds (422 naming the lead and the field, never the value)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from serve_helpers import assert_error

from leadscore.scoring import load_bundle

WARNED = "emp.var.rate outside the training range"


def test_a_value_far_outside_training_is_scored_with_a_warning(mixed_client: TestClient,
                                                              mixed_bundle: Path) -> None:
    low, high = load_bundle(mixed_bundle).meta["ranges"]["emp.var.rate"]
    leads = [{"lead_id": "in", "plan": "team", "emp.var.rate": (low + high) / 2, "visits": 2},
             {"lead_id": "far", "plan": "team", "emp.var.rate": -1e308, "visits": 2},
             {"lead_id": "text", "plan": "team", "emp.var.rate": "1e30"},
             {"lead_id": "none", "plan": "team"}]
    for batch in ([leads[1]], leads):  # one lead (the inline path) and several
        response = mixed_client.post("/v1/score", json={"leads": batch})
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert all(0 <= r["probability"] <= 1 for r in results), "still scored"
        warnings = {r["id"]: r["warnings"] for r in results}
        assert warnings["far"] == [WARNED]
    assert warnings == {"in": [], "far": [WARNED], "text": [WARNED], "none": []}


def test_a_value_outside_the_spec_bounds_is_422(make_client: Callable[..., TestClient],
                                                mixed_bundle: Path, tmp_path: Path) -> None:
    bundle = load_bundle(mixed_bundle)
    bundle.meta["bounds"] = {"visits": [0, 50]}  # as `bounds: {visits: [0, 50]}` in the spec
    client = make_client(bundle.save(tmp_path / "bounded"))
    fine = client.post("/v1/score", json={"leads": [{"visits": 50}, {"visits": None}]})
    assert fine.status_code == 200, fine.text
    refused = client.post("/v1/score", json={"leads": [{"visits": 3}, {"visits": "51"},
                                                       {"visits": -1000.5}]})
    error = assert_error(refused, 422, "out_of_bounds")
    assert error["message"] == ("lead 1: field 'visits' is outside its bounds [0, 50]; "
                                "lead 2: field 'visits' is outside its bounds [0, 50]")
    assert error["details"] == [{"lead": 1, "field": "visits", "type": "out_of_bounds"},
                                {"lead": 2, "field": "visits", "type": "out_of_bounds"}]
    assert "1000.5" not in refused.text
