"""The real server (`leadscore serve`, uvicorn in a subprocess on 127.0.0.1): reloads under load
drop no request and never serve a corrupt model; SIGTERM drains in-flight requests; several
workers share one /metrics. Every loop here is bounded in time and count."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from serve_helpers import API_KEY, CANARY
from server_helpers import Server, launch

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# after a graceful shutdown uvicorn re-raises the SIGTERM it caught, so the exit is by signal
STOPPED = (0, -signal.SIGTERM)

LOADED = 'leadscore_model_reloads_total{model="test-leads",result="loaded"}'
REFUSED = 'leadscore_model_reloads_total{model="test-leads",result="refused"}'


def switch(link: Path, target: Path) -> None:
    """Point `link` at `target` atomically, as a deploy would."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target, target_is_directory=True)
    tmp.replace(link)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[object]:
    started: list[Server] = []

    def start(model_uri: Path, *args: str, **env: str) -> Server:
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("LEADSCORE_", "MLFLOW_", "PROMETHEUS_"))}
        clean.update({"LEADSCORE_MODEL_URI": str(model_uri), "LEADSCORE_API_KEYS": API_KEY,
                      "PYTHONWARNINGS": "ignore", **env})
        server = launch(clean, ROOT, tmp_path, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=10)


@dataclass
class Load:
    """Concurrent scoring requests until stopped; every outcome is recorded."""

    url: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    versions: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    async def worker(self, n: int) -> None:
        leads = [{"lead_id": f"w{n}-{i}", "industry": "software", "budget": "yes"}
                 for i in range(1 + (n % 3) * 10)]
        async with httpx.AsyncClient(base_url=self.url, headers=AUTH, timeout=20) as client:
            for _ in range(100_000):  # bounded; stopped by the event long before
                if self.stop.is_set():
                    return
                try:
                    response = await client.post(f"/v1/score?reasons={n % 4}",
                                                 json={"leads": leads})
                except httpx.HTTPError as exc:
                    self.failures.append(type(exc).__name__)
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
                    continue
                self.versions.extend(r["model_version"] for r in response.json()["results"])


def test_reloads_under_load_drop_nothing_and_refuse_a_corrupt_model(
    start_server, bundles: dict[str, Path], tmp_path: Path
) -> None:
    live = tmp_path / "live"
    switch(live, bundles["v1"])
    server = start_server(live, LEADSCORE_RELOAD_SECONDS="0.2")

    async def scenario() -> tuple[Load, list[httpx.Response]]:
        load = Load(server.url)
        workers = [asyncio.create_task(load.worker(n)) for n in range(8)]
        admin: list[httpx.Response] = []
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30) as client:
            await asyncio.sleep(0.8)
            switch(live, bundles["v2"])
            admin.append(await client.post("/v1/admin/reload"))
            for _ in range(100):  # until the load has seen the new version, at most 10 s
                if "2" in load.versions[-20:]:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            switch(live, bundles["bad"])
            admin.append(await client.post("/v1/admin/reload"))
            await asyncio.sleep(1.0)  # several polls pass; each must refuse the corrupt model
            load.stop.set()
            await asyncio.gather(*workers)
        return load, admin

    load, admin = asyncio.run(scenario())
    assert load.failures == []
    assert len(load.versions) > 200
    assert set(load.versions) == {"1", "2"}
    assert load.versions.index("2") > 0 and load.versions[-1] == "2"
    assert admin[0].status_code == 200 and admin[0].json()["version"] == "2"
    assert admin[1].status_code == 409
    assert admin[1].json()["error"]["details"] == [{"model": "test-leads", "still_serving": "2"}]

    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'leadscore_model_info{name="test-leads",version="2"} 1.0' in metrics
    refused = [line for line in metrics.splitlines()
               if line.startswith(REFUSED)]
    assert refused and float(refused[0].split()[-1]) >= 2  # the admin call and the poller

    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) in STOPPED
    log = server.text()
    assert "checksum does not match" in log and "still serving version 2" in log
    assert "Traceback" not in log and API_KEY not in log


