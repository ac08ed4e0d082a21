"""An in-process EVM for tests and the demo: py-evm through eth-tester and web3.

Not imported by the CLI, the engine or the transaction codec (`signer.chains.evm`): these
packages are heavy (≈1 s to import) and a production install has no use for them, so they are
the `evm` extra — `pip install 'tessera-custody[evm]'` (`./run` installs it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import rlp
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.exceptions import ValidationError as EthValidationError

from signer.chains.evm import (
    UINT256_LIMIT,
    ChainError,
    InvalidTransaction,
    chain_id_of,
    checksum_address,
    integer_field,
    transaction_hash,
)

try:
    from eth.exceptions import PyEVMError
    from eth_tester import EthereumTester, PyEVMBackend
    from eth_tester.exceptions import TransactionFailed
    from eth_tester.exceptions import ValidationError as TesterValidationError
    from hexbytes import HexBytes
    from web3 import EthereumTesterProvider, Web3
    from web3.exceptions import TimeExhausted, TransactionNotFound, Web3Exception
    from web3.types import TxParams, TxReceipt, Wei
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        f"the in-process EVM needs the `evm` extra ({exc.name} is missing): "
        "pip install 'tessera-custody[evm]'"
    ) from exc

__all__ = [
    "InProcessChain",
    "Receipt",
    "TransactionPending",
    "TransactionRejected",
    "TransactionReverted",
    "UnknownTransaction",
]


class TransactionRejected(ChainError):
    """The chain refused a transaction before executing it (chain id, nonce, funds, signature)."""

    def __init__(self, reason: str, tx_hash: bytes | None = None) -> None:
        self.reason = reason
        self.tx_hash = tx_hash
        shown = f" 0x{tx_hash.hex()}" if tx_hash is not None else ""
        super().__init__(f"transaction{shown} rejected by the chain: {reason}")


class TransactionReverted(ChainError):
    """The transaction was mined but its execution failed (receipt status 0)."""

    def __init__(self, receipt: Receipt) -> None:
        self.receipt = receipt
        super().__init__(
            f"transaction 0x{receipt.tx_hash.hex()} reverted in block {receipt.block_number}"
        )


class TransactionPending(ChainError):
    """No receipt appeared within the wait limit."""

    def __init__(self, tx_hash: bytes, seconds: float) -> None:
        self.tx_hash = tx_hash
        super().__init__(f"transaction 0x{tx_hash.hex()} has no receipt after {seconds} s")


class UnknownTransaction(ChainError):
    """No transaction with this hash is known to the chain."""

    def __init__(self, tx_hash: bytes) -> None:
        self.tx_hash = tx_hash
        super().__init__(f"transaction 0x{tx_hash.hex()} is not known to the chain")


@dataclass(frozen=True)
class Receipt:
    """What the chain recorded for a mined transaction."""

    tx_hash: bytes
    block_number: int
    success: bool
    gas_used: int
    effective_gas_price: int
    sender: ChecksumAddress
    to: ChecksumAddress | None

    @property
    def fee(self) -> int:
        """Wei the sender paid for gas (base fee burnt plus the priority fee)."""
        return self.gas_used * self.effective_gas_price


def _receipt(data: TxReceipt) -> Receipt:
    to = data.get("to")
    return Receipt(
        tx_hash=bytes(data["transactionHash"]),
        block_number=int(data["blockNumber"]),
        success=data["status"] == 1,
        gas_used=int(data["gasUsed"]),
        effective_gas_price=int(data["effectiveGasPrice"]),
        sender=to_checksum_address(data["from"]),
        to=to_checksum_address(to) if to else None,
    )


_EVM_REJECTIONS: Final = (
    EthValidationError,
    TesterValidationError,
    TransactionFailed,
    rlp.exceptions.RLPException,
    PyEVMError,
    Web3Exception,
)


class InProcessChain:
    """A fresh in-memory chain on py-evm (through eth-tester and web3): every submitted
    transaction is mined at once.  Prefunded test accounts act as the faucet.

    py-evm executes whatever it is given; the chain-id check a node's transaction pool makes
    (geth refuses a transaction for another chain, and unprotected legacy ones) is therefore
    made here, before the transaction reaches the EVM.
    """

    def __init__(self, receipt_timeout: float = 10.0) -> None:
        self._tester = EthereumTester(PyEVMBackend())
        self._w3 = Web3(EthereumTesterProvider(self._tester))
        self._faucet = to_checksum_address(self._w3.eth.accounts[0])
        self._chain_id = int(self._w3.eth.chain_id)
        self._receipt_timeout = receipt_timeout

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def faucet(self) -> ChecksumAddress:
        return self._faucet

    def balance(self, address: str) -> int:
        return int(self._w3.eth.get_balance(checksum_address("address", address)))

    def nonce(self, address: str) -> int:
        """The next nonce of `address`, counting transactions already submitted."""
        account = checksum_address("address", address)
        return int(self._w3.eth.get_transaction_count(account, "pending"))

    def base_fee(self) -> int:
        """The base fee per gas of the block the next transaction goes into."""
        block = self._w3.eth.get_block("pending")
        fee = block.get("baseFeePerGas")
        if fee is None:
            raise ChainError("the pending block has no base fee: the chain is not post-London")
        return int(fee)

    def suggest_fees(self) -> tuple[int, int]:
        """(max_priority_fee_per_gas, max_fee_per_gas): the node's tip suggestion, and room for
        the base fee to double before inclusion."""
        priority = int(self._w3.eth.max_priority_fee)
        return priority, 2 * self.base_fee() + priority

    def fund(self, address: str, wei: int) -> Receipt:
        """Send `wei` from the faucet to `address` and wait for it to be mined."""
        to = checksum_address("address", address)
        amount = integer_field("wei", wei, 1, UINT256_LIMIT - 1)
        params: TxParams = {"from": self._faucet, "to": to, "value": Wei(amount)}
        try:
            tx_hash = bytes(self._w3.eth.send_transaction(params))
        except _EVM_REJECTIONS as exc:
            raise TransactionRejected(f"funding {to} with {amount} wei: {exc}") from exc
        return self.receipt(self._mined(tx_hash))

    def deploy(self, init_code: bytes) -> ChecksumAddress:
        """Deploy a contract from the faucet (test tokens, contracts that revert) and return
        its address."""
        if not isinstance(init_code, bytes) or not init_code:
            raise InvalidTransaction("init_code", "must be non-empty bytes")
        params: TxParams = {"from": self._faucet, "data": HexBytes(init_code)}
        try:
            tx_hash = bytes(self._w3.eth.send_transaction(params))
        except _EVM_REJECTIONS as exc:
            raise TransactionRejected(f"deploying a contract: {exc}") from exc
        data = self._w3.eth.get_transaction_receipt(HexBytes(self._mined(tx_hash)))
        address = data.get("contractAddress")
        if address is None:
            raise ChainError(f"deployment 0x{tx_hash.hex()} created no contract")
        return to_checksum_address(address)

    def send_raw(self, raw_signed_tx: bytes) -> bytes:
        """Submit a raw signed transaction, wait until it is mined and return its hash.

        Raises `TransactionRejected` if the chain refuses it (state unchanged) and
        `TransactionReverted` if it was mined but failed."""
        chain_id = chain_id_of(raw_signed_tx)
        tx_hash = transaction_hash(raw_signed_tx)
        if chain_id is None:
            raise TransactionRejected("unprotected (pre-EIP-155) transaction", tx_hash)
        if chain_id != self._chain_id:
            raise TransactionRejected(
                f"chain id {chain_id}, this chain is {self._chain_id}", tx_hash
            )
        try:
            submitted = bytes(self._w3.eth.send_raw_transaction(raw_signed_tx))
        except _EVM_REJECTIONS as exc:
            raise TransactionRejected(str(exc) or type(exc).__name__, tx_hash) from exc
        if submitted != tx_hash:
            raise ChainError(f"the chain reports hash 0x{submitted.hex()} for 0x{tx_hash.hex()}")
        return self._mined(tx_hash)

    def receipt(self, tx_hash: bytes) -> Receipt:
        """The receipt of a mined transaction."""
        if not (isinstance(tx_hash, bytes) and len(tx_hash) == 32):
            raise InvalidTransaction("tx_hash", "must be 32 bytes")
        try:
            return _receipt(self._w3.eth.get_transaction_receipt(HexBytes(tx_hash)))
        except TransactionNotFound as exc:
            raise UnknownTransaction(tx_hash) from exc

    def _mined(self, tx_hash: bytes) -> bytes:
        try:
            data = self._w3.eth.wait_for_transaction_receipt(
                HexBytes(tx_hash), timeout=self._receipt_timeout, poll_latency=0.01
            )
        except TimeExhausted as exc:
            raise TransactionPending(tx_hash, self._receipt_timeout) from exc
        receipt = _receipt(data)
        if not receipt.success:
            raise TransactionReverted(receipt)
        return tx_hash
