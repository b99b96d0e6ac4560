"""A real `leadscore serve` in its own process for the API and pages tests: a free port, the
server's log in a file, and a wait until `/readyz` answers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def launch(env: dict[str, str], cwd: Path, logs: Path, *args: str) -> Server:
    """`leadscore serve` in its own process on a free port, returned once `/readyz` says 200
    (60 s at most); its output goes to a log file in `logs`."""
    port = free_port()
    log = logs / f"server-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "leadscore.cli", "serve", "--host", HOST, "--port", str(port),
             *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
        )
    server = Server(process, f"http://{HOST}:{port}", log)
    wait_ready(server.url, lambda: process.poll() is None, lambda: server.text()[-3000:])
    return server


def wait_ready(url: str, alive: Callable[[], bool], why: Callable[[], str]) -> None:
    """Poll `url/readyz` until 200 (60 s at most); fail with `why()` if the server died."""
    import httpx

    deadline = time.monotonic() + 60
    while True:
        assert alive(), why()
        assert time.monotonic() < deadline, "server not ready in 60 s"
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
