"""API edges found by probing a live server: bodies that are not JSON, ids at the limits of
what JSON carries, reload refusals that name versions (never server paths), admin keys."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from serve_helpers import API_KEY, assert_error

ADMIN_KEY = "admin-key-9876543210"


def test_a_body_that_is_not_json_is_a_415(client: TestClient) -> None:
    body = b'{"leads": [{}]}'
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        error = assert_error(client.post("/v1/score", content=body,
                                         headers={"content-type": kind}), 415,
                             "unsupported_media_type")
        assert "Content-Type: application/json" in error["message"]
        assert error["details"] == [{"content_type": kind}]  # a media type is echoed as sent
    error = assert_error(client.post("/v1/score", content=body, headers={
        "content-type": "jane.doe@example.com"}), 415, "unsupported_media_type")
    assert error["details"] == [{"content_type": "(redacted)"}]  # anything else is not
    for kind in ("application/json", "application/json; charset=utf-8",
                 "application/vnd.leads+json"):
        response = client.post("/v1/score", content=body, headers={"content-type": kind})
        assert response.status_code == 200, (kind, response.text)
    assert client.post("/v1/score", content=body).status_code == 200  # none declared: JSON
    assert "415" in client.get("/openapi.json").json()["paths"]["/v1/score"]["post"]["responses"]


def test_integer_ids_up_to_64_bits(client: TestClient) -> None:
    for value in (0, 2**31, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)):
        body = f'{{"leads": [{{"lead_id": {value}}}, {{"lead_id": "x"}}]}}'.encode()
        response = client.post("/v1/score", content=body,
                               headers={"content-type": "application/json"})
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["id"] == str(value)
    for value in (2**64, -(2**63) - 1):
        body = f'{{"leads": [{{"lead_id": {value}}}]}}'.encode()
        error = assert_error(client.post("/v1/score", content=body), 422, "invalid_lead")
        assert "send bigger ids as text" in error["message"]
    # a whole number written as a float is that integer (JSON has one number type), as long as
    # a double holds it exactly
    body = b'{"leads": [{"lead_id": -511.0}, {"lead_id": 9007199254740992.0}]}'
    response = client.post("/v1/score", content=body)
    assert [r["id"] for r in response.json()["results"]] == ["-511", "9007199254740992"]
    assert_error(client.post("/v1/score", content=b'{"leads": [{"lead_id": 1.5}]}'), 422)
    assert_error(client.post("/v1/score", content=b'{"leads": [{"lead_id": true}]}'), 422)
    lead = client.get("/openapi.json").json()["components"]["schemas"]["Lead"]
    as_int = next(s for s in lead["properties"]["lead_id"]["anyOf"] if s.get("type") == "integer")
    assert as_int["maximum"] == 2**64 - 1 and as_int["minimum"] == -(2**63)


def test_a_refused_reload_names_the_version_never_a_path(
    make_client: Callable[..., TestClient], bundles: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    live = tmp_path / "live"
    shutil.copytree(bundles["v1"], live)
    api = make_client(live)
    shutil.rmtree(live)
    shutil.copytree(bundles["bad"], live)  # version "3", its checksum no longer matches
    error = assert_error(api.post("/v1/admin/reload"), 409, "model_refused")
    assert error["message"].startswith("test-leads version 3 refused: ")
    assert "checksum" in error["message"]
    assert str(tmp_path) not in error["message"] and not re.search(r"(^|\s)/\w", error["message"])


def test_admin_keys_are_separate_from_scoring_keys(
    make_client: Callable[..., TestClient], bundles: dict[str, Path]
) -> None:
    api = make_client(bundles["v1"], api_keys=API_KEY, admin_keys=ADMIN_KEY)
    scoring, admin = {"X-API-Key": API_KEY}, {"Authorization": f"Bearer {ADMIN_KEY}"}
    error = assert_error(api.post("/v1/admin/reload", headers=scoring), 401, "unauthorized")
    assert "admin key (LEADSCORE_ADMIN_KEYS)" in error["message"]
    assert api.post("/v1/admin/reload", headers=admin).status_code == 200
    assert api.post("/v1/score", json={"leads": [{}]}, headers=scoring).status_code == 200
    assert_error(api.post("/v1/score", json={"leads": [{}]}, headers=admin), 401)
    # without admin keys, the scoring keys open the admin routes as before
    plain = make_client(bundles["v1"], api_keys=API_KEY)
    assert plain.post("/v1/admin/reload", headers=scoring).status_code == 200


def test_a_bundle_folder_with_other_fields_is_held_until_allowed(
    make_client: Callable[..., TestClient], bundles: dict[str, Path], mixed_bundle: Path,
    tmp_path: Path,
) -> None:
    import json
    import shutil

    live = tmp_path / "live"
    shutil.copytree(bundles["v1"], live)
    api = make_client(live)
    shutil.rmtree(live)
    shutil.copytree(mixed_bundle, live)  # a model taking other fields (plan, visits, ...)
    error = assert_error(api.post("/v1/admin/reload"), 409, "model_refused")
    assert "takes other input fields than the served version 1" in error["message"]
    info = api.get("/v1/models/test-leads").json()
    assert info["version"] == "1" and "industry" in info["features"]
    assert "--allow-schema-change" in info["pending"]["reason"]
    assert api.post("/v1/score", json={"leads": [{"industry": "software"}]}).status_code == 200
    # what `leadscore promote NAME VERSION --allow-schema-change` writes into the folder
    meta = json.loads((live / "bundle.json").read_text())
    (live / "bundle.json").write_text(json.dumps({**meta, "schema_change_allowed": True}))
    assert api.post("/v1/admin/reload").status_code == 200
    info = api.get("/v1/models/test-leads").json()
    assert info["pending"] is None and "plan" in info["features"]


def test_a_reasons_value_with_odd_whitespace_is_no_500(client: TestClient) -> None:
    """Found by the fuzzer: `?reasons=0%1F` passed the digit check after strip() but reached
    int() unstripped."""
    response = client.post("/v1/score", json={"leads": [{}]}, params={"reasons": "0\x1f"})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["reasons"] == []
    assert_error(client.post("/v1/score", json={"leads": [{}]}, params={"reasons": "x\x1f"}),
                 422, "invalid_request")
