"""Property-based fuzzing of POST /v1/score: requests generated from the served OpenAPI schema,
then mangled (wrong types, unknown fields, odd JSON, raw bytes, odd query strings). Whatever
comes in, the answer is a 2xx or a 4xx in the one error shape: never a 5xx."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_helpers import CANARY, serve_settings

pytestmark = pytest.mark.slow

EXAMPLES = 650


@pytest.fixture(scope="module")
def fuzz_client(mixed_bundle: Path) -> Iterator[TestClient]:
    from serve.main import create_app

    with TestClient(create_app(serve_settings(mixed_bundle, max_batch=50)),
                    raise_server_exceptions=False) as client:
        yield client


def from_schema(schema: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid under the (small) JSON Schema subset the API's OpenAPI document uses."""
    if "$ref" in schema:
        return from_schema(components[schema["$ref"].rsplit("/", 1)[-1]], components)
    if "anyOf" in schema:
        return st.one_of([from_schema(option, components) for option in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v, components) for k, v in properties.items() if k in required},
            optional={k: from_schema(v, components)
                      for k, v in properties.items() if k not in required},
        )
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), components),
                        min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 60), 60))  # small examples
    simple: dict[str, st.SearchStrategy[Any]] = {
        "string": st.text(max_size=30) | st.just(CANARY),
        "integer": st.integers(),
        "number": st.floats(allow_nan=False, allow_infinity=False) | st.integers(),
        "boolean": st.booleans(),
        "null": st.none(),
    }
    return simple[str(kind)] if kind in simple else json_values


def request_schema(client: TestClient) -> st.SearchStrategy[Any]:
    """Requests valid under the ScoreRequest schema that /openapi.json serves."""
    components = client.get("/openapi.json").json()["components"]["schemas"]
    return from_schema(components["ScoreRequest"], components)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.just(CANARY),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)


def mangled(valid: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A valid request with one part swapped for arbitrary JSON."""
    leads = valid["leads"]
    return st.one_of(
        st.just(valid),
        json_values.map(lambda v: {"leads": v}),
        json_values,
        st.tuples(st.integers(0, max(0, len(leads) - 1)), st.text(max_size=15), json_values).map(
            lambda t: {"leads": [
                {**lead, t[1]: t[2]} if i == t[0] else lead for i, lead in enumerate(leads)
            ] or [{t[1]: t[2]}]}),
    )


def check(response: Any) -> None:
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code == 200:
        assert all("model_version" in r for r in body["results"])
    else:
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}


def test_fuzzed_requests_never_get_a_5xx(fuzz_client: TestClient) -> None:
    valid = request_schema(fuzz_client)
    sent: list[int] = []
    queries = st.one_of(st.none(), st.integers(-3, 13).map(str), st.text(max_size=6))

    bodies = st.one_of(
        valid.flatmap(mangled).map(lambda b: json.dumps(b).encode()),
        valid.map(lambda b: json.dumps(b).encode()),
        st.binary(max_size=200),
        json_values.map(lambda b: json.dumps(b).encode()),
    )

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=bodies, reasons=queries)
    def one(body: bytes, reasons: str | None) -> None:
        params = {} if reasons is None else {"reasons": reasons}
        response = fuzz_client.post("/v1/score", content=body, params=params,
                                    headers={"content-type": "application/json"})
        sent.append(response.status_code)
        check(response)

    one()
    seen = Counter(sent)
    assert len(sent) >= 500, seen
    assert {200, 400, 422} <= set(seen), seen  # the fuzzing reached every layer


def test_fuzzed_routes_and_methods_never_get_a_5xx(fuzz_client: TestClient) -> None:
    sent: list[int] = []

    @settings(max_examples=150, deadline=None, database=None)
    @given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
           path=st.sampled_from(["/v1/score", "/v1/model", "/v1/admin/reload", "/healthz",
                                 "/readyz", "/metrics", "/nope", "/v1/score/x"]),
           body=st.binary(max_size=50))
    def one(method: str, path: str, body: bytes) -> None:
        response = fuzz_client.request(method, path, content=body)
        sent.append(response.status_code)
        assert response.status_code < 500, response.text

    one()
    assert len(sent) >= 100, Counter(sent)
