"""The exchange's side of `bench-api`: a process of its own submitting withdrawals to the signer
API over HTTP with the Python client, as the exchange's withdrawal service would, so that none
of the client's work (building and signing requests, reading answers, polling) runs on the
service's event loop.  `benchmarks/bench_api.py` starts it and reads its report (JSON on stdout):

  * per asset, one withdrawal at a time: its id, the wall-clock moment the POST started, the
    seconds to its 202, and its final status;
  * `--concurrency` clients at once over `2 × --withdrawals` USDT withdrawals: each id and
    final status, and the seconds the whole run took.

The times to SIGNED and COMPLETED are not measured here: the parent reads them from the
withdrawals' own event rows (the service's clock, the same machine's as this one's), so the
polling interval (`--poll`) adds nothing to them; it only sets when the next one starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coordinator.api.auth import load_private_key
from coordinator.api.client import AsyncTesseraClient
from coordinator.api.models import WithdrawalCreate

#: The assets of the one-at-a-time runs and the amount each withdrawal pays.
AMOUNTS = {"ETH": "0.001", "USDT": "1.5"}
#: The amount of each withdrawal of the concurrent run (USDT).
CONCURRENT_AMOUNT = "2"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    client = AsyncTesseraClient(args.url, args.key_id, load_private_key(args.key_file.read_bytes()))
    counter = iter(range(10**9))

    def body(asset: str, amount: str) -> WithdrawalCreate:
        return WithdrawalCreate(
            client_request_id=f"bench-{asset}-{next(counter)}-{time.time_ns()}",
            wallet=args.wallet,
            chain_id=args.chain_id,
            asset=asset,
            destination=args.destination,
            amount=amount,
        )

    report: dict[str, Any] = {"poll": args.poll, "sequential": {}, "concurrent": {}}
    try:
        for asset, amount in AMOUNTS.items():
            rows = []
            for _ in range(args.withdrawals):
                wall, t0 = time.time(), time.perf_counter()
                accepted = await client.create_withdrawal(body(asset, amount))
                answered = time.perf_counter() - t0
                done = await client.wait(accepted.id, poll=args.poll)
                rows.append(
                    {"id": accepted.id, "wall": wall, "answered": answered, "status": done.status}
                )
            report["sequential"][asset] = rows

        gate = asyncio.Semaphore(args.concurrency)

        async def one(request: WithdrawalCreate) -> dict[str, str]:
            async with gate:
                accepted = await client.create_withdrawal(request)
                done = await client.wait(accepted.id, poll=max(args.poll, 0.05), timeout=600)
                return {"id": accepted.id, "status": done.status}

        many = [body("USDT", CONCURRENT_AMOUNT) for _ in range(2 * args.withdrawals)]
        t0 = time.perf_counter()
        ended = await asyncio.gather(*(one(r) for r in many))
        report["concurrent"] = {"seconds": time.perf_counter() - t0, "withdrawals": ended}
    finally:
        await client.aclose()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key-id", required=True)
    parser.add_argument("--key-file", type=Path, required=True, help="the key's PEM")
    parser.add_argument("--wallet", default="hot")
    parser.add_argument("--chain-id", type=int, required=True)
    parser.add_argument("--destination", required=True)
    parser.add_argument("--withdrawals", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between status reads")
    args = parser.parse_args()
    json.dump(asyncio.run(run(args)), sys.stdout)


if __name__ == "__main__":
    main()
