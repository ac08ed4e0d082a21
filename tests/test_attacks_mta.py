"""Named regression tests of attacks.md for the MtA / presigning proofs (Πenc, Πaff-g, Πlog*) and
Πsch: Alpha-Rays (A01), range and sampling bugs (A09), Fiat–Shamir binding (A13), points (A16),
integer domains and DoS (A17), and the verifier's use of its own ring-Pedersen parameters (A05).

Party 3 is the malicious prover throughout; every rejection must blame it (`ProofRejected.prover`).
Patched provers below are the honest algorithms with the range constraints removed or the nonces
chosen, each with a faithfulness test showing it produces valid proofs when nothing is changed.
"""

from __future__ import annotations

import ast
import inspect
import re
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest
from conftest import new_context, paillier_key, ring_pedersen
from wirekit import decode_error, json_error, proof_wire, tlv, wire, wire_items

import signer.encoding
import signer.zk
from signer.arith import random_signed, random_signed_times, random_unit
from signer.curve import Point, Q
from signer.encoding import MAX_ENCODED_BYTES, TAG_LIST, TAG_POINT, encode
from signer.errors import Check, EncodingError, InvalidPoint, ProofRejected
from signer.params import ELL, ELL_PRIME, EPSILON, FIELD_PRIME
from signer.ring_pedersen import RingPedersenParams
from signer.zk import aff_g, enc, log_star, sch
from signer.zk.common import ProofContext

MALICIOUS = 3
OTHER = 1
PROVER_KEY = paillier_key(0)  # party 3's own Paillier key
VERIFIER_KEY = paillier_key(1)  # verifier 1's Paillier key (N0 of Πaff-g)
OWN_AUX = ring_pedersen(0).params  # party 3's own ring-Pedersen parameters
AUX1 = ring_pedersen(1).params  # verifier 1
AUX2 = ring_pedersen(2).params  # verifier 2
B1 = 1 << (ELL + EPSILON)
B2 = 1 << (ELL_PRIME + EPSILON)

FIRST_EQUATION = {
    "enc": "enc(z1; z2) = A·K^e",
    "aff_g": "C^z1·enc0(z2; w) = A·D^e",
    "log_star": "enc(z1; z2) = A·C^e",
    "sch": "z·G = A + e·X",
}
MODULES: dict[str, ModuleType] = {"enc": enc, "aff_g": aff_g, "log_star": log_star, "sch": sch}
PROOF_CLASSES = {
    "enc": enc.EncProof,
    "aff_g": aff_g.AffGProof,
    "log_star": log_star.LogStarProof,
    "sch": sch.SchProof,
}
PER_VERIFIER = ["enc", "aff_g", "log_star"]
ALL = [*PER_VERIFIER, "sch"]
# unit fields mod N̂ in the verifier's check order
AUX_UNITS = {"enc": ["S", "C"], "aff_g": ["E", "S", "F", "T"], "log_star": ["S", "D"]}


@dataclass(frozen=True)
class Bundle:
    """One proof with its statement, as party 3 sends it to one verifier."""

    kind: str
    ctx: ProofContext
    public: Any
    proof: Any
    aux: RingPedersenParams | None

    def verify(self, **changes: Any) -> None:
        ctx = changes.get("ctx", self.ctx)
        public = changes.get("public", self.public)
        proof = changes.get("proof", self.proof)
        if self.kind == "sch":
            return sch.verify(ctx, public, proof)
        aux = changes.get("aux", self.aux)
        return MODULES[self.kind].verify(ctx, public, proof, aux)  # type: ignore[no-any-return]


def rejects(
    bundle: Bundle, check: Check, field: str | None = None, **changes: Any
) -> ProofRejected:
    ctx = changes.get("ctx", bundle.ctx)
    with pytest.raises(ProofRejected) as info:
        bundle.verify(**changes)
    err = info.value
    assert err.proof == MODULES[bundle.kind].NAME
    assert err.check == check, (err.check, err.field, err.detail)
    assert err.prover == ctx.prover
    if field is not None:
        assert err.field == field
    return err


# --- statements and (patched) provers -----------------------------------------------------------


def enc_statement(k: int, rho: int | None = None) -> tuple[enc.EncPublic, enc.EncPrivate]:
    rho = random_unit(PROVER_KEY.n) if rho is None else rho
    public = enc.EncPublic(PROVER_KEY.public, PROVER_KEY.encrypt_with(k, rho))
    return public, enc.EncPrivate(k, rho)


def forge_enc(
    ctx: ProofContext,
    public: enc.EncPublic,
    private: enc.EncPrivate,
    aux: RingPedersenParams,
    alpha: int | None = None,
) -> enc.EncProof:
    """Πenc prover without any range constraint on k; α may be chosen."""
    n0, nh = PROVER_KEY.n, aux.n
    alpha = random_signed(ELL + EPSILON) if alpha is None else alpha
    mu, gamma = random_signed_times(ELL, nh), random_signed_times(ELL + EPSILON, nh)
    r = random_unit(n0)
    S, A, C = aux.commit(private.k, mu), PROVER_KEY.encrypt_with(alpha, r), aux.commit(alpha, gamma)
    e = enc._challenge(ctx, public, aux, [S, A, C])
    z2 = r * pow(private.rho, e, n0) % n0
    return enc.EncProof(S, A, C, alpha + e * private.k, z2, gamma + e * mu)


def aff_g_statement(
    x: int, y: int, c_plain: int | None = None
) -> tuple[aff_g.AffGPublic, aff_g.AffGPrivate]:
    k0 = VERIFIER_KEY.public
    C, _ = k0.encrypt(random_signed(ELL) if c_plain is None else c_plain)
    rho = random_unit(k0.n)
    D = k0.add(k0.scalar_mul(C, x), k0.encrypt_with(y, rho))
    Y, rho_y = PROVER_KEY.encrypt(y)
    public = aff_g.AffGPublic(k0, PROVER_KEY.public, C, D, Y, Point.base_mul(x))
    return public, aff_g.AffGPrivate(x, y, rho, rho_y)


