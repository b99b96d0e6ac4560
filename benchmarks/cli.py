"""Start-up time of the `leadscore` command: `--help`, `--version`, every command's `-h` and a
spec mistake, each in a fresh process, as wall seconds and as a ratio to `python -c pass` (which
tells this machine's speed apart from leadscore's imports). Also lists the heavy libraries each
one imported (a spec mistake needs pydantic: the spec is a pydantic model).

    .venv/bin/python benchmarks/cli.py [--repeat 7]      -> benchmarks/results/cli.json

The goal (issue "lean, quick and conventional"): each answer in at most 1.0 s wall on this
machine, with no MLflow, LightGBM, scikit-learn, pandas or PySpark imported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("mlflow", "lightgbm", "sklearn", "pandas", "pyspark", "pandera", "optuna", "pydantic")
# prints which heavy modules a command imported, once it has finished (exit code kept)
PROBE = (
    "import atexit, runpy, sys\n"
    "heavy = {heavy!r}\n"
    "atexit.register(lambda: sys.stderr.write('HEAVY=' + ','.join(m for m in heavy "
    "if m in sys.modules) + '\\n'))\n"
    "sys.argv = ['leadscore', *sys.argv[1:]]\n"
    "runpy.run_module('leadscore.cli', run_name='__main__')\n"
)


def command_paths() -> list[list[str]]:
    """Every command and sub-command of the app (`train`, ..., `cache clear`)."""
    import typer.main

    from leadscore import cli

    group = typer.main.get_command(cli.app)
    paths: list[list[str]] = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        subs = getattr(command, "commands", None)
        paths += [[name, sub] for sub in subs] if subs else [[name]]
    return paths


def wall(argv: list[str], env: dict[str, str], cpu: list[float] | None = None) -> float:
    """Wall seconds of one run; its CPU seconds (user + system) appended to `cpu`."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, check=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "bad.yaml"
        bad.write_text("name: x\nleads: {path: l.csv}\noutcom: {}\n", encoding="utf-8")
        cases = {"--help": ["--help"], "--version": ["--version"]}
        cases.update({f"{' '.join(path)} -h": [*path, "-h"] for path in command_paths()})
        cases["spec mistake (train)"] = ["train", "--config", str(bad)]
        base_cpu: list[float] = []
        base = [wall([sys.executable, "-c", "pass"], env, base_cpu) for _ in range(args.repeat)]
        baseline = statistics.median(base)
        results = {}
        for name, cli_args in cases.items():
            cpu: list[float] = []
            times = [wall([sys.executable, "-m", "leadscore.cli", *cli_args], env, cpu)
                     for _ in range(args.repeat)]
            probe = subprocess.run(
                [sys.executable, "-c", PROBE.format(heavy=HEAVY), *cli_args],
                env=env, capture_output=True, text=True, check=False,
            )
            heavy = [line for line in probe.stderr.splitlines() if line.startswith("HEAVY=")]
            results[name] = {
                "median_s": round(statistics.median(times), 3),
                "min_s": round(min(times), 3),
                "ratio_to_python": round(statistics.median(times) / baseline, 1),
                # CPU seconds (user + system): what the wall time would be on an idle core
                "median_cpu_s": round(statistics.median(cpu), 3),
                "heavy_imports": heavy[-1][6:].split(",") if heavy and heavy[-1][6:] else [],
            }
            print(f"{name:24s} {results[name]['median_s']:.3f} s "
                  f"(cpu {results[name]['median_cpu_s']:.3f} s) "
                  f"({results[name]['ratio_to_python']}x python -c pass)  "
                  f"heavy: {results[name]['heavy_imports'] or 'none'}")
    try:
        import pyspark  # noqa: F401

        spark = True
    except ImportError:
        spark = False
    out = {
        "python_c_pass_s": round(baseline, 3),
        "python_c_pass_cpu_s": round(statistics.median(base_cpu), 3),
        "repeat": args.repeat,
        "pyspark_installed": spark,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "goal_s": 1.0,
        "slowest_s": max(r["median_s"] for r in results.values()),
        "commands": results,
    }
    path = ROOT / "benchmarks" / "results" / "cli.json"
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
