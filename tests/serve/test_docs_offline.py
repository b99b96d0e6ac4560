"""No CDN anywhere: /docs and /redoc reference only the server's own files, which it serves;
the OpenAPI schema has an example per route and each categorical field's values; results carry
reason labels and texts and the tier's word."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from words_helpers import train_labelled

from leadscore.scoring import load_bundle

URL_IN_TEXT = re.compile(r"""(?:https?:)?//[^\s'"<>)]+""")


class _Links(HTMLParser):
    """Every URL an HTML page could make a browser fetch or follow: attributes, and URLs
    written inside scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.attributes: list[str] = []
        self.in_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and name in {"src", "href", "spec-url", "action", "data", "poster"}:
                self.attributes.append(value)
            if value and name == "style":
                self.in_text += URL_IN_TEXT.findall(value)

    def handle_data(self, data: str) -> None:
        self.in_text += URL_IN_TEXT.findall(data)


def _links(html: str) -> _Links:
    parser = _Links()
    parser.feed(html)
    return parser


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_reference_no_external_host_and_assets_are_served(client: TestClient,
                                                               page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    links = _links(response.text)
    assert not links.in_text, f"URLs written into {page}: {links.in_text}"
    assert "fonts.googleapis" not in response.text and "cdn.jsdelivr" not in response.text
    assets = [url for url in links.attributes if not url.startswith("#")]
    assert assets, "the page loads its script from somewhere"
    for url in assets:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{page} loads {url} from another host"
        assert url.startswith("/"), url
        served = client.get(url)
        assert served.status_code == 200, url
        assert len(served.content) > 0
    scripts = [u for u in assets if u.endswith(".js")]
    assert scripts and all(u.startswith("/static/") for u in scripts)
    if page == "/docs":
        assert "validatorUrl" in response.text, "the online validator is switched off"
        assert client.get("/static/swagger-ui/swagger-ui.css").headers["content-type"] \
            .startswith("text/css")
    assert client.get("/openapi.json").status_code == 200


def test_vendored_assets_ship_with_their_licences() -> None:
    import serve

    static = Path(serve.__file__).parent / "static"
    for folder, script in (("swagger-ui", "swagger-ui-bundle.js"),
                           ("redoc", "redoc.standalone.js")):
        assert (static / folder / script).stat().st_size > 100_000
        licence = (static / folder / "LICENSE").read_text(encoding="utf-8")
        assert "License" in licence or "LICENSE" in licence
    assert "Apache License" in (static / "swagger-ui" / "LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in (static / "redoc" / "LICENSE").read_text(encoding="utf-8")


def test_static_files_stay_in_their_folder(client: TestClient) -> None:
    assert client.get("/static/../main.py").status_code == 404
    assert client.get("/static/nothing.js").status_code == 404


@pytest.fixture(scope="module")
def labelled_bundle(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder, table = train_labelled(synth_dir, tmp_path_factory.mktemp("labelled-api"))
    return folder, table


@pytest.fixture
def labelled_client(make_client: Callable[..., TestClient], labelled_bundle: Any) -> TestClient:
    return make_client(labelled_bundle[0])


def test_openapi_lists_categorical_values_and_examples(labelled_client: TestClient,
                                                       labelled_bundle: Any) -> None:
    schema = labelled_client.get("/openapi.json").json()
    bundle = load_bundle(labelled_bundle[0])
    lead = schema["components"]["schemas"]["Lead"]["properties"]
    categorical = {f.source: f.levels for f in bundle.builder.features_
                   if f.kind == "categorical" and not f.derive}
    assert {"industry", "country", "activity.last_channel"} <= set(categorical)
    for name, levels in categorical.items():
        assert lead[name]["examples"] == list(levels), name
        assert "enum" not in lead[name], "another value is scored, so it is no enum"
    assert "software" in lead["industry"]["examples"]
    assert lead["industry"]["description"].startswith("Sector: one of the")
    assert "examples" not in lead["job_title"], "free text (derived from): no list"
    assert "examples" not in lead["activity.demo_request.7d"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            response = operation["responses"]["200"]["content"]
            assert any("example" in body for body in response.values()), (method, path)
            if method == "post" and path.endswith("/score"):
                example = operation["requestBody"]["content"]["application/json"]["example"]
                assert example["leads"][0]["industry"] in categorical["industry"]
    answer = schema["paths"]["/v1/score"]["post"]["responses"]["200"]["content"][
        "application/json"]["example"]["results"][0]
    assert answer["tier_label"] in {"on fire", "warm", "cool", "frozen"}
    assert answer["reasons"] and all(r["text"].startswith(r["label"]) or r["text"][0].isdigit()
                                     for r in answer["reasons"])


def test_api_reasons_carry_label_and_text(labelled_client: TestClient,
                                          labelled_bundle: Any) -> None:
    folder, table = labelled_bundle
    bundle = load_bundle(folder)
    fields = [c for c in bundle.inputs if c in table.columns and c not in {"email", "phone"}]
    rows = table.head(30)[fields].astype(object).where(table.head(30)[fields].notna(), None)
    leads = [{"lead_id": str(i), **row} for i, row in enumerate(rows.to_dict("records"))]
    results = labelled_client.post("/v1/score?reasons=10", json={"leads": leads}).json()
    words = {"A": "on fire", "B": "warm", "C": "cool", "D": "frozen"}
    labels = {s: w.label for s, w in zip(bundle.sources, bundle.words_, strict=True)}
    seen = set()
    for result in results["results"]:
        assert result["tier_label"] == words[result["tier"]]
        for reason in result["reasons"]:
            assert set(reason) == {"feature", "value", "impact", "label", "text"}
            assert reason["label"] == labels[reason["feature"]]
            assert reason["text"].endswith(("point", "points"))
            seen.add(reason["label"])
    assert "Sector" in seen, "the spec's label for industry"
    assert any(" in the last " in label for label in seen), "activity features in words"
    info = labelled_client.get("/v1/model").json()
    assert info["tier_words"] == words and info["labels"]["industry"] == "Sector"