def forge_aff_g(
    ctx: ProofContext,
    public: aff_g.AffGPublic,
    private: aff_g.AffGPrivate,
    aux: RingPedersenParams,
    beta: int | None = None,
) -> aff_g.AffGProof:
    """Πaff-g prover without range constraints on x, y; β may be chosen."""
    k0, n0, n1, nh = public.verifier_key, public.verifier_key.n, PROVER_KEY.n, aux.n
    alpha = random_signed(ELL + EPSILON)
    beta = random_signed(ELL_PRIME + EPSILON) if beta is None else beta
    r, r_y = random_unit(n0), random_unit(n1)
    gamma, delta = (random_signed_times(ELL + EPSILON, nh) for _ in range(2))
    m, mu = (random_signed_times(ELL, nh) for _ in range(2))
    A = k0.scalar_mul(public.C, alpha) * k0.encrypt_with(beta, r) % k0.n2
    Bx, By = Point.base_mul(alpha), PROVER_KEY.encrypt_with(beta, r_y)
    E, S = aux.commit(alpha, gamma), aux.commit(private.x, m)
    F, T = aux.commit(beta, delta), aux.commit(private.y, mu)
    e = aff_g._challenge(ctx, public, aux, [A, Bx, By, E, S, F, T])
    return aff_g.AffGProof(
        A,
        Bx,
        By,
        E,
        S,
        F,
        T,
        alpha + e * private.x,
        beta + e * private.y,
        gamma + e * m,
        delta + e * mu,
        r * pow(private.rho, e, n0) % n0,
        r_y * pow(private.rho_y, e, n1) % n1,
    )


def log_star_statement(
    x: int, base: Point | None = None
) -> tuple[log_star.LogStarPublic, log_star.LogStarPrivate]:
    g = Point.base_mul(secrets.randbelow(Q - 1) + 1) if base is None else base
    C, rho = PROVER_KEY.encrypt(x)
    return log_star.LogStarPublic(PROVER_KEY.public, C, g * x, g), log_star.LogStarPrivate(x, rho)


def forge_log_star(
    ctx: ProofContext,
    public: log_star.LogStarPublic,
    private: log_star.LogStarPrivate,
    aux: RingPedersenParams,
) -> log_star.LogStarProof:
    """Πlog* prover without the range constraint on x."""
    n0, nh = PROVER_KEY.n, aux.n
    alpha = random_signed(ELL + EPSILON)
    mu, gamma = random_signed_times(ELL, nh), random_signed_times(ELL + EPSILON, nh)
    r = random_unit(n0)
    S, A = aux.commit(private.x, mu), PROVER_KEY.encrypt_with(alpha, r)
    Y, D = public.base * alpha, aux.commit(alpha, gamma)
    e = log_star._challenge(ctx, public, aux, S, A, Y, D)
    z2 = r * pow(private.rho, e, n0) % n0
    return log_star.LogStarProof(S, A, Y, D, alpha + e * private.x, z2, gamma + e * mu)


def build(kind: str, ctx: ProofContext, aux: RingPedersenParams = AUX1) -> Bundle:
    """An honest proof of `kind` by ctx.prover for the verifier whose parameters are `aux`."""
    if kind == "enc":
        public, private = enc_statement(random_signed(ELL))
        return Bundle(kind, ctx, public, enc.prove(ctx, public, private, aux, PROVER_KEY), aux)
    if kind == "aff_g":
        public, private = aff_g_statement(random_signed(ELL), random_signed(ELL_PRIME))
        return Bundle(kind, ctx, public, aff_g.prove(ctx, public, private, aux, PROVER_KEY), aux)
    if kind == "log_star":
        public, private = log_star_statement(random_signed(ELL))
        proof = log_star.prove(ctx, public, private, aux, PROVER_KEY)
        return Bundle(kind, ctx, public, proof, aux)
    x = secrets.randbelow(Q - 1) + 1
    X = Point.base_mul(x)
    return Bundle(kind, ctx, X, sch.prove(ctx, X, x), None)


@pytest.fixture(scope="module")
def bundles() -> dict[str, Bundle]:
    ctx = new_context(MALICIOUS)
    return {kind: build(kind, ctx) for kind in ALL}


def test_honest_bundles_verify(bundles: dict[str, Bundle]) -> None:
    for bundle in bundles.values():
        assert bundle.verify() is None


def test_patched_provers_are_faithful() -> None:
    """The patched provers make valid proofs for in-range witnesses (so their rejections below are
    caused by the out-of-range values alone)."""
    ctx = new_context(MALICIOUS)
    public, private = enc_statement(random_signed(ELL))
    assert enc.verify(ctx, public, forge_enc(ctx, public, private, AUX1), AUX1) is None
    public_a, private_a = aff_g_statement(random_signed(ELL), random_signed(ELL_PRIME))
    proof_a = forge_aff_g(ctx, public_a, private_a, AUX1)
    assert aff_g.verify(ctx, public_a, proof_a, AUX1) is None
    public_l, private_l = log_star_statement(random_signed(ELL))
    proof_l = forge_log_star(ctx, public_l, private_l, AUX1)
    assert log_star.verify(ctx, public_l, proof_l, AUX1) is None


# --- A01 Alpha-Rays -------------------------------------------------------------------------------

ALPHA_RAYS_K = PROVER_KEY.n // (1 << 16) + 12345  # the large_k_attack value N/2^16 + k


def test_T01a_large_k_without_proof(bundles: dict[str, Bundle]) -> None:
    """K = enc(N/2^16 + k) accompanied by the (valid) proof of a different, small k."""
    small = bundles["enc"]
    big_public, _ = enc_statement(ALPHA_RAYS_K)
    rejects(small, Check.EQUATION, FIRST_EQUATION["enc"], public=big_public)


def test_T01a_large_k_proof_for_small_witness() -> None:
    """The proof is computed over the big K's transcript but with a small witness k."""
    ctx = new_context(MALICIOUS)
    big_public, _ = enc_statement(ALPHA_RAYS_K)
    _, small_private = enc_statement(7)
    proof = enc.prove(ctx, big_public, small_private, AUX1, PROVER_KEY)
    rejects(Bundle("enc", ctx, big_public, proof, AUX1), Check.EQUATION, FIRST_EQUATION["enc"])


def test_T01a_large_x_in_mta_response_without_proof(bundles: dict[str, Bundle]) -> None:
    """Πaff-g analogue: D = C^x_big·enc(y) with the proof made for the honest D."""
    honest = bundles["aff_g"]
    k0 = VERIFIER_KEY.public
    x_big = VERIFIER_KEY.n // (1 << 16)
    D = k0.add(k0.scalar_mul(honest.public.C, x_big), k0.encrypt(5)[0])
    rejects(honest, Check.EQUATION, FIRST_EQUATION["aff_g"], public=replace(honest.public, D=D))


@pytest.mark.parametrize("proof_bytes", [b"", b"\x05\x00\x00\x00\x04\x00\x00\x00\x00"])
def test_T01a_absent_proof(proof_bytes: bytes) -> None:
    """An empty proof field / an empty list never decodes to a proof."""
    for cls in (enc.EncProof, aff_g.AffGProof, log_star.LogStarProof):
        decode_error(cls, proof_bytes, Check.DECODE)
        json_error(cls, {}, Check.FIELD)


