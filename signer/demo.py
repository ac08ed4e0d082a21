"""In-process demonstrations (`tessera demo`).

`run_wallet_demo`: three key-share parties run aux-info on fresh safe primes, a 2-of-3 DKG,
derive a deposit address (BIP32 m/0/5), presign with parties 1 and 3, and sign an Ethereum
transaction hash; the signature is checked by recovering the deposit address.
`run_demo` (`tessera demo --proofs`): party 1 proves each CGGMP21 statement to party 2.
Every step is timed.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from eth_keys.datatypes import PublicKey as EthPublicKey
from eth_keys.datatypes import Signature as EthSignature

from signer.curve import Point, Q
from signer.encoding import Wire
from signer.paillier import PaillierSecretKey
from signer.params import ELL_PRIME
from signer.primes import PrimePool, generate_safe_primes
from signer.protocol.flow import Timings, run_aux_info, run_keygen, run_presign, sign
from signer.protocol.hd import derive
from signer.protocol.sign import HashScheme, Signature
from signer.ring_pedersen import RingPedersenSecret
from signer.zk import aff_g, enc, fac, log_star, mod, prm, sch
from signer.zk.common import ProofContext

T = TypeVar("T")
P = TypeVar("P", bound=Wire)


@dataclass(frozen=True)
class Step:
    name: str
    seconds: float
    detail: str = ""


def _timed(steps: list[Step], name: str, fn: Callable[[], T], detail: str = "") -> T:
    start = time.perf_counter()
    result = fn()
    steps.append(Step(name, time.perf_counter() - start, detail))
    return result


def _proof_round(
    steps: list[Step], name: str, prove: Callable[[], P], verify: Callable[[P], None]
) -> None:
    proof = _timed(steps, f"Π{name} prove", prove)
    size = len(proof.to_bytes())
    _timed(steps, f"Π{name} verify", lambda: verify(proof), f"{size} bytes")


def run_demo(pool: Path | None = None) -> list[Step]:
    """Run the demonstration; raises on any failure (a failed verification is a bug)."""
    steps: list[Step] = []
    if pool is not None:
        primes = _timed(steps, "take 4 safe primes from pool", lambda: PrimePool(pool).take(4))
    else:
        primes = _timed(
            steps, "generate 4 safe primes (1536 bits)", lambda: generate_safe_primes(4)
        )
    key1 = PaillierSecretKey.from_primes(primes[0], primes[1])
    key2 = PaillierSecretKey.from_primes(primes[2], primes[3])
    rp1 = _timed(steps, "ring-Pedersen params", lambda: RingPedersenSecret.generate(key1))
    rp2 = RingPedersenSecret.generate(key2)
    aux2 = rp2.params  # the verifier's parameters: every range proof is made over these
    # party 2 verifies with its own secret (CRT); a third party would pass aux2 instead

    k = secrets.randbelow(Q)
    K, rho = _timed(steps, "Paillier encrypt (CRT)", lambda: key1.encrypt(k))
    _timed(steps, "Paillier encrypt (public key)", lambda: key1.public.encrypt(k))
    decrypted = _timed(steps, "Paillier decrypt (CRT)", lambda: key1.decrypt(K))
    if decrypted != k:
        raise RuntimeError("Paillier decryption mismatch")

    ctx = ProofContext(secrets.token_bytes(32), prover=1)
    _proof_round(steps, "mod", lambda: mod.prove(ctx, key1), lambda p: mod.verify(ctx, key1.n, p))
    _proof_round(
        steps, "prm", lambda: prm.prove(ctx, rp1), lambda p: prm.verify(ctx, rp1.params, p)
    )
    _proof_round(
        steps,
        "fac",
        lambda: fac.prove(ctx, key1, aux2),
        lambda p: fac.verify(ctx, key1.n, p, rp2),
    )
    X = Point.base_mul(k)
    _proof_round(steps, "sch", lambda: sch.prove(ctx, X, k), lambda p: sch.verify(ctx, X, p))
    enc_public = enc.EncPublic(key1.public, K)
    _proof_round(
        steps,
        "enc",
        lambda: enc.prove(ctx, enc_public, enc.EncPrivate(k, rho), aux2, key1),
        lambda p: enc.verify(ctx, enc_public, p, rp2),
    )
    gamma_point = Point.base_mul(secrets.randbelow(Q))
    ls_public = log_star.LogStarPublic(key1.public, K, gamma_point * k, gamma_point)
    _proof_round(
        steps,
        "log*",
        lambda: log_star.prove(ctx, ls_public, log_star.LogStarPrivate(k, rho), aux2, key1),
        lambda p: log_star.verify(ctx, ls_public, p, rp2),
    )
    # MtA response of party 1 to party 2's K2 = enc_2(k2): D = K2^x · enc_2(y), Y = enc_1(y).
    K2, _ = key2.encrypt(secrets.randbelow(Q))
    x = secrets.randbelow(Q)
    y = secrets.randbelow(1 << ELL_PRIME)
    masked, rho_d = key2.public.encrypt(y)
    D = key2.public.add(key2.public.scalar_mul(K2, x), masked)
    Y, rho_y = key1.encrypt(y)
    ag_public = aff_g.AffGPublic(key2.public, key1.public, K2, D, Y, Point.base_mul(x))
    _proof_round(
        steps,
        "aff-g",
        lambda: aff_g.prove(ctx, ag_public, aff_g.AffGPrivate(x, y, rho_d, rho_y), aux2, key1),
        lambda p: aff_g.verify(ctx, ag_public, p, rp2),
    )
    return steps


@dataclass(frozen=True)
class WalletDemo:
    steps: list[Step]
    address: str
    signature: Signature
    message: bytes


def run_wallet_demo(pool: Path | None = None) -> WalletDemo:
    """Aux-info, DKG, HD address, presign and sign among three in-process parties."""
    timings = Timings()
    if pool is not None:
        primes = timings.timed("take 6 safe primes from pool", lambda: PrimePool(pool).take(6))
    else:
        primes = timings.timed(
            "generate 6 safe primes (1536 bits)", lambda: generate_safe_primes(6)
        )
    keys = {
        i: PaillierSecretKey.from_primes(primes[2 * i - 2], primes[2 * i - 1]) for i in (1, 2, 3)
    }
    aux = timings.timed("aux-info, 3 parties (Πmod, Πprm, Πfac)", lambda: run_aux_info(keys))
    shares = timings.timed("keygen (DKG), 2-of-3", lambda: run_keygen(2, 3, b"demo-wallet"))
    share = shares[1]
    path = (0, 5)
    child = derive(share.public_key, share.chain_code, path)
    uncompressed = child.public_key.to_public_key().format(compressed=False)[1:]
    address = EthPublicKey(uncompressed).to_checksum_address()
    presignatures = timings.timed(
        "presign, signers {1, 3}, path m/0/5", lambda: run_presign(shares, aux, (1, 3), path)
    )
    message = b"demo: unsigned EIP-1559 transfer of 0.1 ETH " + secrets.token_bytes(8)
    signature = timings.timed(
        "sign (partials + combine + verify)",
        lambda: sign(presignatures, message, HashScheme.KECCAK256, share.public_data()),
    )
    recovered = EthSignature(
        vrs=(signature.recovery_id, signature.r, signature.s)
    ).recover_public_key_from_msg_hash(signature.digest)
    if recovered.to_checksum_address() != address:
        raise RuntimeError("signature does not recover to the deposit address")
    steps = [Step(name, seconds) for name, seconds in timings.steps]
    return WalletDemo(steps, address, signature, message)