def test_sigterm_lets_in_flight_requests_finish(start_server, bundles: dict[str, Path]) -> None:
    server = start_server(bundles["v1"])
    leads = [{"lead_id": str(i), "industry": "software"} for i in range(1000)]

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as client:
            # bad requests first: refused, and the canary never reaches the log
            bad = await client.post("/v1/score", json={"leads": [{"email": CANARY}]})
            assert bad.status_code == 422
            huge = b'{"leads": [{"industry": "' + CANARY.encode() * 70_000 + b'"}]}'
            assert (await client.post("/v1/score", content=huge)).status_code == 413

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(100):
                    yield CANARY.encode() * 1000

            assert (await client.post("/v1/score", content=chunks())).status_code == 413
            assert (await client.post("/v1/score", json={"leads": [{}]})).status_code == 200
            slow = [asyncio.create_task(client.post("/v1/score?reasons=10",
                                                    json={"leads": leads}))
                    for _ in range(3)]
            await asyncio.sleep(0.3)  # the requests are in the server now
            server.process.send_signal(signal.SIGTERM)
            return [(await task).status_code for task in slow]

    assert asyncio.run(scenario()) == [200, 200, 200]
    assert server.process.wait(timeout=30) in STOPPED
    log = server.text()
    assert "shut down" in log and "POST /v1/score 200" in log
    assert "canary" not in log.lower()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/healthz", timeout=2)


def test_workers_share_one_metrics_endpoint(start_server, bundles: dict[str, Path]) -> None:
    server = start_server(bundles["v1"], "--workers", "2")
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=20) as client:
        for _ in range(30):
            assert client.post("/v1/score", json={"leads": [{}]}).status_code == 200
        for _ in range(4):  # whichever worker answers, it reports both workers' requests
            text = client.get("/metrics").text
            line = next(x for x in text.splitlines() if x.startswith(
                'leadscore_http_requests_total{method="POST",route="/v1/score",status="200"}'))
            assert float(line.split()[-1]) == 30.0
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) in STOPPED


def test_a_damaged_model_with_a_forged_checksum_is_refused_and_the_server_lives(
    start_server, bundles: dict[str, Path], tmp_path: Path
) -> None:
    """A truncated model.txt whose checksum was rewritten used to abort the server on reload
    (SIGABRT: the client saw a closed connection): now a 409, and the old model serves on."""
    damaged = Path(shutil.copytree(bundles["v2"], tmp_path / "damaged"))
    text = (damaged / "model.txt").read_bytes()
    cut = text[: len(text) // 2]
    (damaged / "model.txt").write_bytes(cut)
    meta = json.loads((damaged / "bundle.json").read_text(encoding="utf-8"))
    meta.update(version="4", model_sha256=hashlib.sha256(cut).hexdigest())
    (damaged / "bundle.json").write_text(json.dumps(meta), encoding="utf-8")
    live = tmp_path / "live"
    switch(live, bundles["v1"])
    server = start_server(live)
    switch(live, damaged)
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        refused = client.post("/v1/admin/reload")
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "model_refused"
        assert "model.txt is damaged" in error["message"]
        assert error["details"] == [{"model": "test-leads", "still_serving": "1"}]
        scored = client.post("/v1/score", json={"leads": [{"lead_id": "a"}]})
        assert scored.status_code == 200
        assert scored.json()["results"][0]["model_version"] == "1"
    assert server.process.poll() is None
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) in STOPPED
    assert "Traceback" not in server.text()


def test_a_client_that_hangs_up_mid_body_is_a_499(start_server, bundles: dict[str, Path]) -> None:
    server = start_server(bundles["v1"])
    host, port = server.url.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         b"\r\nContent-Length: 5000\r\nX-API-Key: " + API_KEY.encode() +
                         b"\r\n\r\n" + b'{"leads": [{"industry": "soft')
            time.sleep(0.2)  # the server is reading the body now
    deadline = time.monotonic() + 10
    while "POST /v1/score 499" not in server.text():
        assert time.monotonic() < deadline, server.text()[-2000:]
        time.sleep(0.1)
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert 'route="/v1/score",status="499"} 3.0' in metrics
    assert 'status="500"' not in metrics
    log = server.text()
    assert "Traceback" not in log and "unhandled" not in log
    assert httpx.post(f"{server.url}/v1/score", json={"leads": [{}]}, headers=AUTH,
                      timeout=10).status_code == 200