@pytest.mark.parametrize("k", [1 << (ELL + EPSILON + 1), -(1 << (ELL + EPSILON + 1)), ALPHA_RAYS_K])
def test_T01b_large_k_forged_proof(k: int) -> None:
    """A patched prover that skips the range: z1 = α + e·k is out of range."""
    ctx = new_context(MALICIOUS)
    public, private = enc_statement(k)
    proof = forge_enc(ctx, public, private, AUX1)
    bundle = Bundle("enc", ctx, public, proof, AUX1)
    rejects(bundle, Check.RANGE, "z1")
    # squeezing z1 into the range breaks the Paillier equation
    for squeezed in (proof.z1 % B1, proof.z1 % PROVER_KEY.n % B1, -(abs(proof.z1) % B1)):
        rejects(bundle, Check.EQUATION, FIRST_EQUATION["enc"], proof=replace(proof, z1=squeezed))
    # the centred residue mod N0 is still far out of range
    centred = proof.z1 % PROVER_KEY.n
    centred -= PROVER_KEY.n if centred > PROVER_KEY.n // 2 else 0
    rejects(bundle, Check.RANGE, "z1", proof=replace(proof, z1=centred))


def test_T01b_large_x_forged_log_star() -> None:
    ctx = new_context(MALICIOUS)
    public, private = log_star_statement(1 << (ELL + EPSILON + 1))
    proof = forge_log_star(ctx, public, private, AUX1)
    rejects(Bundle("log_star", ctx, public, proof, AUX1), Check.RANGE, "z1")


@pytest.mark.parametrize(
    ("x", "y", "field"),
    [
        (1 << (ELL + EPSILON + 1), 5, "z1"),
        (VERIFIER_KEY.n // (1 << 16), 5, "z1"),
        (5, 1 << (ELL_PRIME + EPSILON + 1), "z2"),
        (5, -(1 << (ELL_PRIME + EPSILON + 1)), "z2"),
    ],
)
def test_T01b_large_witness_forged_aff_g(x: int, y: int, field: str) -> None:
    ctx = new_context(MALICIOUS)
    public, private = aff_g_statement(x, y)
    proof = forge_aff_g(ctx, public, private, AUX1)
    rejects(Bundle("aff_g", ctx, public, proof, AUX1), Check.RANGE, field)


@pytest.mark.parametrize("sign", [1, -1])
def test_T01c_boundary(sign: int) -> None:
    """Valid proofs whose response sits exactly on the bound are accepted; one more is RANGE.

    Πenc with k = 0 has z1 = α, so α = ±2^(ℓ+ε) gives z1 = ±2^(ℓ+ε) with every equation holding;
    Πaff-g with y = 0 has z2 = β, likewise for ±2^(ℓ'+ε).  Both are sent through the wire.
    """
    ctx = new_context(MALICIOUS)
    public, private = enc_statement(0)
    for alpha, ok in ((sign * B1, True), (sign * (B1 + 1), False)):
        proof = enc.EncProof.from_bytes(forge_enc(ctx, public, private, AUX1, alpha).to_bytes())
        assert proof.z1 == alpha
        bundle = Bundle("enc", ctx, public, proof, AUX1)
        if ok:
            assert bundle.verify() is None
        else:
            rejects(bundle, Check.RANGE, "z1")
    public_a, private_a = aff_g_statement(secrets.randbelow(Q - 1) + 1, 0)
    for beta, ok in ((sign * B2, True), (sign * (B2 + 1), False)):
        raw = forge_aff_g(ctx, public_a, private_a, AUX1, beta).to_bytes()
        proof_a = aff_g.AffGProof.from_bytes(raw)
        assert proof_a.z2 == beta
        bundle = Bundle("aff_g", ctx, public_a, proof_a, AUX1)
        if ok:
            assert bundle.verify() is None
        else:
            rejects(bundle, Check.RANGE, "z2")


@pytest.mark.parametrize("kind", ["aff_g", "log_star"])
@pytest.mark.parametrize("sign", [1, -1])
def test_T01c_boundary_z1_equation_not_range(
    bundles: dict[str, Bundle], kind: str, sign: int
) -> None:
    """Where no valid boundary proof can be built (z1 is tied to x ≠ 0 mod q by the curve
    equation), z1 = ±2^(ℓ+ε) reaches the equation and ±(2^(ℓ+ε)+1) does not."""
    bundle = bundles[kind]
    rejects(bundle, Check.EQUATION, FIRST_EQUATION[kind], proof=replace(bundle.proof, z1=sign * B1))
    rejects(bundle, Check.RANGE, "z1", proof=replace(bundle.proof, z1=sign * (B1 + 1)))


# --- T01e: no optional verification path ----------------------------------------------------------

ZK_DIR = Path(signer.zk.__file__).parent
FLAG = re.compile(
    r"skip|insecure|unsafe|fast|lenient|trust|debug|legacy|compat|optional|bypass|disable|"
    r"unchecked|no_?check|no_?verify|^check_|^verify_|^allow|^strict",
    re.IGNORECASE,
)


def _verify_functions() -> dict[str, ast.FunctionDef]:
    found = {}
    for path in sorted(ZK_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == "verify":
                found[path.stem] = node
    return found


def _is_fail_call(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Raise):
        return True
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Call)
        and isinstance(stmt.value.func, ast.Attribute)
        and stmt.value.func.attr == "fail"
    )


def test_T01e_no_optional_proof_paths() -> None:
    verifies = _verify_functions()
    assert {"enc", "aff_g", "log_star", "sch", "mod", "prm", "fac"} <= set(verifies)
    for name, fn in verifies.items():
        args = fn.args
        where = f"signer/zk/{name}.py verify()"
        # no optional inputs at all: every parameter is required and none is a flag
        assert not (args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs), where
        assert not args.defaults and not args.kw_defaults, where
        for arg in args.args:
            assert not FLAG.search(arg.arg), (where, arg.arg)
        assert isinstance(fn.returns, ast.Constant) and fn.returns.value is None, where
        body = [
            s
            for s in fn.body
            if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
        ]
        first = body[0]
        assert isinstance(first, ast.Assign) and isinstance(first.value, ast.Call), where
        assert ast.unparse(first.value) == "Checker(NAME, ctx.prover)", where
        last = body[-1]
        assert isinstance(last, ast.Expr | ast.For), where
        for node in ast.walk(fn):
            # no early exit, no swallowed rejection, no generator tricks
            forbidden = (ast.Return, ast.Try, ast.TryStar, ast.Break, ast.Continue, ast.While)
            assert not isinstance(node, forbidden), (where, ast.unparse(node))
            assert not isinstance(node, ast.Yield | ast.YieldFrom | ast.Global | ast.Nonlocal)
            if isinstance(node, ast.If):
                # a branch only ever exists to reject
                assert not node.orelse, (where, ast.unparse(node))
                assert all(_is_fail_call(s) for s in node.body), (where, ast.unparse(node))
            if isinstance(node, ast.Name):
                assert not FLAG.search(node.id), (where, node.id)
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("environ", "getenv"), where
    for path in ZK_DIR.glob("*.py"):
        source = path.read_text()
        assert "environ" not in source and "getenv" not in source, path
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        assert not FLAG.search(target.id), (path, target.id)


