"""Every bad-input case of the scoring API: its status, the one error shape, and that a canary
email sent in the bad request appears neither in the response nor in any log record."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_helpers import CANARY, assert_error, assert_no_canary


def test_wrong_type_names_the_field_and_the_lead_index(client: TestClient, all_logs) -> None:
    leads = [{"lead_id": "a", "industry": "software"},
             {"lead_id": "b", "industry": {"contact": CANARY}}]
    error = assert_error(client.post("/v1/score", json={"leads": leads}), 422, "invalid_lead")
    assert "lead 1" in error["message"] and "'industry'" in error["message"]
    assert error["details"] == [{"lead": 1, "field": "industry", "type": "string_type"}]
    assert_no_canary(all_logs)


def test_wrong_type_for_a_number_field_with_a_dotted_name(mixed_client: TestClient,
                                                          all_logs) -> None:
    leads = [{"plan": "team", "emp.var.rate": 0.3}, {"plan": "free"},
             {"plan": "team", "emp.var.rate": CANARY, "visits": [CANARY]}]
    error = assert_error(mixed_client.post("/v1/score", json={"leads": leads}), 422,
                         "invalid_lead")
    assert "lead 2: field 'emp.var.rate' should be a finite number" in error["message"]
    assert {(d["lead"], d["field"]) for d in error["details"]} == {(2, "emp.var.rate"),
                                                                   (2, "visits")}
    assert_no_canary(all_logs)


def test_booleans_are_neither_numbers_nor_ids(mixed_client: TestClient) -> None:
    """Lax parsing would read `true` as 1.0 (a number) or echo it as id "1"."""
    for lead, field in (({"visits": True}, "visits"), ({"lead_id": True}, "lead_id"),
                        ({"lead_id": 1.5}, "lead_id")):
        error = assert_error(mixed_client.post("/v1/score", json={"leads": [lead]}), 422,
                             "invalid_lead")
        assert error["details"][0]["field"] == field and f"'{field}'" in error["message"]


def test_numbers_written_as_text_score_like_numbers(mixed_client: TestClient) -> None:
    """As the schema's pattern says: digits with an optional sign, point and short exponent."""
    def probability(visits: object) -> float:
        response = mixed_client.post("/v1/score?reasons=0",
                                     json={"leads": [{"plan": "team", "visits": visits}]})
        assert response.status_code == 200, response.text
        return float(response.json()["results"][0]["probability"])

    assert probability("12") == probability(12) == probability(" 1.2e1 ")
    assert probability(".5") == probability(0.5)
    for text in ("", "1_000", "0x10", "inf", "1e999", "12 visits"):
        response = mixed_client.post("/v1/score", json={"leads": [{"visits": text}]})
        assert_error(response, 422, "invalid_lead")


def test_infinite_and_nan_numbers_are_refused(mixed_client: TestClient) -> None:
    for raw in (b'{"leads": [{"visits": NaN}]}', b'{"leads": [{"visits": Infinity}]}',
                b'{"leads": [{"visits": 1e999}]}'):
        response = mixed_client.post("/v1/score", content=raw,
                                     headers={"content-type": "application/json"})
        assert response.status_code in (400, 422), response.text
        assert_error(response, response.status_code)


def test_a_lead_that_is_not_an_object(client: TestClient, all_logs) -> None:
    error = assert_error(client.post("/v1/score", json={"leads": [{}, CANARY]}), 422,
                         "invalid_lead")
    assert error["details"] == [{"lead": 1, "field": None, "type": "dict_type"}]
    assert_no_canary(all_logs)


def test_unknown_field_is_listed(client: TestClient, all_logs) -> None:
    leads = [{"lead_id": "a", "email": CANARY}, {"lead_id": "b", "industry": "software"}]
    error = assert_error(client.post("/v1/score", json={"leads": leads}), 422, "unknown_field")
    assert error["message"] == "lead 0: unknown field 'email'"
    assert error["details"] == [{"lead": 0, "field": "email", "type": "extra_forbidden"}]
    assert_no_canary(all_logs)


def test_an_unknown_field_named_like_personal_data_is_not_echoed(client: TestClient,
                                                                 all_logs) -> None:
    response = client.post("/v1/score", json={"leads": [{CANARY: "x"}], CANARY: 1})
    error = assert_error(response, 422, "unknown_field")
    assert "(redacted name)" in error["message"]
    response = client.post("/v1/score", json={"leads": [{CANARY: "x"}]})
    assert "(redacted name)" in assert_error(response, 422, "unknown_field")["message"]
    assert_no_canary(all_logs)


def test_unknown_fields_can_be_ignored(make_client: Callable[..., TestClient],
                                       bundles: dict[str, Path], all_logs) -> None:
    lenient = make_client(bundles["v1"], ignore_unknown_fields=True)
    response = lenient.post("/v1/score", json={"leads": [{"lead_id": "a", "email": CANARY}],
                                               "note": CANARY})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["id"] == "a"
    assert CANARY not in response.text
    assert_no_canary(all_logs)
    schemas = lenient.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["Lead"].get("additionalProperties") is not False
    assert schemas["ScoreRequest"].get("additionalProperties") is not False


