"""`tessera chain …`: the operator's view of the chain registry (coordinator/registry.py).

`tessera chain check [--registry FILE]` validates a registry file (default: the shipped
mainnets) and lists its chains and tokens; with `--json` the registry as one JSON object.  Exit
codes as every command group: 0 done, 1 refused (the file does not validate: every wrong field
is named), 2 usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hsm import output
from hsm.output import JsonUsageGroup, emit

chain_app = typer.Typer(
    cls=JsonUsageGroup,
    help="The chain registry: the EVM chains, RPC URLs, confirmations, fee ceilings and tokens.",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)

RegistryOption = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="Registry TOML file (default: the shipped mainnets, coordinator/mainnets.toml).",
        dir_okay=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Machine-readable output (errors too) on stdout.")
]


@chain_app.command("check")
def check(registry: RegistryOption = None, as_json: JsonOption = False) -> None:
    """Validate a chain registry and list what it holds."""
    from coordinator.registry import MAINNETS, RegistryError, load_registry  # noqa: PLC0415

    try:
        loaded = load_registry(registry or MAINNETS)
    except RegistryError as exc:
        output.fail(as_json, exc.code.value, str(exc), what="registry refused")
    if as_json:
        emit(loaded.model_dump(mode="json"))
        return
    table = Table("chain id", "name", "native", "fees", "confirmations", "tokens")
    for chain in loaded.chains:
        tokens = ", ".join(
            f"{symbol} ({token.decimals}) {token.address}" for symbol, token in chain.tokens.items()
        )
        fees = f"{chain.fee_model}, ≤ {chain.fee_ceiling_wei / 10**9:g} gwei"
        native = f"{chain.native.symbol} ({chain.native.decimals})"
        table.add_row(
            str(chain.chain_id), chain.name, native, fees, str(chain.confirmations), tokens or "—"
        )
    console.print(table)
