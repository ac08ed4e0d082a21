"""Failpoints: named places in a node (or the coordinator's payout engine) where a crash test can
have the process killed.

`TESSERA_FAILPOINTS="sign.after_consume"` (comma-separated names) makes the node SIGKILL itself
when it reaches that point — a real `kill -9` at an exact step, which is how the crash-safety
tests show that no presignature is ever used twice and no state is half-written.  Unset (the
default, and always in production) a failpoint is a dictionary lookup.
"""

from __future__ import annotations

import os
import signal

from signer.errors import TesseraError


class FailpointError(TesseraError):
    """A failpoint name that does not exist (in the environment or in code)."""


ENV = "TESSERA_FAILPOINTS"

#: Every failpoint the node has, so a typo in a test cannot silently disarm one.
KNOWN = frozenset(
    {
        "sign.before_consume",
        "sign.after_consume",
        "sign.after_partial",
        "session.before_store",
        "session.after_store",
        # the coordinator's payouts (coordinator/payouts.py): after each step is stored
        "payout.after_reserve",
        "payout.after_sign",
        "payout.after_send",
        # the signer API (coordinator/api): a withdrawal's status stored, its side effect
        # not yet done; a webhook posted, its delivery not yet recorded
        "withdrawal.SIGNING",
        "withdrawal.BROADCASTING",
        "webhook.after_post",
    }
)


def _armed() -> frozenset[str]:
    names = frozenset(n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip())
    unknown = names - KNOWN
    if unknown:
        raise FailpointError(f"{ENV} names unknown failpoints {sorted(unknown)}")
    return names


ARMED = _armed()


def failpoint(name: str) -> None:
    if name not in KNOWN:
        raise FailpointError(f"unknown failpoint {name!r}")
    if name in ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
