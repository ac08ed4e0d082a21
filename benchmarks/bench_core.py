"""Benchmark of the cryptographic core at production parameters (N = 3072, m = 128).

    ./run bench [--runs 20] [--prime-runs 20] [--json out.json]

Prints a markdown table (median, p90 over the runs) for safe-prime generation, Paillier keygen,
encryption, decryption and prove/verify of every proof, next to a single-key libsecp256k1
(coincurve) signature measured in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import coincurve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import describe, fmt, summarise
from signer.curve import Point, Q
from signer.paillier import PaillierSecretKey
from signer.params import ELL_PRIME
from signer.primes import generate_safe_primes
from signer.ring_pedersen import RingPedersenSecret
from signer.zk import aff_g, enc, fac, log_star, mod, prm, sch
from signer.zk.common import ProofContext


def measure(fn: Callable[[], Any], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per operation (default 20)")
    parser.add_argument("--prime-runs", type=int, default=20, help="safe-prime pair generations")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    runs = max(args.runs, 2)
    results: dict[str, dict[str, float]] = {}

    def record(name: str, samples: list[float]) -> None:
        results[name] = summarise(samples)
        stats = results[name]
        print(f"  {name:<44} median {fmt(stats['median']):>10}  p90 {fmt(stats['p90']):>10}")

    print("machine:", json.dumps(describe()))
    # --- baseline: single-key ECDSA with libsecp256k1 -----------------------------------------
    key = coincurve.PrivateKey()
    digest = hashlib.sha256(b"baseline").digest()
    record("baseline: libsecp256k1 sign", measure(lambda: key.sign(digest, hasher=None), 2000))
    signature = key.sign(digest, hasher=None)
    public = key.public_key
    record(
        "baseline: libsecp256k1 verify",
        measure(lambda: public.verify(signature, digest, hasher=None), 2000),
    )
    # --- safe primes and keys -----------------------------------------------------------------
    pairs: list[list[int]] = []

    def pair() -> None:
        pairs.append(generate_safe_primes(2, workers=2))

    record("safe-prime pair, 2×1536 bits (2 processes)", measure(pair, max(args.prime_runs, 2)))
    record(
        "Paillier keygen from a prime pair",
        measure(lambda: PaillierSecretKey.from_primes(*pairs[0]), runs),
    )
    key1 = PaillierSecretKey.from_primes(*pairs[0])
    key2 = PaillierSecretKey.from_primes(*pairs[1])
    record("ring-Pedersen parameters", measure(lambda: RingPedersenSecret.generate(key1), runs))
    rp1, rp2 = RingPedersenSecret.generate(key1), RingPedersenSecret.generate(key2)
    aux = rp2.params
    k = secrets.randbelow(Q)
    record("Paillier encrypt (own key, CRT)", measure(lambda: key1.encrypt(k), runs))
    record("Paillier encrypt (peer key)", measure(lambda: key1.public.encrypt(k), runs))
    K, rho = key1.encrypt(k)
    record("Paillier decrypt (CRT)", measure(lambda: key1.decrypt(K), runs))
    # --- proofs -------------------------------------------------------------------------------
    ctx = ProofContext(secrets.token_bytes(32), 1)

    def bench_proof(
        name: str,
        prove: Callable[[], Any],
        verify: Callable[[Any], None],
        third_party: Callable[[Any], None] | None = None,
    ) -> None:
        proof = prove()
        verify(proof)
        record(f"Π{name} prove", measure(prove, runs))
        record(f"Π{name} verify", measure(lambda: verify(proof), runs))
        results[f"Π{name} verify"]["bytes"] = len(proof.to_bytes())
        if third_party is not None:  # verification without the verifier's trapdoor
            record(f"Π{name} verify (third party)", measure(lambda: third_party(proof), runs))

    bench_proof("mod", lambda: mod.prove(ctx, key1), lambda p: mod.verify(ctx, key1.n, p))
    bench_proof("prm", lambda: prm.prove(ctx, rp1), lambda p: prm.verify(ctx, rp1.params, p))
    bench_proof(
        "fac",
        lambda: fac.prove(ctx, key1, aux),
        lambda p: fac.verify(ctx, key1.n, p, rp2),
        lambda p: fac.verify(ctx, key1.n, p, aux),
    )
    X = Point.base_mul(k)
    bench_proof("sch", lambda: sch.prove(ctx, X, k), lambda p: sch.verify(ctx, X, p))
    enc_public = enc.EncPublic(key1.public, K)
    bench_proof(
        "enc",
        lambda: enc.prove(ctx, enc_public, enc.EncPrivate(k, rho), aux, key1),
        lambda p: enc.verify(ctx, enc_public, p, rp2),
        lambda p: enc.verify(ctx, enc_public, p, aux),
    )
    g = Point.base_mul(secrets.randbelow(Q))
    ls_public = log_star.LogStarPublic(key1.public, K, g * k, g)
    bench_proof(
        "log*",
        lambda: log_star.prove(ctx, ls_public, log_star.LogStarPrivate(k, rho), aux, key1),
        lambda p: log_star.verify(ctx, ls_public, p, rp2),
        lambda p: log_star.verify(ctx, ls_public, p, aux),
    )
    K2, _ = key2.encrypt(secrets.randbelow(Q))
    x, y = secrets.randbelow(Q), secrets.randbelow(1 << ELL_PRIME)
    masked, rho_d = key2.public.encrypt(y)
    D = key2.public.add(key2.public.scalar_mul(K2, x), masked)
    Y, rho_y = key1.encrypt(y)
    ag_public = aff_g.AffGPublic(key2.public, key1.public, K2, D, Y, Point.base_mul(x))
    bench_proof(
        "aff-g",
        lambda: aff_g.prove(ctx, ag_public, aff_g.AffGPrivate(x, y, rho_d, rho_y), aux, key1),
        lambda p: aff_g.verify(ctx, ag_public, p, rp2),
        lambda p: aff_g.verify(ctx, ag_public, p, aux),
    )
    # --- report -------------------------------------------------------------------------------
    print("\n| operation | runs | median | p90 | size |")
    print("|---|--:|--:|--:|--:|")
    for name, stats in results.items():
        size = f"{int(stats['bytes'])} B" if "bytes" in stats else ""
        row = f"| {name} | {int(stats['runs'])} | {fmt(stats['median'])} | {fmt(stats['p90'])}"
        print(f"{row} | {size} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": describe(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
