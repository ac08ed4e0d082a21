"""Cached protocol outputs for tests: keys and aux-info are expensive to rebuild (aux-info for
five parties takes ~20 s), so each (party set) is computed once per test session."""

from __future__ import annotations

from functools import cache

from conftest import paillier_key
from harness import configs

from signer.protocol.aux_info import AuxInfo, AuxInfoParty
from signer.protocol.keygen import KeygenParty, KeyShare
from signer.protocol.simulate import run


@cache
def keys(t: int, n: int, key_id: bytes = b"wallet") -> dict[int, KeyShare]:
    parties = list(range(1, n + 1))
    return run([KeygenParty(c) for c in configs("keygen/v1", parties, t, key_id)]).results


@cache
def aux_info(n: int) -> dict[int, AuxInfo]:
    parties = list(range(1, n + 1))
    cfgs = configs("aux_info/v1", parties, 2, b"aux")
    return run([AuxInfoParty(c, paillier_key(c.me)) for c in cfgs]).results


@cache
def aux_info_of(parties: tuple[int, ...], key_offset: int = 0) -> dict[int, AuxInfo]:
    """Aux-info for any party set; party p gets fixture Paillier key p + key_offset (an offset
    gives a committee keys no other fixture uses, as a refresh needs)."""
    cfgs = configs("aux_info/v1", list(parties), 2, b"aux")
    return run([AuxInfoParty(c, paillier_key(c.me + key_offset)) for c in cfgs]).results
