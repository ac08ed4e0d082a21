"""The Solidity contracts Tessera ships, with their compiled artifacts.

Each contract is a `.sol` source next to a `.json` artifact (ABI, creation and runtime bytecode,
the compiler and its settings) that `python -m coordinator.contracts.build` makes with the solc-js
pinned in `coordinator/localchain/package.json`.  The artifacts are checked in so a coordinator
needs no Node.js to deploy or call a contract; `tests/test_contracts.py` recompiles every source
and requires the same bytes, so what is shipped is what the source says.

- `Token`: a plain ERC-20 for local chains (the demo's and the tests' tokens).
- `Disperse`: one transaction paying many recipients, ether or an ERC-20 (batch payouts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["CONTRACTS", "Artifact", "artifact"]

#: The contracts shipped, by name (each is `<name>.sol` defining `contract <name>`).
CONTRACTS = ("Token", "Disperse")


@dataclass(frozen=True)
class Artifact:
    """One compiled contract."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes  # creation code (constructor arguments are appended at deployment)
    runtime: bytes  # the code the chain stores at the contract's address
    compiler: str


@cache
def artifact(name: str) -> Artifact:
    """The checked-in artifact of contract `name`."""
    if name not in CONTRACTS:
        raise KeyError(f"no contract {name!r}: Tessera ships {', '.join(CONTRACTS)}")
    text = resources.files(__package__).joinpath(f"{name}.json").read_text("utf-8")
    data = json.loads(text)
    return Artifact(
        name=name,
        abi=data["abi"],
        bytecode=bytes.fromhex(data["bytecode"]),
        runtime=bytes.fromhex(data["runtime"]),
        compiler=data["compiler"],
    )
