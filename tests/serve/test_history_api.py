"""The API's memory: with LEADSCORE_RECORD_SCORES=1 what it scores reaches the score history
(buffered, written on a clean stop even before the first timed flush, by a real server), and
GET /v1/leads/{id}/history answers from it, 404 with the error shape for an unknown lead."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from serve_helpers import API_KEY, assert_error
from test_server import STOPPED, start_server  # noqa: F401  (the real-server fixture)

from leadscore.store import ScoreStore

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def some_leads(bundle: Any, synth_leads: pd.DataFrame, n: int, start: int = 0) -> list[dict]:
    fields = list(bundle.input_types())
    sample = synth_leads.iloc[start:start + n]
    return [{k: (v if v != "" else None) for k, v in row.items() if k in fields or k == "lead_id"}
            for row in sample.to_dict("records")]


@pytest.mark.slow
def test_recorded_scores_survive_a_clean_shutdown(start_server, bundles: dict[str, Path],  # noqa: F811
                                                  bundle: Any, synth_leads: pd.DataFrame,
                                                  tmp_path: Path) -> None:
    """A real server (SIGTERM) whose timed flush would come only after a minute: every score
    it gave is in the history once it has stopped, with the probabilities it answered."""
    home = tmp_path / "home"
    server = start_server(bundles["v1"], LEADSCORE_RECORD_SCORES="1",
                          LEADSCORE_RECORD_FLUSH_SECONDS="60", LEADSCORE_HOME=str(home))
    answered: dict[str, float] = {}
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as api:
        for start, n in ((0, 1), (1, 1), (2, 30)):  # inline and threaded requests
            leads = some_leads(bundle, synth_leads, n, start)
            response = api.post("/v1/score", json={"leads": leads})
            assert response.status_code == 200, response.text
            answered.update({r["id"]: r["probability"] for r in response.json()["results"]})
        # an id-less lead is scored but not recorded (no one could look it up)
        anonymous = {k: v for k, v in some_leads(bundle, synth_leads, 1, 40)[0].items()
                     if k != "lead_id"}
        assert api.post("/v1/score", json={"leads": [anonymous]}).status_code == 200
    assert not (home / "scores").exists(), "nothing written before the first flush"
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) in STOPPED, server.text()[-2000:]
    rows = ScoreStore(home / "scores").rows("test-leads").to_pylist()
    assert len(rows) == 32
    assert {r["lead_id"]: r["probability"] for r in rows} == answered
    assert {r["model_version"] for r in rows} == {"1"}
    assert "recorded 32 score(s) in the history" in server.text()


def test_history_route(make_client: Callable[..., TestClient], bundles: dict[str, Path],
                       bundle: Any, synth_leads: pd.DataFrame, tmp_path: Path) -> None:
    leads = some_leads(bundle, synth_leads, 3)
    recording = make_client(bundles["v1"], record_scores=True, home=tmp_path)
    for _ in range(2):
        assert recording.post("/v1/score", json={"leads": leads}).status_code == 200
    recording.__exit__(None, None, None)  # a clean stop writes the buffer

    api = make_client(bundles["v1"], home=tmp_path)
    lead_id = leads[1]["lead_id"]
    response = api.get(f"/v1/leads/{lead_id}/history", params={"model": "test-leads"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["lead_id"] == lead_id and body["model"] == "test-leads"
    assert [s["model_version"] for s in body["scorings"]] == ["1", "1"]
    assert body["trend"] == "steady" and "5 points" in body["trend_rule"]
    why = body["why_changed"]
    assert why["available"] and why["score_change"] == 0
    assert why["data"] == [] and why["model"] == []
    # the default model (the only one served) needs no ?model=
    assert api.get(f"/v1/leads/{lead_id}/history").json()["scorings"] == body["scorings"]

    error = assert_error(api.get("/v1/leads/nobody/history"), 404, "not_found")
    assert error["message"] == "lead 'nobody' has no scores in the history of model 'test-leads'"
    error = assert_error(api.get(f"/v1/leads/{lead_id}/history?model=other"), 404, "not_found")
    assert "no score history for model 'other'" in error["message"]
