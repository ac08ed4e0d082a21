"""Benchmark of the protocols in one process at production parameters.

    ./run bench-protocols [--runs 10] [--aux-runs 3] [--json out.json]

For 2-of-3 and 3-of-5: keygen (DKG), aux-info, presign, online signing (all partials + combine
+ verify) and full interactive signing; total time and the per-party critical path (sum over
rounds of the slowest party's compute), next to a single-key libsecp256k1 signature.  Safe primes
are generated once up front (aux-info takes primes from a pool in production).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import baseline_sign_samples, describe, fmt, summarise
from signer.paillier import PaillierSecretKey
from signer.primes import generate_safe_primes
from signer.protocol.base import Message, Party
from signer.protocol.flow import configs, run_aux_info, run_keygen, run_presign
from signer.protocol.presign import Presignature
from signer.protocol.sign import HashScheme, SignParty, combine, issue_partial
from signer.protocol.simulate import run

# --- per-party, per-round compute accounting --------------------------------------------------

_work: dict[tuple[int, int], float] = defaultdict(float)
_original_start = Party.start
_original_receive = Party.receive


def _timed_start(self: Party[Any]) -> list[Message]:
    t0 = time.perf_counter()
    try:
        return _original_start(self)
    finally:
        _work[(self.me, 0)] += time.perf_counter() - t0


def _timed_receive(self: Party[Any], message: Message) -> list[Message]:
    t0 = time.perf_counter()
    try:
        return _original_receive(self, message)
    finally:
        _work[(self.me, message.round)] += time.perf_counter() - t0


def critical_path() -> float:
    rounds: dict[int, float] = defaultdict(float)
    for (_, wire_round), seconds in _work.items():
        rounds[wire_round] = max(rounds[wire_round], seconds)
    return sum(rounds.values())


def measure(
    fn: Callable[[], Any], runs: int, outputs: list[Any] | None = None
) -> tuple[list[float], list[float], list[float]]:
    """Wall time, critical path and CPU time (all threads of the process: every party's compute
    summed, the measure peers.md calls "total") of `runs` calls; results go to `outputs`."""
    totals, paths, cpus = [], [], []
    for _ in range(runs):
        _work.clear()
        c0 = time.process_time()
        t0 = time.perf_counter()
        result = fn()
        totals.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        paths.append(critical_path())
        if outputs is not None:
            outputs.append(result)
    return totals, paths, cpus


MESSAGE = b"benchmark: unsigned transaction bytes"
Record = Callable[..., None]


def bench_config(
    t: int, n: int, paillier: dict[int, PaillierSecretKey], runs: int, aux_runs: int, record: Record
) -> None:
    label = f"{t}-of-{n}"
    record(f"{label} keygen", *measure(lambda: run_keygen(t, n, b"bench"), max(runs, 20)))
    keys_n = {i: paillier[i] for i in range(1, n + 1)}
    record(f"{label} aux-info", *measure(lambda: run_aux_info(keys_n), aux_runs))
    aux = run_aux_info(keys_n)
    shares = run_keygen(t, n, b"bench")
    signers = tuple(range(1, t + 1))
    presignatures: list[dict[int, Presignature]] = []
    record(
        f"{label} presign",
        *measure(lambda: run_presign(shares, aux, signers, (0, 1)), runs, presignatures),
    )
    online: list[float] = []
    per_party: list[float] = []
    for fresh in presignatures:  # each presignature is used exactly once
        t0 = time.perf_counter()
        partials, slowest = {}, 0.0
        for i, presignature in fresh.items():
            s0 = time.perf_counter()
            partials[i] = issue_partial(presignature, MESSAGE, HashScheme.KECCAK256)
            slowest = max(slowest, time.perf_counter() - s0)
        c0 = time.perf_counter()
        combine(
            fresh[signers[0]].public,
            MESSAGE,
            HashScheme.KECCAK256,
            partials,
            shares[signers[0]].public_data(),
        )
        done = time.perf_counter()
        online.append(done - t0)
        per_party.append(slowest + (done - c0))
    record(f"{label} online sign (partials+combine+verify)", online, per_party)

    def interactive() -> None:
        cfgs = configs("interactive_sign/v1", signers, t, b"bench")
        parties = [
            SignParty(c, shares[c.me], aux[c.me], MESSAGE, HashScheme.KECCAK256) for c in cfgs
        ]
        run(parties)

    record(f"{label} full interactive signing", *measure(interactive, max(runs // 2, 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--aux-runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    Party.start = _timed_start  # type: ignore[method-assign]
    Party.receive = _timed_receive  # type: ignore[method-assign]
    results: dict[str, dict[str, float]] = {}

    def record(
        name: str,
        totals: list[float],
        paths: list[float] | None = None,
        cpus: list[float] | None = None,
    ) -> None:
        stats = results[name] = summarise(totals)
        line = f"  {name:<44} median {fmt(stats['median']):>10}  p90 {fmt(stats['p90']):>10}"
        if paths is not None:
            stats["critical_path_median"] = summarise(paths)["median"]
            line += f"  critical path {fmt(stats['critical_path_median']):>10}"
        if cpus is not None:
            stats["cpu_median"] = summarise(cpus)["median"]
            line += f"  cpu {fmt(stats['cpu_median']):>10}"
        print(line, flush=True)

    print("machine:", json.dumps(describe()))
    record("baseline: libsecp256k1 sign", baseline_sign_samples())
    print("generating 10 safe primes for the aux-info runs …", flush=True)
    primes = generate_safe_primes(10)
    paillier = {
        i: PaillierSecretKey.from_primes(primes[2 * i - 2], primes[2 * i - 1]) for i in range(1, 6)
    }
    runs, aux_runs = max(args.runs, 2), max(args.aux_runs, 2)
    for t, n in ((2, 3), (3, 5)):
        bench_config(t, n, paillier, runs, aux_runs, record)
    print("\n| operation | runs | median (wall) | p90 | critical path | CPU, all parties |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, stats in results.items():
        path = fmt(stats["critical_path_median"]) if "critical_path_median" in stats else ""
        cpu = fmt(stats["cpu_median"]) if "cpu_median" in stats else ""
        cells = f"{int(stats['runs'])} | {fmt(stats['median'])} | {fmt(stats['p90'])}"
        print(f"| {name} | {cells} | {path} | {cpu} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": describe(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
