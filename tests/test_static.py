"""Static checks over the production code (attacks.md A11 T11g, A13 T13g, A18 T18a)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = [
    p
    for pkg in ("signer", "policies", "coordinator", "hsm")
    for p in (ROOT / pkg).rglob("*.py")
    if "node_modules" not in p.parts  # coordinator/localchain's npm install is not ours
]


def _trees() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in PRODUCTION]


def test_T11g_no_insecure_randomness() -> None:
    """Secrets come from `secrets`/os.urandom only; the `random` module is never imported."""
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert all(a.name != "random" for a in node.names), path
            if isinstance(node, ast.ImportFrom):
                assert node.module != "random", path


def test_no_bare_assert_in_production_code() -> None:
    """Checks raise typed errors; `assert` vanishes under `python -O`."""
    for path, tree in _trees():
        asserts = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert)]
        assert not asserts, f"{path}: assert at lines {asserts}"


def test_T13g_no_constant_session_id() -> None:
    """No all-zero byte string constant that could serve as a session id."""
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
                value = node.value
                assert not (len(value) >= 16 and value.count(0) == len(value)), path
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "bytes":
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, int):
                    assert arg.value < 16, f"{path}:{node.lineno}: bytes({arg.value})"


def test_T18a_secret_exponents_use_the_constant_time_wrapper() -> None:
    """Modular exponentiation lives in signer/arith.py: provers and key owners use
    `powmod_secret` (GMP mpz_powm_sec); nothing else calls gmpy2.powmod_sec or a three-argument
    builtin pow on big integers except for exponents computed from public or tiny values."""
    # Public values only: inverses mod small primes; Lagrange and polynomial evaluation at public
    # indices; the public δ and re-randomiser h inverted mod q; an exponent reduced mod p−1.
    allowed_pow3 = {
        "primes.py",
        "curve.py",
        "zk/mod.py",
        "protocol/keygen.py",
        "protocol/presign.py",
        "protocol/sign.py",
    }
    for path, tree in _trees():
        rel = path.relative_to(ROOT / "signer").as_posix() if "signer" in path.parts else path.name
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "powmod_sec":
                assert rel == "arith.py", f"{path}:{node.lineno} calls powmod_sec directly"
            if isinstance(func, ast.Name) and func.id == "pow" and len(node.args) == 3:
                assert rel in allowed_pow3, f"{path}:{node.lineno}: three-argument pow"
