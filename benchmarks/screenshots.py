"""Screenshots of the pages at desktop (1280 px) and phone (390 px) widths, from a demo store.

    .venv/bin/python benchmarks/screenshots.py            # 3,000 demo leads scored on 3 dates

Builds benchmarks/pages.py's demo (the synthetic CRM's model, leads scored on 3 dates), starts
a real `leadscore serve` with an API key, signs in through the form in headless Chromium
(Debian's /usr/bin/chromium, driven by Playwright) and writes
benchmarks/results/pages/{board,lead,model,form}-{1280,390}.png. A page the server does not have
(the model page, before it exists) is skipped with a note.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "results" / "pages"
KEY = "demo-key-screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
sys.path.insert(0, str(HERE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from pages import MODEL, build_store, wait_ready
    from playwright.sync_api import sync_playwright

    workdir = args.workdir or Path(tempfile.gettempdir()) / "leadscore-bench-pages"
    workdir.mkdir(parents=True, exist_ok=True)
    bundle_dir, home = build_store(workdir, args.rows)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LEADSCORE_", "MLFLOW_", "PROMETHEUS_"))}
    env.update({"LEADSCORE_MODEL_URI": str(bundle_dir), "LEADSCORE_HOME": str(home),
                "LEADSCORE_API_KEYS": KEY, "LEADSCORE_LOG_LEVEL": "WARNING",
                "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])})
    with (home / "screenshots-server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "leadscore.cli", "serve", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    OUT.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        wait_ready(url, process)
        # a lead whose score moved: the lead page then has a history worth a look
        from leadscore.board import Board
        from leadscore.store import ScoreStore

        latest = Board(ScoreStore(home / "scores")).latest(MODEL).to_pylist()
        moved = max(latest, key=lambda r: (r["trend"] == "rising", r["score"]))
        lead = moved["lead_id"]
        pages = {"board": "/", "lead": f"/leads/{lead}", "model": f"/models/{MODEL}",
                 "form": f"/models/{MODEL}/score"}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for width in (1280, 390):
                context = browser.new_context(viewport={"width": width, "height": 900},
                                              device_scale_factor=1)
                tab = context.new_page()
                tab.goto(f"{url}/signin")
                tab.fill("#key", KEY)
                tab.click("button[type=submit]")
                tab.wait_for_url(f"{url}/")
                for name, path in pages.items():
                    response = tab.goto(url + path)
                    if response is None or response.status != 200:
                        status = response.status if response is not None else "no answer"
                        print(f"{name}: {path} answered {status}; no screenshot")  # noqa: T201
                        continue
                    tab.wait_for_load_state("networkidle")
                    target = OUT / f"{name}-{width}.png"
                    tab.screenshot(path=str(target), full_page=name != "board")
                    written.append(target)
                context.close()
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
        time.sleep(0.1)
    for target in written:
        print(target.relative_to(ROOT))  # noqa: T201


if __name__ == "__main__":
    main()
