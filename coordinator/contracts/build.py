"""Compile the shipped contracts from source with the pinned solc-js and write their artifacts.

    python -m coordinator.contracts.build [--check]

Needs `coordinator/localchain/node_modules` (`./run` installs it with `npm ci`).  `--check`
writes nothing and exits 1 if an artifact differs from what the source compiles to.  The
settings are fixed here (optimizer on, 200 runs, the cancun EVM) and recorded in each artifact.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

from coordinator.contracts import CONTRACTS

HERE: Final = Path(__file__).resolve().parent
LOCALCHAIN: Final = HERE.parent / "localchain"
SETTINGS: Final[dict[str, Any]] = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "cancun",
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}
# solc-js's JavaScript API, not its CLI: the CLI prints notices on stdout before the JSON.
_COMPILE_JS: Final = (
    "const solc = require('solc');"
    "const input = require('fs').readFileSync(0, 'utf8');"
    "const output = JSON.parse(solc.compile(input));"
    "process.stdout.write(JSON.stringify({version: solc.version(), output}));"
)


class BuildError(RuntimeError):
    """solc-js is missing or the sources do not compile."""


def compile_sources(names: tuple[str, ...] = CONTRACTS) -> dict[str, dict[str, Any]]:
    """Each contract's artifact as the pinned compiler makes it from the source now on disk."""
    if not (LOCALCHAIN / "node_modules" / "solc").is_dir():
        raise BuildError(f"solc-js is not installed: npm ci --prefix {LOCALCHAIN}")
    sources = {f"{n}.sol": {"content": (HERE / f"{n}.sol").read_text("utf-8")} for n in names}
    request = json.dumps({"language": "Solidity", "sources": sources, "settings": SETTINGS})
    done = subprocess.run(  # noqa: S603 - a fixed command; the sources go to stdin
        ["node", "-e", _COMPILE_JS],  # noqa: S607 - Node.js from PATH, as npm is
        input=request,
        capture_output=True,
        text=True,
        cwd=LOCALCHAIN,
        check=False,
    )
    if done.returncode != 0:
        raise BuildError(f"solc-js failed: {done.stderr.strip()[-500:]}")
    result = json.loads(done.stdout)
    output = result["output"]
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise BuildError("; ".join(e.get("formattedMessage", e["message"]) for e in errors))
    out = {}
    for name in names:
        contract = output["contracts"][f"{name}.sol"][name]
        out[name] = {
            "contract": name,
            "compiler": f"solc-js {result['version']}",
            "settings": {k: v for k, v in SETTINGS.items() if k != "outputSelection"},
            "abi": contract["abi"],
            "bytecode": contract["evm"]["bytecode"]["object"],
            "runtime": contract["evm"]["deployedBytecode"]["object"],
        }
    return out


def artifact_text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print("usage: python -m coordinator.contracts.build [--check]", file=sys.stderr)
        return 2
    try:
        built = compile_sources()
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stale = []
    for name, data in built.items():
        path = HERE / f"{name}.json"
        text = artifact_text(data)
        if path.exists() and path.read_text("utf-8") == text:
            continue
        stale.append(name)
        if not check:
            path.write_text(text, "utf-8")
    if check and stale:
        print(f"stale artifacts: {', '.join(stale)} (run python -m coordinator.contracts.build)")
        return 1
    print(f"{'checked' if check else 'built'} {', '.join(built)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
