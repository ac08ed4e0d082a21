"""Cached protocol outputs for tests: keys and aux-info are expensive to rebuild (aux-info for
five parties takes ~20 s, for seven about a minute), so each (party set) is computed once per
test session — aux-info once per whole run, shared by the xdist workers (`_shared`)."""

from __future__ import annotations

import fcntl
import os
import pickle
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TypeVar

from conftest import paillier_key
from harness import configs

from signer.protocol.aux_info import AuxInfo, AuxInfoParty
from signer.protocol.keygen import KeygenParty, KeyShare
from signer.protocol.simulate import run

T = TypeVar("T")


#: Set by conftest.py in each xdist worker: a folder inside the run's base temporary directory
#: (which pytest itself rotates away), the same for every worker of the run.
SHARED_ENV = "TESSERA_SHARED_FIXTURES"


def _run_folder() -> Path | None:
    """The folder the xdist workers of this run share (None outside xdist)."""
    folder = os.environ.get(SHARED_ENV)
    return Path(folder) if folder else None


def _shared(name: str, make: Callable[[], T]) -> T:
    """`make()` once per run across the xdist workers: the first to ask computes it under a
    lock and leaves it pickled in the run's folder, the others wait for the lock and load it
    (a file this run wrote, never anything else's)."""
    folder = _run_folder()
    if folder is None:
        return make()
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{name}.pickle"
    with (folder / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            value: T = pickle.loads(path.read_bytes())  # a file this run wrote
            return value
        value = make()
        partial = path.with_suffix(".partial")
        partial.write_bytes(pickle.dumps(value))
        partial.replace(path)
        return value


@cache
def keys(t: int, n: int, key_id: bytes = b"wallet") -> dict[int, KeyShare]:
    parties = list(range(1, n + 1))
    return run([KeygenParty(c) for c in configs("keygen/v1", parties, t, key_id)]).results


@cache
def aux_info(n: int) -> dict[int, AuxInfo]:
    return aux_info_of(tuple(range(1, n + 1)))


@cache
def aux_info_of(parties: tuple[int, ...], key_offset: int = 0) -> dict[int, AuxInfo]:
    """Aux-info for any party set; party p gets fixture Paillier key p + key_offset (an offset
    gives a committee keys no other fixture uses, as a refresh needs)."""

    def make() -> dict[int, AuxInfo]:
        cfgs = configs("aux_info/v1", list(parties), 2, b"aux")
        return run([AuxInfoParty(c, paillier_key(c.me + key_offset)) for c in cfgs]).results

    name = "aux-" + "-".join(map(str, parties)) + f"+{key_offset}"
    return _shared(name, make)
