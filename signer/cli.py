"""`tessera primes`: the signer's own commands (safe-prime pool for Paillier keys).

The whole `tessera` command line is assembled in `coordinator.console`, the top layer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from signer.errors import TesseraError
from signer.primes import PrimePool, generate_safe_primes

primes_app = typer.Typer(help="Pregenerate safe primes for Paillier keys (aux-info, refresh).")
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

PoolOption = Annotated[
    Path, typer.Option("--pool", help="Prime pool file (JSON, mode 0600).", dir_okay=False)
]


@primes_app.command("generate")
def primes_generate(
    pool: PoolOption,
    count: Annotated[int, typer.Option("--count", min=1, max=10_000, help="Primes to add.")] = 8,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Parallel processes.")] = 2,
) -> None:
    """Generate COUNT fresh 1536-bit safe primes and add them to the pool file."""
    primes = generate_safe_primes(count, workers=workers)
    try:
        target = PrimePool(pool)
        target.add(primes)
    except TesseraError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"added {count} safe primes; {pool} now holds {len(target)}")


@primes_app.command("count")
def primes_count(pool: PoolOption) -> None:
    """Print how many unused primes the pool holds."""
    try:
        typer.echo(str(len(PrimePool(pool))))
    except TesseraError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc

