"""A transfer between two addresses of one wallet: what a node signs without a policy rule.

A deposit address is the wallet key's BIP32 child (coordinator/deposits.py); sweeping it to the
wallet's own address, or sending it the ether its token sweep pays gas with, moves value from
one address of the key to another — nothing leaves the wallet, so no whitelist, limit, approval
or velocity applies (the payout that later takes the value out is decided as every payout is).
What makes it safe is that the node itself derives the recipient from its own key and the
destination path the request names (signer/node/signing.py); here, `read_internal` refuses
(`TransactionRefused`) what is not such a transfer:

* the transaction must be one a node can read at all (`calldata.movement_of`: a native transfer
  or an ERC-20 `transfer` of a policy token; anything else is refused as for any payout);
* it pays one recipient (a batch through the disperse contract is a payout: check `legs`);
* that recipient is exactly the wallet's address at the destination path (check
  `destination`), which is not the sending address (check `destination_path`: a self-send is a
  cancellation, signer/chains/replacement.py).
"""

from __future__ import annotations

from policies.document import PolicyDocument
from signer.chains.calldata import movement_of
from signer.chains.errors import TransactionRefused
from signer.chains.evm import Transfer
from signer.chains.movement import Movement
from signer.problems import ErrorCode

__all__ = ["read_internal"]


def read_internal(
    transfer: Transfer, policy: PolicyDocument, *, sender: str, destination: str
) -> Movement:
    """The movement of `transfer` from `sender` if it pays exactly `destination` (another
    address of the same wallet, derived by the caller from its own key)."""
    movement = movement_of(transfer, policy)
    if movement.legs is not None:
        raise TransactionRefused(
            ErrorCode.INTERNAL_TRANSFER_REFUSED,
            "legs",
            "a batch through the disperse contract is a payout, not an internal transfer",
        )
    if destination.lower() == sender.lower():
        raise TransactionRefused(
            ErrorCode.INTERNAL_TRANSFER_REFUSED,
            "destination_path",
            "the destination path names the sending address itself",
        )
    if movement.destination.lower() != destination.lower():
        raise TransactionRefused(
            ErrorCode.INTERNAL_TRANSFER_REFUSED,
            "destination",
            f"the transaction pays {movement.destination}, not the wallet's address "
            f"{destination} at the destination path",
        )
    return movement
