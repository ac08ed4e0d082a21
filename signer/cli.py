"""`tessera primes`: the signer's own commands (safe-prime pool for Paillier keys).

Every command takes `--json` (`hsm.output`): its result, or its error as
``{"error": {"code", "detail"}}``, is one JSON object on stdout.  Exit codes: 0 done,
1 refused, 2 usage.  `generate` shows per-prime progress on stderr unless `--json`.

The whole `tessera` command line is assembled in `coordinator.console`, the top layer."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hsm.output import JsonUsageGroup, emit, fail, refuse
from signer.errors import TesseraError
from signer.params import PRIME_BITS
from signer.primes import PrimePool, generate_safe_prime

primes_app = typer.Typer(
    help="Pregenerate safe primes for Paillier keys (aux-info, refresh).",
    no_args_is_help=True,
    cls=JsonUsageGroup,
)
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

PoolOption = Annotated[
    Path, typer.Option("--pool", help="Prime pool file (JSON, mode 0600).", dir_okay=False)
]
JsonFlag = Annotated[
    bool, typer.Option("--json", help="Machine-readable output (errors too) on stdout.")
]


def _generate(count: int, workers: int, show: bool) -> list[int]:
    """`count` distinct safe primes, `workers` processes, a progress bar per prime on stderr
    when `show`.  (A duplicate has probability ~2^-1500; it is replaced, never handed out.)"""
    primes: list[int] = []
    with Progress(
        TextColumn("safe primes"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
        disable=not show,
    ) as bar:
        task = bar.add_task("generate", total=count)
        if workers <= 1 or count <= 1:
            while len(primes) < count:
                p = generate_safe_prime(PRIME_BITS)
                if p not in primes:
                    primes.append(p)
                    bar.advance(task)
            return primes
        with ProcessPoolExecutor(max_workers=min(workers, count)) as pool:
            while len(primes) < count:
                missing = count - len(primes)
                futures = [pool.submit(generate_safe_prime, PRIME_BITS) for _ in range(missing)]
                for future in as_completed(futures):
                    p = future.result()
                    if p not in primes:
                        primes.append(p)
                        bar.advance(task)
    return primes


@primes_app.command("generate")
def primes_generate(
    pool: PoolOption,
    count: Annotated[int, typer.Option("--count", min=1, max=10_000, help="Primes to add.")] = 8,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Parallel processes.")] = 2,
    as_json: JsonFlag = False,
) -> None:
    """Generate COUNT fresh 1536-bit safe primes and add them to the pool file (created if
    absent).  Progress per prime on stderr unless --json."""
    target = PrimePool(pool)
    try:
        len(target)  # refuse an unreadable pool before spending minutes on primes
        primes = _generate(count, workers, show=not as_json)
        target.add(primes)
        total = len(target)
    except TesseraError as exc:
        refuse(exc, as_json)
    except OSError as exc:
        fail(as_json, "POOL_UNWRITABLE", f"{pool}: {exc.strerror or exc}")
    if as_json:
        emit({"pool": str(pool), "added": count, "count": total})
    else:
        console.print(f"added {count} safe primes; {pool} now holds {total}", highlight=False)


@primes_app.command("count")
def primes_count(pool: PoolOption, as_json: JsonFlag = False) -> None:
    """Print how many unused primes the pool holds (a missing pool file is an error: a typo
    in the path must not read as an empty pool)."""
    if not pool.is_file():
        fail(as_json, "POOL_NOT_FOUND", f"no prime pool file {pool}")
    try:
        total = len(PrimePool(pool))
    except TesseraError as exc:
        refuse(exc, as_json)
    except OSError as exc:
        fail(as_json, "POOL_UNREADABLE", f"{pool}: {exc.strerror or exc}")
    if as_json:
        emit({"pool": str(pool), "count": total})
    else:
        typer.echo(str(total))