def test_T01e_checker_never_returns_a_verdict() -> None:
    """The Checker's methods raise or fall through; none returns a value a caller could ignore."""
    tree = ast.parse((ZK_DIR / "common.py").read_text())
    checker = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Checker")
    methods = [n for n in checker.body if isinstance(n, ast.FunctionDef)]
    assert {"fail", "unit", "ciphertext", "signed_range", "point", "equation"} <= {
        m.name for m in methods
    }
    for method in methods:
        for node in ast.walk(method):
            assert not isinstance(node, ast.Return), (method.name, ast.unparse(node))
            if isinstance(node, ast.ExceptHandler):
                assert all(_is_fail_call(s) for s in node.body), method.name


def test_T01e_verify_returns_none_and_raises(bundles: dict[str, Bundle]) -> None:
    for kind, bundle in bundles.items():
        assert bundle.verify() is None
        proof = bundle.proof
        bad = (
            replace(proof, z=(proof.z + 1) % Q)
            if kind == "sch"
            else replace(proof, z1=proof.z1 + 1)
        )
        rejects(bundle, Check.EQUATION, FIRST_EQUATION[kind], proof=bad)


# --- A05 / A07: the verifier's own ring-Pedersen parameters ------------------------------------


def _expected_aux_mismatch(bundle: Bundle, aux: RingPedersenParams) -> tuple[Check, str]:
    """Commitments made mod another N̂ fail the unit check when they are ≥ this N̂, otherwise the
    (re-derived) challenge no longer matches and the first equation fails."""
    for field in AUX_UNITS[bundle.kind]:
        if getattr(bundle.proof, field) >= aux.n:
            return Check.RANGE, field
    return Check.EQUATION, FIRST_EQUATION[bundle.kind]


@pytest.mark.parametrize("kind", PER_VERIFIER)
def test_T02c_proof_under_provers_own_aux_rejected(kind: str) -> None:
    """Party 3 proves over its own (N̂, s, t), whose trapdoor it knows; the verifier uses its own."""
    bundle = build(kind, new_context(MALICIOUS), OWN_AUX)
    assert bundle.verify(aux=OWN_AUX) is None  # valid for a verifier that trusted the message
    check, field = _expected_aux_mismatch(bundle, AUX1)
    rejects(bundle, check, field, aux=AUX1)


@pytest.mark.parametrize("kind", PER_VERIFIER)
def test_T05c_aux_from_local_state(kind: str) -> None:
    cls = PROOF_CLASSES[kind]
    module = MODULES[kind]
    # the proof carries no ring-Pedersen parameters the verifier could be tempted to use
    aux_like = {"n", "s", "t", "aux", "N_hat", "nhat", "n_hat", "params", "Nhat", "h1", "h2"}
    assert not aux_like & set(cls.SCHEMA)
    public_cls = {
        "enc": enc.EncPublic,
        "aff_g": aff_g.AffGPublic,
        "log_star": log_star.LogStarPublic,
    }
    statement_fields = set(public_cls[kind].__dataclass_fields__)
    assert not aux_like & statement_fields
    assert not any(
        "RingPedersen" in str(f.type) for f in public_cls[kind].__dataclass_fields__.values()
    )
    # the verifier's parameters are a required argument (its key store), never read from the proof
    parameters = inspect.signature(module.verify).parameters
    assert list(parameters) == ["ctx", "public", "proof", "aux"]
    assert parameters["aux"].default is inspect.Parameter.empty
    assert parameters["aux"].annotation == "VerifierAux"  # own secret or own public params
    # smuggling parameters into the message is a decoding error
    bundle = build(kind, new_context(MALICIOUS), OWN_AUX)
    doc = {**bundle.proof.to_json(), "aux": [hex(OWN_AUX.n), hex(OWN_AUX.s), hex(OWN_AUX.t)]}
    json_error(cls, doc, Check.FIELD)
    fields = [*wire_items(bundle.proof), ("aux", encode([OWN_AUX.n, OWN_AUX.s, OWN_AUX.t]))]
    decode_error(cls, wire(cls.WIRE_NAME, fields), Check.FIELD)
    # and the proof over party 3's own parameters does not verify under the local ones
    check, field = _expected_aux_mismatch(bundle, AUX1)
    rejects(bundle, check, field, aux=AUX1)


# --- A09 ranges and sampling -------------------------------------------------------------------

# (proof, field, bound) straight from the paper's parameters: ℓ = 256, ε = 512, ℓ' = 1280
RANGE_TABLE = [
    ("enc", "z1", 1 << 768),
    ("enc", "z3", AUX1.n << 769),
    ("log_star", "z1", 1 << 768),
    ("log_star", "z3", AUX1.n << 769),
    ("aff_g", "z1", 1 << 768),
    ("aff_g", "z2", 1 << 1792),
    ("aff_g", "z3", AUX1.n << 769),
    ("aff_g", "z4", AUX1.n << 769),
]


@pytest.mark.parametrize(("kind", "field", "bound"), RANGE_TABLE)
def test_T09a_range_table(bundles: dict[str, Bundle], kind: str, field: str, bound: int) -> None:
    bundle = bundles[kind]
    cls = PROOF_CLASSES[kind]
    for sign in (1, -1):
        inside = cls.from_bytes(replace(bundle.proof, **{field: sign * bound}).to_bytes())
        assert getattr(inside, field) == sign * bound  # the wire carries the extreme value
        err = rejects(bundle, Check.EQUATION, proof=inside)
        assert err.field != field
        outside = cls.from_bytes(replace(bundle.proof, **{field: sign * (bound + 1)}).to_bytes())
        rejects(bundle, Check.RANGE, field, proof=outside)


def test_T09a_range_table_sch(bundles: dict[str, Bundle]) -> None:
    bundle = bundles["sch"]
    for z, check in (
        (Q - 1, Check.EQUATION),
        (0, Check.EQUATION),
        (Q, Check.RANGE),
        (-1, Check.RANGE),
    ):
        if z == bundle.proof.z:  # pragma: no cover - probability 2/q
            continue
        rejects(bundle, check, proof=replace(bundle.proof, z=z))


