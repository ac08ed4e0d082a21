"""Start-up time of the officer command line: what an operator waits for on every command.

    .venv/bin/python benchmarks/bench_cli_startup.py [--runs 20] [--json out.json]

Runs, each `--runs` times in a fresh subprocess (the interpreter start, every import and the
command itself, exactly as a shell runs it):
  * ``python -m coordinator policy --help``
  * ``python -m coordinator policy validate <the shipped example policy>``
  * ``python -m coordinator officer --help``
and prints the median and p90 wall-clock seconds of each, next to a bare ``python -c pass`` (the
interpreter's own floor) and the machine.  Timing depends on the machine and its load; no test
asserts on it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import describe, fmt, summarise

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "policies" / "examples" / "example.yaml"
COMMANDS: dict[str, list[str]] = {
    "python -c pass (floor)": ["-c", "pass"],
    "policy --help": ["-m", "coordinator", "policy", "--help"],
    "policy validate example.yaml": ["-m", "coordinator", "policy", "validate", str(EXAMPLE)],
    "officer --help": ["-m", "coordinator", "officer", "--help"],
}


def measure(args: list[str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=False
        )
        samples.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per command (default 20)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    runs = max(args.runs, 2)
    print("machine:", json.dumps(describe()))
    measure(COMMANDS["policy --help"], 1)  # warm the file cache and the .pyc files once
    results: dict[str, dict[str, float]] = {}
    print(f"\n| command ({runs} runs each) | median | p90 |")
    print("|---|--:|--:|")
    for name, command in COMMANDS.items():
        results[name] = summarise(measure(command, runs))
        stats = results[name]
        print(f"| `{name}` | {fmt(stats['median'])} | {fmt(stats['p90'])} |")
    if args.json is not None:
        args.json.write_text(
            json.dumps({"machine": describe(), "runs": runs, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