def test_missing_fields_are_scored_as_missing_in_order(client: TestClient) -> None:
    leads = [{"lead_id": "z"}, {}, {"lead_id": 7, "industry": "software"}, {"lead_id": "a"}]
    response = client.post("/v1/score", json={"leads": leads})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["id"] for r in results] == ["z", None, "7", "a"]
    assert results[0]["probability"] == results[1]["probability"] == results[3]["probability"]
    for result in results:
        assert 0.0 <= result["probability"] <= 1.0
        assert result["tier"] in {"A", "B", "C", "D"}
        assert result["model_version"] == "1"


def test_empty_list(client: TestClient, all_logs) -> None:
    assert_error(client.post("/v1/score", json={"leads": []}), 422, "empty_batch")


def test_more_than_max_batch(make_client: Callable[..., TestClient],
                             bundles: dict[str, Path], all_logs) -> None:
    small = make_client(bundles["v1"], max_batch=5)
    leads = [{"industry": CANARY} for _ in range(6)]
    error = assert_error(small.post("/v1/score", json={"leads": leads}), 413, "too_many_leads")
    assert "limit is 5" in error["message"]
    assert small.post("/v1/score", json={"leads": leads[:5]}).status_code == 200
    assert_no_canary(all_logs)


def test_body_over_the_limit_is_refused_before_parsing(make_client: Callable[..., TestClient],
                                                       bundles: dict[str, Path],
                                                       all_logs) -> None:
    small = make_client(bundles["v1"], max_body_bytes=1024)
    # not even valid JSON: a 413 proves the size was checked before any parsing
    body = b'{"leads": [{"industry": "' + CANARY.encode() * 100
    response = small.post("/v1/score", content=body, headers={"content-type": "application/json"})
    assert_error(response, 413, "body_too_large")
    assert_no_canary(all_logs)


def test_streamed_body_over_the_limit_is_refused(make_client: Callable[..., TestClient],
                                                 bundles: dict[str, Path], all_logs) -> None:
    small = make_client(bundles["v1"], max_body_bytes=1024)
    chunks_sent = []

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        for _ in range(50):
            chunks_sent.append(1)
            yield CANARY.encode() * 10

    response = small.post("/v1/score", content=chunks(),
                          headers={"content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert_error(response, 413, "body_too_large")
    assert_no_canary(all_logs)


def test_body_just_under_the_limit_is_accepted(make_client: Callable[..., TestClient],
                                               bundles: dict[str, Path]) -> None:
    small = make_client(bundles["v1"], max_body_bytes=1024)
    body = json.dumps({"leads": [{"lead_id": "x" * 900}]}).encode()
    assert len(body) <= 1024
    assert small.post("/v1/score", content=body).status_code == 200


@pytest.mark.parametrize("raw", [
    b'{"leads": [{"industry": "' + CANARY.encode() + b'"',
    b"leads=" + CANARY.encode(),
    b"\xff\xfe" + CANARY.encode(),
    b"[" * 100_000,
    b'{"leads": [{"lead_id": ' + b"9" * 5000 + b"}]}",
    b"",
])
def test_malformed_json(client: TestClient, raw: bytes, all_logs) -> None:
    response = client.post("/v1/score", content=raw, headers={"content-type": "application/json"})
    assert_error(response, 400, "malformed_json")
    assert_no_canary(all_logs)


@pytest.mark.parametrize("payload", [
    [{"industry": CANARY}],
    {"lead": [{"industry": CANARY}]},
    {"leads": {"industry": CANARY}},
    {"leads": CANARY},
    CANARY,
])
def test_body_of_the_wrong_shape(client: TestClient, payload: object, all_logs) -> None:
    response = client.post("/v1/score", json=payload)
    error = assert_error(response, 422)
    assert error["code"] in {"invalid_request", "unknown_field"}
    assert_no_canary(all_logs)


@pytest.mark.parametrize("query", ["reasons=11", "reasons=-1", "reasons=" + CANARY,
                                   "reasons=²", "reasons=٣", "reasons=" + "9" * 5000,
                                   "reasons=", "reasons=1.5"])
def test_bad_query_parameter(client: TestClient, query: str, all_logs) -> None:
    response = client.post(f"/v1/score?{query}", json={"leads": [{}]})
    error = assert_error(response, 422, "invalid_request")
    assert error["details"][0]["loc"] == ["query", "reasons"]
    assert_no_canary(all_logs)


def test_unknown_route_and_wrong_method(client: TestClient, all_logs) -> None:
    assert_error(client.get(f"/v1/leads/{CANARY}"), 404, "not_found")
    assert_error(client.get("/v1/score"), 405, "method_not_allowed")
    assert_no_canary(all_logs)


def test_an_unexpected_failure_is_a_500_without_the_message(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, all_logs
) -> None:
    import serve.routes.score as route

    def explode(*args: object, **kwargs: object) -> None:
        raise ValueError(f"could not convert {CANARY}")

    monkeypatch.setattr(route, "score_records", explode)
    error = assert_error(client.post("/v1/score", json={"leads": [{}]}), 500, "internal_error")
    assert "server log" in error["message"]
    assert any("unhandled ValueError" in r.getMessage() for r in all_logs.records)
    assert_no_canary(all_logs)


def test_access_log_has_no_body_or_query(client: TestClient, all_logs) -> None:
    client.post(f"/v1/score?reasons=2&note={CANARY}", json={"leads": [{"lead_id": CANARY}]})
    lines = [r.getMessage() for r in all_logs.records if r.name == "serve.access"]
    assert any("POST /v1/score 200" in line for line in lines), lines
    assert_no_canary(all_logs)
