"""The API's behaviour in process: auth, health, metrics, the schema from the model, reasons,
and reloads (admin route and polling) that swap only verified models."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_helpers import API_KEY, assert_error

LOADED = 'leadscore_model_reloads_total{model="test-leads",result="loaded"}'
REFUSED = 'leadscore_model_reloads_total{model="test-leads",result="refused"}'


@pytest.fixture
def locked(make_client: Callable[..., TestClient], bundles: dict[str, Path]) -> TestClient:
    return make_client(bundles["v1"], api_keys=f"other-key, {API_KEY}")


LEAD = {"leads": [{"lead_id": "a", "industry": "software"}]}


@pytest.mark.parametrize("route", ["/v1/score", "/v1/admin/reload", "/v1/model"])
def test_no_key_and_wrong_key_are_401(locked: TestClient, route: str, all_logs) -> None:
    method = locked.get if route == "/v1/model" else locked.post
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"},
                    {"Authorization": API_KEY}, {"Authorization": f"Basic {API_KEY}"},
                    {"X-API-Key": ""}, {"Authorization": "Bearer "}):
        kwargs = {"json": LEAD} if route == "/v1/score" else {}
        response = method(route, headers=headers, **kwargs)  # type: ignore[operator]
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
    text = "\n".join(r.getMessage() for r in all_logs.records)
    assert API_KEY not in text and "wrong" not in text


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {API_KEY}"},
                                     {"authorization": f"bearer {API_KEY}"},
                                     {"X-API-Key": API_KEY},
                                     {"X-API-Key": "wrong", "Authorization": f"Bearer {API_KEY}"}])
def test_right_key_in_either_header_is_200(locked: TestClient, headers: dict[str, str],
                                           all_logs) -> None:
    response = locked.post("/v1/score", json=LEAD, headers=headers)
    assert response.status_code == 200, response.text
    assert locked.get("/v1/model", headers=headers).status_code == 200
    assert API_KEY not in "\n".join(r.getMessage() for r in all_logs.records)


def test_health_metrics_and_docs_stay_open(locked: TestClient) -> None:
    assert locked.get("/healthz").json() == {"status": "ok"}
    ready = locked.get("/readyz").json()
    assert ready["status"] == "ready" and ready["version"] == "1"
    assert locked.get("/metrics").status_code == 200
    schema = locked.get("/openapi.json").json()
    assert schema["paths"]["/v1/score"]["post"]["security"] == [{"bearer": []}, {"apiKey": []}]


def test_readyz_is_503_without_a_model(make_client: Callable[..., TestClient],
                                       tmp_path: Path) -> None:
    empty = make_client(tmp_path / "nothing-here")
    assert empty.get("/healthz").status_code == 200
    error = assert_error(empty.get("/readyz"), 503, "model_not_loaded")
    assert "no such model" in error["details"][0]["reason"]
    assert_error(empty.post("/v1/score", json={"leads": [{}]}), 503, "model_not_loaded")


def test_result_fields_and_reasons(client: TestClient, bundles: dict[str, Path]) -> None:
    lead = {"lead_id": "L1", "industry": "software", "budget": "yes", "country": "GB"}
    default = client.post("/v1/score", json={"leads": [lead]}).json()["results"][0]
    assert set(default) == {"id", "probability", "score", "tier", "tier_label", "percentile",
                            "reasons", "warnings", "model_name", "model_version"}
    words = {"A": "hot", "B": "warm", "C": "cool", "D": "cold"}
    assert default["tier_label"] == words[default["tier"]]
    assert default["warnings"] == []
    assert default["id"] == "L1" and default["model_name"] == "test-leads"
    assert default["score"] == round(default["probability"] * 100)
    assert 1 <= len(default["reasons"]) <= 6, "up to 3 raisers and up to 3 lowerers"
    assert {"feature", "value", "impact", "label", "text"} == set(default["reasons"][0])
    none = client.post("/v1/score?reasons=0", json={"leads": [lead]}).json()["results"][0]
    assert none["reasons"] == []
    assert none["probability"] == pytest.approx(default["probability"], abs=1e-12)
    ten = client.post("/v1/score?reasons=10", json={"leads": [lead]}).json()["results"][0]
    impacts = [r["impact"] for r in ten["reasons"]]
    up, down = [v for v in impacts if v > 0], [v for v in impacts if v < 0]
    assert impacts == up + down and up and down, "raisers, then lowerers, none at 0"
    assert up == sorted(up, reverse=True) and down == sorted(down)
    assert len(up) <= 10 and len(down) <= 10
    assert ten["reasons"][0] == default["reasons"][0], "the first raiser, whatever k"
    one = client.post("/v1/score?reasons=1", json={"leads": [lead]}).json()["results"][0]
    assert one["reasons"] == [ten["reasons"][0], ten["reasons"][len(up)]]


def test_api_scores_match_batch_scoring(client: TestClient, bundle, synth_leads) -> None:
    """One scoring function: the API and `scoring.score` agree lead for lead."""
    from leadscore.scoring import score

    fields = list(bundle.input_types())
    sample = synth_leads.head(40)
    leads = [{k: (v if v != "" else None) for k, v in row.items() if k in fields or k == "lead_id"}
             for row in sample.to_dict("records")]
    api = client.post("/v1/score?reasons=2", json={"leads": leads}).json()["results"]
    batch = score(bundle, sample[["lead_id", *fields]].replace("", None), reasons=2)
    assert [r["id"] for r in api] == batch["lead_id"].tolist()
    assert [r["probability"] for r in api] == pytest.approx(batch["probability"].tolist())
    assert [r["tier"] for r in api] == batch["tier"].tolist()
    assert [r["reasons"] for r in api] == batch["reasons"].tolist()


def test_openapi_shows_the_model_fields(mixed_client: TestClient) -> None:
    schema = mixed_client.get("/openapi.json").json()
    lead = schema["components"]["schemas"]["Lead"]
    assert lead["additionalProperties"] is False
    assert {"lead_id", "plan", "emp.var.rate", "visits"} <= set(lead["properties"])
    numeric = lead["properties"]["emp.var.rate"]["anyOf"]
    assert {"type": "number"} in numeric
    request = schema["components"]["schemas"]["ScoreRequest"]
    assert request["properties"]["leads"]["maxItems"] == 1000
    assert request["additionalProperties"] is False, "unknown top-level fields are refused"
    operation = schema["paths"]["/v1/score"]["post"]
    assert [p["name"] for p in operation["parameters"]] == ["reasons"]
    body = operation["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/ScoreRequest")
    response = mixed_client.post("/v1/score", json={"leads": [
        {"lead_id": 1, "plan": "team", "emp.var.rate": "0.5", "visits": 4}]})
    assert response.status_code == 200, response.text


def test_metrics_count_requests_tiers_and_the_model(client: TestClient) -> None:
    client.post("/v1/score", json={"leads": [{}, {"industry": "software"}]})
    client.post("/v1/score", json={"leads": []})
    text = client.get("/metrics").text
    requests = 'leadscore_http_requests_total{method="POST",route="/v1/score",status="%d"} 1.0'
    assert requests % 200 in text and requests % 422 in text
    assert 'leadscore_http_request_duration_seconds_bucket{le="0.25",method="POST"' in text
    tiers = [line for line in text.splitlines() if line.startswith("leadscore_scored_leads_total")]
    assert sum(float(line.split()[-1]) for line in tiers) == 2.0
    assert 'leadscore_model_info{name="test-leads",version="1"} 1.0' in text


def test_admin_reload_swaps_and_refuses_a_corrupt_model(
    make_client: Callable[..., TestClient], bundles: dict[str, Path], tmp_path: Path
) -> None:
    live = tmp_path / "live"
    shutil.copytree(bundles["v1"], live)
    api = make_client(live, api_keys=API_KEY)
    auth = {"X-API-Key": API_KEY}

    def version() -> str:
        result = api.post("/v1/score", json=LEAD, headers=auth).json()["results"][0]
        return str(result["model_version"])

    assert version() == "1"
    shutil.rmtree(live)
    shutil.copytree(bundles["v2"], live)
    reloaded = api.post("/v1/admin/reload", headers=auth)
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json() == {"status": "reloaded", "model": "test-leads", "version": "2",
                               "previous_version": "1"}
    assert version() == "2"

    shutil.rmtree(live)
    shutil.copytree(bundles["bad"], live)
    error = assert_error(api.post("/v1/admin/reload", headers=auth), 409, "model_refused")
    assert "checksum" in error["message"]
    assert error["details"] == [{"model": "test-leads", "still_serving": "2"}]
    assert version() == "2"
    assert api.get("/readyz").json()["version"] == "2"

    meta = json.loads((bundles["v2"] / "bundle.json").read_text())
    (live / "bundle.json").write_text(json.dumps({**meta, "format_version": 99}))
    shutil.copy(bundles["v2"] / "model.txt", live / "model.txt")
    assert "format" in assert_error(api.post("/v1/admin/reload", headers=auth), 409)["message"]
    assert version() == "2"
    metrics = api.get("/metrics").text
    assert 'leadscore_model_reloads_total{model="test-leads",result="refused"} 2.0' in metrics
    assert 'leadscore_model_info{name="test-leads",version="1"} 0.0' in metrics
    assert 'leadscore_model_info{name="test-leads",version="2"} 1.0' in metrics


def test_polling_reloads_only_when_the_source_changes(
    make_client: Callable[..., TestClient], bundles: dict[str, Path], tmp_path: Path
) -> None:
    live = tmp_path / "live"
    live.symlink_to(bundles["v1"], target_is_directory=True)
    api = make_client(live, reload_seconds=0.05)

    def wait_for(version: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while api.get("/readyz").json().get("version") != version:
            assert time.monotonic() < deadline, f"version {version} never served"
            time.sleep(0.05)

    def loads() -> float:
        for line in api.get("/metrics").text.splitlines():
            if line.startswith(LOADED):
                return float(line.split()[-1])
        return 0.0

    wait_for("1")
    time.sleep(0.3)
    assert loads() == 1.0  # nothing changed: no reload
    swap = tmp_path / "swap"
    swap.symlink_to(bundles["v2"], target_is_directory=True)
    swap.replace(live)  # atomic switch, as a deploy would do it
    wait_for("2")
    swap.symlink_to(bundles["bad"], target_is_directory=True)
    swap.replace(live)
    time.sleep(0.5)
    assert api.get("/readyz").json()["version"] == "2"
    assert loads() == 2.0
    refused = [line for line in api.get("/metrics").text.splitlines()
               if line.startswith(REFUSED)]
    assert refused == [f"{REFUSED} 1.0"]  # tried once


def test_guessing_keys_is_slowed_to_a_429(locked: TestClient) -> None:
    """Ten wrong keys from one address within a minute: then even the right key is a 429 with
    Retry-After and a JSON body, until the window passes; requests without a key do not count."""
    from serve.deps import MAX_FAILURES

    for _ in range(5):
        assert_error(locked.post("/v1/score", json=LEAD), 401, "unauthorized")
    for i in range(MAX_FAILURES):
        response = locked.post("/v1/score", json=LEAD, headers={"X-API-Key": f"guess-{i}"})
        assert_error(response, 401, "unauthorized")
    held = locked.post("/v1/score", json=LEAD, headers={"X-API-Key": API_KEY})
    error = assert_error(held, 429, "too_many_wrong_keys")
    assert "wait" in error["message"] and 1 <= int(held.headers["retry-after"]) <= 61
    throttle = locked.app.state.key_throttle  # type: ignore[attr-defined]
    throttle.window = 0.0  # the window has passed
    assert locked.post("/v1/score", json=LEAD, headers={"X-API-Key": API_KEY}).status_code == 200


def test_the_throttle_forgets_an_address_once_its_failures_expire() -> None:
    """Expired failures are dropped and their address forgotten, so the check on every request
    goes back to its lock-free path."""
    from serve.deps import KeyThrottle

    throttle = KeyThrottle(limit=2, window=60.0)
    assert throttle.wait_seconds("a") == 0
    throttle.failed("a")
    assert throttle.wait_seconds("a") == 0 and throttle.wait_seconds("b") == 0
    throttle.failed("a")
    assert 1 <= throttle.wait_seconds("a") <= 61 and throttle.wait_seconds("b") == 0
    throttle.window = 0.0
    assert throttle.wait_seconds("a") == 0
    assert throttle._failures == {}  # noqa: SLF001
    throttle.failed("b")
    throttle.succeeded("b")
    assert throttle._failures == {}  # noqa: SLF001
