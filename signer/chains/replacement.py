"""When a node may sign a second transaction for one request: a fee replacement (speed-up) or a
cancellation.

A payout stuck in the chain's pool because its fee is too low is replaced by the same
transaction at the same nonce with higher fees; whichever of the two is mined, the other can
never be (one nonce).  A node that signed request R once signs a second payload for R only if it
is such a replacement of the last one it signed for R (`replacement_problem` returns None):

* the same kind of transaction (EIP-1559 or legacy), chain id, nonce, gas limit, destination,
  value, calldata and access list — so the same intent, decided again by the policy like any
  request, and counted once by the velocity limits (the receipts are bound to the intent);
* every fee at least `MIN_BUMP` (+10 %) above the one it replaces — what transaction pools
  require to replace (geth, Hardhat), so a replacement that could never replace is not signed;
* every fee at most `MAX_BUMP` times the one it replaces: a replacement burns at most that much
  more gas money, so a compromised coordinator cannot turn a payout into a large fee.

A cancellation (`cancellation_problem`) replaces what the node signed last for R by a
transaction that moves nothing: a 0-value self-send from the same sender at the same nonce
(no calldata, no access list, gas at most the replaced one's), with fees bounded as above.
Whichever is mined, the other cannot be, so the payout is either made once or not at all, and
a nonce whose transaction the chain will never take is filled rather than left as a gap that
holds up every later one.  A cancellation is itself replaced only by another cancellation (a
cancelled payout cannot be revived): what the node signed last is what the next is compared
with.

Anything else is REQUEST_REUSED (one request, one payout), as before.
"""

from __future__ import annotations

from typing import Final

from signer.chains.evm import Eip1559Transfer, Transfer

#: A replacement's fees are at least this fraction of the replaced ones (numerator, denominator).
MIN_BUMP: Final = (11, 10)
#: … and at most this many times them.
MAX_BUMP: Final = 10

_SAME: Final = ("chain_id", "nonce", "gas", "to", "value", "data")
#: What a cancellation keeps of the transaction it cancels.
_SAME_SLOT: Final = ("chain_id", "nonce")


def _fees(tx: Transfer) -> dict[str, int]:
    if isinstance(tx, Eip1559Transfer):
        return {
            "max_fee_per_gas": tx.max_fee_per_gas,
            "max_priority_fee_per_gas": tx.max_priority_fee_per_gas,
        }
    return {"gas_price": tx.gas_price}


def replacement_problem(old: Transfer, new: Transfer) -> str | None:
    """Why `new` is not a fee replacement of `old` (None: it is one)."""
    if type(old) is not type(new):
        return "a replacement is the same kind of transaction (EIP-1559 or legacy)"
    differing = [name for name in _SAME if getattr(old, name) != getattr(new, name)]
    if getattr(old, "access_list", ()) != getattr(new, "access_list", ()):
        differing.append("access_list")
    if differing:
        return f"a replacement changes only the fees; this one changes {', '.join(differing)}"
    return _fee_problem(old, new)


def is_cancellation(tx: Transfer, sender: str) -> bool:
    """Whether `tx` moves nothing: 0 value to its own `sender`, no calldata, no access list."""
    return (
        tx.to.lower() == sender.lower()
        and tx.value == 0
        and not tx.data
        and not getattr(tx, "access_list", ())
    )


def cancellation_problem(old: Transfer, new: Transfer, sender: str) -> str | None:
    """Why `new`, sent from `sender`, is not a cancellation of `old` (None: it is one)."""
    if not is_cancellation(new, sender):
        return "a cancellation is a 0-value self-send with no calldata and no access list"
    if type(old) is not type(new):
        return "a cancellation is the same kind of transaction (EIP-1559 or legacy)"
    differing = [name for name in _SAME_SLOT if getattr(old, name) != getattr(new, name)]
    if differing:
        return f"a cancellation keeps the chain and nonce; this one changes {', '.join(differing)}"
    if new.gas > old.gas:
        # a self-send needs no more gas than what it replaces: no room to burn fees
        return f"a cancellation's gas may not exceed the cancelled one's ({new.gas} > {old.gas})"
    return _fee_problem(old, new)


def _fee_problem(old: Transfer, new: Transfer) -> str | None:
    numerator, denominator = MIN_BUMP
    for name, before in _fees(old).items():
        after = _fees(new)[name]
        if after * denominator < before * numerator:
            return f"{name} must rise by at least 10 % to replace ({after} < {before} × 1.1)"
        if after > before * MAX_BUMP:
            return f"{name} may rise to at most {MAX_BUMP} times ({after} > {before} × {MAX_BUMP})"
    return None


__all__ = [
    "MAX_BUMP",
    "MIN_BUMP",
    "cancellation_problem",
    "is_cancellation",
    "replacement_problem",
]