def test_T09b_sampling_histogram() -> None:
    """±2^bits is inclusive and fully used; nothing outside it ever comes out."""
    small = [random_signed(3) for _ in range(6000)]
    assert set(small) == set(range(-8, 9))
    scaled = [random_signed_times(2, 3) for _ in range(6000)]
    assert set(scaled) == set(range(-12, 13))
    for sampler, bound in (
        (lambda: random_signed(ELL + EPSILON), B1),
        (lambda: random_signed(ELL_PRIME + EPSILON), B2),
        (lambda: random_signed_times(ELL, AUX1.n), AUX1.n << ELL),
        (lambda: random_signed_times(ELL + EPSILON, AUX1.n), AUX1.n << (ELL + EPSILON)),
    ):
        values = [sampler() for _ in range(2500)]
        assert max(abs(v) for v in values) <= bound
        # P(no value in the top 1%) = 0.99^2500 < 2^-36
        assert any(abs(v) > bound - bound // 100 for v in values)
        assert any(v < 0 for v in values) and any(v > 0 for v in values)


def test_T09b_prover_sampling_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """The honest provers draw their nonces from exactly CGGMP21's ranges (catches ℓ/ℓ' swaps in
    sampling, e.g. boltlabs tss-ecdsa#123)."""
    calls: list[tuple[str, int, int]] = []

    def signed(bits: int) -> int:
        calls.append(("signed", bits, 1))
        return random_signed(bits)

    def times(bits: int, factor: int) -> int:
        calls.append(("times", bits, factor))
        return random_signed_times(bits, factor)

    for module in (enc, aff_g, log_star):
        monkeypatch.setattr(module, "random_signed", signed)
        monkeypatch.setattr(module, "random_signed_times", times)
    nh = AUX1.n
    ctx = new_context(MALICIOUS)
    expected = {
        "enc": [("signed", 768, 1), ("times", 256, nh), ("times", 768, nh)],
        "log_star": [("signed", 768, 1), ("times", 256, nh), ("times", 768, nh)],
        "aff_g": [
            ("signed", 768, 1),
            ("signed", 1792, 1),
            ("times", 256, nh),
            ("times", 256, nh),
            ("times", 768, nh),
            ("times", 768, nh),
        ],
    }
    for kind in PER_VERIFIER:
        calls.clear()
        bundle = build(kind, ctx)  # statements are sampled with the unpatched functions
        assert sorted(calls) == sorted(expected[kind]), kind
        assert bundle.verify() is None


def test_T09c_negative_values() -> None:
    """Negative responses within range verify; flipping the encoded sign of a positive one fails."""
    ctx = new_context(MALICIOUS)
    public, private = enc_statement(0)
    negative = forge_enc(ctx, public, private, AUX1, alpha=-(B1 - 12345))
    assert negative.z1 < 0
    received = enc.EncProof.from_bytes(negative.to_bytes())
    assert received.z1 == negative.z1
    assert enc.verify(ctx, public, received, AUX1) is None
    positive = forge_enc(ctx, public, private, AUX1, alpha=B1 - 12345)
    data = positive.to_bytes()
    frame = encode(positive.z1)
    assert data.count(frame) == 1
    assert frame[5] == 0  # sign byte of a positive integer
    flipped_frame = frame[:5] + b"\x01" + frame[6:]
    flipped = enc.EncProof.from_bytes(data.replace(frame, flipped_frame))
    assert flipped.z1 == -positive.z1
    rejects(Bundle("enc", ctx, public, flipped, AUX1), Check.EQUATION, FIRST_EQUATION["enc"])
    # Πaff-g: negative z2 (y = 0, β < 0) verifies
    public_a, private_a = aff_g_statement(secrets.randbelow(Q - 1) + 1, 0)
    proof_a = forge_aff_g(ctx, public_a, private_a, AUX1, beta=-(B2 - 1))
    assert proof_a.z2 == -(B2 - 1)
    assert aff_g.verify(ctx, public_a, aff_g.AffGProof.from_bytes(proof_a.to_bytes()), AUX1) is None


@pytest.mark.parametrize(("kind", "field"), [("enc", "z3"), ("log_star", "z3"), ("aff_g", "z4")])
def test_T09c_sign_flip_rejected(bundles: dict[str, Bundle], kind: str, field: str) -> None:
    bundle = bundles[kind]
    flipped = replace(bundle.proof, **{field: -getattr(bundle.proof, field)})
    rejects(bundle, Check.EQUATION, proof=flipped)


# --- A13 Fiat–Shamir binding --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL)
def test_T13a_cross_session_replay(bundles: dict[str, Bundle], kind: str) -> None:
    bundle = bundles[kind]
    assert bundle.verify() is None
    other_session = ProofContext(secrets.token_bytes(32), MALICIOUS)
    rejects(bundle, Check.EQUATION, FIRST_EQUATION[kind], ctx=other_session)
    # a session id differing in one bit is another session
    sid = bytearray(bundle.ctx.session_id)
    sid[-1] ^= 1
    rejects(bundle, Check.EQUATION, FIRST_EQUATION[kind], ctx=ProofContext(bytes(sid), MALICIOUS))


@pytest.mark.parametrize("kind", ALL)
def test_T13b_cross_party_replay(kind: str) -> None:
    """Party 3 submits party 1's proof (same session, same statement) as its own."""
    honest = build(kind, new_context(OTHER))
    assert honest.verify() is None
    as_party_3 = ProofContext(honest.ctx.session_id, MALICIOUS)
    err = rejects(honest, Check.EQUATION, FIRST_EQUATION[kind], ctx=as_party_3)
    assert err.prover == MALICIOUS


@pytest.mark.parametrize("kind", PER_VERIFIER)
def test_T13c_cross_verifier(bundles: dict[str, Bundle], kind: str) -> None:
    """The proof party 3 made for verifier 1's parameters, sent to verifier 2."""
    bundle = bundles[kind]
    check, field = _expected_aux_mismatch(bundle, AUX2)
    rejects(bundle, check, field, aux=AUX2)


Mutation = Callable[[Bundle, int, int], tuple[Any, Any]]  # (bundle, e, u) → (public, proof)


def _n0(b: Bundle) -> int:
    return int(b.public.verifier_key.n if b.kind == "aff_g" else PROVER_KEY.n)


def _renc(c: int, u: int, n: int) -> int:
    """c·u^N mod N²: the same plaintext under another randomiser."""
    return c * pow(u, n, n * n) % (n * n)


def _t(b: Bundle) -> int:
    assert b.aux is not None
    return b.aux.t


N_PROVER = PROVER_KEY.n  # N0 of Πenc/Πlog*, N1 of Πaff-g
G = Point.generator()
# (kind, element) → (mutation, compensated, equation the element itself appears in)
FIRST_MESSAGE: dict[tuple[str, str], tuple[Mutation, bool, str]] = {
    ("enc", "S"): (
        lambda b, e, u: (
            b.public,
            replace(b.proof, S=b.proof.S * _t(b) % b.aux.n, z3=b.proof.z3 + e),
        ),
        True,
        "s^z1·t^z3 = C·S^e",
    ),
    ("enc", "A"): (
        lambda b, e, u: (
            b.public,
            replace(b.proof, A=_renc(b.proof.A, u, N_PROVER), z2=b.proof.z2 * u % N_PROVER),
        ),
        True,
        FIRST_EQUATION["enc"],
    ),
    ("enc", "C"): (
        lambda b, e, u: (
            b.public,
            replace(b.proof, C=b.proof.C * _t(b) % b.aux.n, z3=b.proof.z3 + 1),
        ),
        True,
        "s^z1·t^z3 = C·S^e",
    ),
    ("aff_g", "A"): (
        lambda b, e, u: (
            b.public,
            replace(b.proof, A=_renc(b.proof.A, u, _n0(b)), w=b.proof.w * u % _n0(b)),
        ),
        True,
        FIRST_EQUATION["aff_g"],
    ),
    ("aff_g", "Bx"): (
        lambda b, e, u: (b.public, replace(b.proof, Bx=b.proof.Bx + G)),
        False,
        "z1·G = Bx + e·X",
    ),
    ("aff_g", "By"): (
        lambda b, e, u: (
            b.public,
            replace(b.proof, By=_renc(b.proof.By, u, N_PROVER), wy=b.proof.wy * u % N_PROVER),
        ),
        True,
        "enc1(z2; wy) = By·Y^e",
    ),
    ("aff_g", "E"): (
        lambda b, e, u: (
            b.public,
            replace(b.proof, E=b.proof.E * _t(b) % b.aux.n, z3=b.proof.z3 + 1),
        ),
        True,
        "s^z1·t^z3 = E·S^e",
    ),
    ("aff_g", "S"): (
        lambda b, e, u: (
            b.public,
            replace(b.proof, S=b.proof.S * _t(b) % b.aux.n, z3=b.proof.z3 + e),
        ),
        True,
        "s^z1·t^z3 = E·S^e",
    ),
    ("aff_g", "F"): (
        lambda b, e, u: (
            b.public,
            replace(b.proof, F=b.proof.F * _t(b) % b.aux.n, z4=b.proof.z4 + 1),
        ),
        True,
        "s^z2·t^z4 = F·T^e",
    ),
    ("aff_g", "T"): (
        lambda b, e, u: (
            b.public,
            replace(b.proof, T=b.proof.T * _t(b) % b.aux.n, z4=b.proof.z4 + e),
        ),
        True,
        "s^z2·t^z4 = F·T^e",
    ),
    ("log_star", "S"): (
        lambda b, e, u: (
            b.public,
            replace(b.proof, S=b.proof.S * _t(b) % b.aux.n, z3=b.proof.z3 + e),
        ),
        True,
        "s^z1·t^z3 = D·S^e",
    ),
    ("log_star", "A"): (
        lambda b, e, u: (
            b.public,
            replace(b.proof, A=_renc(b.proof.A, u, N_PROVER), z2=b.proof.z2 * u % N_PROVER),
        ),
        True,
        FIRST_EQUATION["log_star"],
    ),
    ("log_star", "Y"): (
        lambda b, e, u: (b.public, replace(b.proof, Y=b.proof.Y + b.public.base)),
        False,
        "z1·g = Y + e·X",
    ),
    ("log_star", "D"): (
        lambda b, e, u: (
            b.public,
            replace(b.proof, D=b.proof.D * _t(b) % b.aux.n, z3=b.proof.z3 + 1),
        ),
        True,
        "s^z1·t^z3 = D·S^e",
    ),
    ("sch", "A"): (
        lambda b, e, u: (b.public, replace(b.proof, A=b.proof.A + G, z=(b.proof.z + 1) % Q)),
        True,
        FIRST_EQUATION["sch"],
    ),
}
STATEMENT: dict[tuple[str, str], tuple[Mutation, bool, str]] = {
    ("enc", "K"): (
        lambda b, e, u: (
            replace(b.public, ciphertext=_renc(b.public.ciphertext, u, N_PROVER)),
            replace(b.proof, z2=b.proof.z2 * pow(u, e, N_PROVER) % N_PROVER),
        ),
        True,
        FIRST_EQUATION["enc"],
    ),
    ("aff_g", "C"): (
        lambda b, e, u: (
            replace(b.public, C=_renc(b.public.C, u, _n0(b))),
            replace(b.proof, w=b.proof.w * pow(u, -b.proof.z1, _n0(b)) % _n0(b)),
        ),
        True,
        FIRST_EQUATION["aff_g"],
    ),
    ("aff_g", "D"): (
        lambda b, e, u: (
            replace(b.public, D=_renc(b.public.D, u, _n0(b))),
            replace(b.proof, w=b.proof.w * pow(u, e, _n0(b)) % _n0(b)),
        ),
        True,
        FIRST_EQUATION["aff_g"],
    ),
    ("aff_g", "Y"): (
        lambda b, e, u: (
            replace(b.public, Y=_renc(b.public.Y, u, N_PROVER)),
            replace(b.proof, wy=b.proof.wy * pow(u, e, N_PROVER) % N_PROVER),
        ),
        True,
        "enc1(z2; wy) = By·Y^e",
    ),
    ("aff_g", "X"): (
        lambda b, e, u: (replace(b.public, X=b.public.X + G), b.proof),
        False,
        "z1·G = Bx + e·X",
    ),
    ("log_star", "C"): (
        lambda b, e, u: (
            replace(b.public, ciphertext=_renc(b.public.ciphertext, u, N_PROVER)),
            replace(b.proof, z2=b.proof.z2 * pow(u, e, N_PROVER) % N_PROVER),
        ),
        True,
        FIRST_EQUATION["log_star"],
    ),
    ("log_star", "X"): (
        lambda b, e, u: (replace(b.public, point=b.public.point + b.public.base), b.proof),
        False,
        "z1·g = Y + e·X",
    ),
    ("log_star", "g"): (
        lambda b, e, u: (replace(b.public, base=b.public.base + G), b.proof),
        False,
        "z1·g = Y + e·X",
    ),
    ("sch", "X"): (
        lambda b, e, u: (b.public + G, replace(b.proof, z=(b.proof.z + e) % Q)),
        True,
        FIRST_EQUATION["sch"],
    ),
}


def _challenge_of(b: Bundle) -> int:
    p = b.proof
    if b.kind == "enc":
        return enc._challenge(b.ctx, b.public, b.aux, [p.S, p.A, p.C])  # type: ignore[arg-type]
    if b.kind == "aff_g":
        first = [p.A, p.Bx, p.By, p.E, p.S, p.F, p.T]
        return aff_g._challenge(b.ctx, b.public, b.aux, first)  # type: ignore[arg-type]
    if b.kind == "log_star":
        return log_star._challenge(b.ctx, b.public, b.aux, p.S, p.A, p.Y, p.D)  # type: ignore[arg-type]
    return sch._challenge(b.ctx, b.public, p.A)


def _check_binding(
    bundle: Bundle,
    mutation: Mutation,
    compensated: bool,
    own_equation: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    e = _challenge_of(bundle)
    u = random_unit(N_PROVER * _n0(bundle))
    public, proof = mutation(bundle, e, u)
    # the real verifier re-derives the challenge: the very first equation fails
    rejects(bundle, Check.EQUATION, FIRST_EQUATION[bundle.kind], public=public, proof=proof)
    # control: had the challenge ignored the element, the mutated proof would have passed (or,
    # where it cannot be compensated, failed only at the element's own, later equation)
    monkeypatch.setattr(MODULES[bundle.kind], "_challenge", lambda *args, **kwargs: e)
    if compensated:
        assert bundle.verify(public=public, proof=proof) is None
    else:
        assert own_equation != FIRST_EQUATION[bundle.kind]
        rejects(bundle, Check.EQUATION, own_equation, public=public, proof=proof)


@pytest.mark.parametrize(("kind", "element"), list(FIRST_MESSAGE))
def test_T13f_every_commitment_hashed(
    bundles: dict[str, Bundle], kind: str, element: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _check_binding(bundles[kind], *FIRST_MESSAGE[kind, element], monkeypatch)


@pytest.mark.parametrize(("kind", "element"), list(STATEMENT))
def test_T13e_every_statement_element_hashed(
    bundles: dict[str, Bundle], kind: str, element: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _check_binding(bundles[kind], *STATEMENT[kind, element], monkeypatch)


def test_T13f_first_message_table_is_complete() -> None:
    """Every first-message element of every proof has a binding test above."""
    responses = {"z1", "z2", "z3", "z4", "w", "wy", "z"}
    for kind, cls in PROOF_CLASSES.items():
        first = {f for f in cls.SCHEMA if f not in responses}
        assert first == {el for (k, el) in FIRST_MESSAGE if k == kind}, kind


# --- A16 point decoding ------------------------------------------------------------------------

POINT_FIELD = {"sch": "A", "log_star": "Y", "aff_g": "Bx"}


def _on_curve(x: int) -> bool:
    return pow((x**3 + 7) % FIELD_PRIME, (FIELD_PRIME - 1) // 2, FIELD_PRIME) == 1


SMALL_ON_CURVE_X = next(x for x in range(1, 100) if _on_curve(x))
OFF_CURVE_X = next(x for x in range(1, 100) if not _on_curve(x))
BAD_POINTS = {
    "prefix_04": b"\x04" + SMALL_ON_CURVE_X.to_bytes(32, "big"),
    "prefix_05": b"\x05" + SMALL_ON_CURVE_X.to_bytes(32, "big"),
    "hybrid_06": b"\x06" + SMALL_ON_CURVE_X.to_bytes(32, "big"),
    "hybrid_07": b"\x07" + SMALL_ON_CURVE_X.to_bytes(32, "big"),
    "prefix_00": b"\x00" + SMALL_ON_CURVE_X.to_bytes(32, "big"),
    "all_zero_33": b"\x00" * 33,
    "single_zero_byte": b"\x00",
    "x_equals_p": b"\x02" + FIELD_PRIME.to_bytes(32, "big"),
    "x_plus_p": b"\x02" + (SMALL_ON_CURVE_X + FIELD_PRIME).to_bytes(32, "big"),
    "x_all_ff": b"\x03" + b"\xff" * 32,
    "off_curve": b"\x02" + OFF_CURVE_X.to_bytes(32, "big"),
    "off_curve_odd": b"\x03" + OFF_CURVE_X.to_bytes(32, "big"),
    "32_bytes": b"\x02" + SMALL_ON_CURVE_X.to_bytes(31, "big"),
    "34_bytes": b"\x02" + SMALL_ON_CURVE_X.to_bytes(33, "big"),
    "uncompressed_65": G.to_public_key().format(compressed=False),
}


def test_point_wire_builder_control(bundles: dict[str, Bundle]) -> None:
    """The builder reproduces the real encoding, and a valid replacement point decodes."""
    valid = b"\x02" + SMALL_ON_CURVE_X.to_bytes(32, "big")
    for kind, field in POINT_FIELD.items():
        proof = bundles[kind].proof
        current = getattr(proof, field).to_bytes()
        assert proof_wire(proof, **{field: tlv(TAG_POINT, current)}) == proof.to_bytes()
        decoded = type(proof).from_bytes(proof_wire(proof, **{field: tlv(TAG_POINT, valid)}))
        assert getattr(decoded, field) == Point.from_bytes(valid)


@pytest.mark.parametrize("kind", list(POINT_FIELD))
@pytest.mark.parametrize("label", list(BAD_POINTS))
def test_T16a_c_point_decoding(bundles: dict[str, Bundle], kind: str, label: str) -> None:
    proof = bundles[kind].proof
    cls, field, raw = type(proof), POINT_FIELD[kind], BAD_POINTS[label]
    err = decode_error(cls, proof_wire(proof, **{field: tlv(TAG_POINT, raw)}), Check.BAD_POINT)
    # a 33-byte string reaches the strict SEC1 decoder itself
    assert isinstance(err, InvalidPoint) == (len(raw) == 33)
    doc = {**proof.to_json(), field: raw.hex()}
    err = json_error(cls, doc, Check.BAD_POINT, f"{cls.WIRE_NAME}.{field}")
    assert isinstance(err, InvalidPoint) == (len(raw) == 33)


def test_T16c_json_point_hex_is_canonical(bundles: dict[str, Bundle]) -> None:
    """Integers in JSON must be canonical lower-case hex; a point field must be too, otherwise
    one proof has several JSON encodings (upper/mixed case) — the JSON analogue of T16c."""
    accepted = []
    for kind, field in POINT_FIELD.items():
        proof = bundles[kind].proof
        doc = proof.to_json()
        mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(doc[field]))
        for variant in {doc[field].upper(), mixed}:
            assert variant != doc[field]
            try:
                type(proof).from_json({**doc, field: variant})
            except EncodingError as exc:
                assert exc.check == Check.DECODE, exc
            else:
                accepted.append((kind, field, variant))
    assert not accepted, f"non-canonical point hex accepted: {accepted}"


# --- A17 integer domains and sizes ---------------------------------------------------------------


def _ct_cases(n: int, p: int) -> list[tuple[str, int, Check]]:
    return [
        ("zero", 0, Check.RANGE),
        ("N", n, Check.NOT_UNIT),
        ("N_squared", n * n, Check.RANGE),
        ("N_squared_plus_1", n * n + 1, Check.RANGE),
        ("prime_factor", p, Check.NOT_UNIT),
        ("factor_times_7", 7 * p, Check.NOT_UNIT),
        ("minus_one", -1, Check.RANGE),
        ("2^(16|N|)", 1 << (16 * n.bit_length()), Check.RANGE),
    ]


# (kind, statement attribute, field name in the error, key)
CIPHERTEXT_FIELDS = [
    ("enc", "ciphertext", "K", PROVER_KEY),
    ("log_star", "ciphertext", "C", PROVER_KEY),
    ("aff_g", "C", "C", VERIFIER_KEY),
    ("aff_g", "D", "D", VERIFIER_KEY),
    ("aff_g", "Y", "Y", PROVER_KEY),
]


@pytest.mark.parametrize(("kind", "attr", "field", "key"), CIPHERTEXT_FIELDS)
def test_T17a_ciphertext_domain(
    bundles: dict[str, Bundle], kind: str, attr: str, field: str, key: Any
) -> None:
    bundle = bundles[kind]
    for _label, value, check in _ct_cases(key.n, key.p):
        rejects(bundle, check, field, public=replace(bundle.public, **{attr: value}))


def test_T17a_trivial_ciphertext_needs_valid_proof(bundles: dict[str, Bundle]) -> None:
    """K = 1 = enc(0; 1) is a legitimate ciphertext: accepted with a valid Πenc, else rejected."""
    ctx = new_context(MALICIOUS)
    public, private = enc_statement(0, rho=1)
    assert public.ciphertext == 1
    proof = enc.prove(ctx, public, private, AUX1, PROVER_KEY)
    assert enc.verify(ctx, public, proof, AUX1) is None
    rejects(bundles["enc"], Check.EQUATION, FIRST_EQUATION["enc"], public=public)


# (kind, field, modulus, prime factor)
RESPONSE_FIELDS = [
    ("enc", "z2", PROVER_KEY.n, PROVER_KEY.p),
    ("log_star", "z2", PROVER_KEY.n, PROVER_KEY.q),
    ("aff_g", "w", VERIFIER_KEY.n, VERIFIER_KEY.p),
    ("aff_g", "wy", PROVER_KEY.n, PROVER_KEY.q),
]


@pytest.mark.parametrize(("kind", "field", "n", "p"), RESPONSE_FIELDS)
def test_T17b_response_domain(
    bundles: dict[str, Bundle], kind: str, field: str, n: int, p: int
) -> None:
    bundle = bundles[kind]
    w = getattr(bundle.proof, field)
    for value, check in (
        (0, Check.RANGE),
        (n, Check.RANGE),
        (n + w, Check.RANGE),
        (-w, Check.RANGE),
        (p, Check.NOT_UNIT),
        (p * 3, Check.NOT_UNIT),
    ):
        rejects(bundle, check, field, proof=replace(bundle.proof, **{field: value}))
    # a negative randomiser does not even decode
    decode_error(type(bundle.proof), proof_wire(bundle.proof, **{field: encode(-w)}), Check.RANGE)


MEGABYTE_INT = (1 << (8 * 1024 * 1024)) - 1
OVERSIZE_FIELDS = [("enc", "A"), ("enc", "z1"), ("aff_g", "z2"), ("log_star", "S"), ("sch", "z")]


@pytest.mark.parametrize(("kind", "field"), OVERSIZE_FIELDS)
def test_T17e_oversize_ints(bundles: dict[str, Bundle], kind: str, field: str) -> None:
    proof = bundles[kind].proof
    cls = type(proof)
    for value in (MEGABYTE_INT, -MEGABYTE_INT):
        if value < 0 and field in ("A", "S", "z"):
            continue  # naturals: covered as negative values elsewhere
        decode_error(cls, proof_wire(proof, **{field: encode(value)}), Check.RANGE)
    huge_hex = "0x" + "f" * (2 * 1024 * 1024)
    json_error(cls, {**proof.to_json(), field: huge_hex}, Check.RANGE, f"{cls.WIRE_NAME}.{field}")


def test_T17e_oversize_message() -> None:
    """Beyond the global cap the decoder refuses before parsing; a header that promises more
    bytes than there are fails without allocating them."""
    too_big = encode(["zk_enc", [["S", (1 << (8 * (MAX_ENCODED_BYTES + 1))) - 1]]])
    decode_error(enc.EncProof, too_big, Check.LENGTH)
    lying = struct.pack(">BI", TAG_LIST, 0xFFFFFFFF) + b"\x00" * 16
    decode_error(enc.EncProof, lying, Check.DECODE)
    lying_count = tlv(TAG_LIST, struct.pack(">I", 0xFFFFFFFF))
    decode_error(enc.EncProof, lying_count, Check.DECODE)


class _IntSpyMeta(type):
    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, int)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, int)

    def __call__(cls, *args: Any, **kwargs: Any) -> int:
        return int(*args, **kwargs)


class _IntSpy(metaclass=_IntSpyMeta):
    """Stands in for `int` inside signer.encoding and records every int.from_bytes size."""

    sizes: ClassVar[list[int]] = []

    @staticmethod
    def from_bytes(data: bytes, byteorder: str = "big", *, signed: bool = False) -> int:
        _IntSpy.sizes.append(len(data))
        return int.from_bytes(data, byteorder, signed=signed)  # type: ignore[arg-type]


def test_T17e_oversize_int_not_materialised(
    bundles: dict[str, Bundle], monkeypatch: pytest.MonkeyPatch
) -> None:
    """encoding.py promises that lengths are checked against the field bound *before* an integer
    is built (attacks.md A17: "checked on the byte length before int.from_bytes")."""
    monkeypatch.setattr(signer.encoding, "int", _IntSpy, raising=False)
    limit = 2 * 3072 // 8  # the largest integer field of any of these proofs (a ciphertext)
    proof = bundles["enc"].proof
    _IntSpy.sizes.clear()
    assert enc.EncProof.from_bytes(proof.to_bytes()) == proof  # the spy is in the decode path
    assert _IntSpy.sizes and max(_IntSpy.sizes) <= limit
    _IntSpy.sizes.clear()
    decode_error(enc.EncProof, proof_wire(proof, A=encode(MEGABYTE_INT)), Check.RANGE)
    assert max(_IntSpy.sizes, default=0) <= limit, (
        f"a {max(_IntSpy.sizes)}-byte integer was built before the field bound was checked"
    )
