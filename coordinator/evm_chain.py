"""Local chains for tests, benchmarks and the demo: in-process py-evm (eth-tester), or any node
with unlocked accounts over JSON-RPC (a Hardhat node, coordinator/hardhat.py).

`LocalChain` is the faucet side of a test chain: it funds addresses, deploys contracts and sends
raw transactions, waiting for each to be mined.  The coordinator itself never uses it: payouts go
through `coordinator.rpc.ChainRpc`, which `LocalChain.rpc()` hands out for the same chain.

The in-process chain needs the `evm` extra (eth-tester, py-evm: ≈1 s to import, of no use to a
production install): `pip install 'tessera-custody[evm]'` (`./run` installs it).
"""

from __future__ import annotations

from typing import Any, Final

import rlp
from eth_abi.abi import encode as abi_encode
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.exceptions import ValidationError as EthValidationError
from hexbytes import HexBytes
from web3 import AsyncWeb3, HTTPProvider, Web3
from web3.exceptions import TimeExhausted, TransactionNotFound, Web3Exception
from web3.types import RPCEndpoint, TxParams, Wei

from coordinator.contracts import artifact
from coordinator.rpc import BALANCE_OF, ChainRpc, Receipt, TransactionRejected, receipt_of
from signer.chains.evm import (
    UINT256_LIMIT,
    ChainError,
    InvalidTransaction,
    chain_id_of,
    checksum_address,
    integer_field,
    transaction_hash,
)

__all__ = [
    "InProcessChain",
    "LocalChain",
    "Receipt",
    "TransactionPending",
    "TransactionRejected",
    "TransactionReverted",
    "UnknownTransaction",
]


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


_EVM_REJECTIONS: Final[tuple[type[BaseException], ...]] = (
    EthValidationError,
    rlp.exceptions.RLPException,
    Web3Exception,
    ValueError,
)


def _tester_rejections() -> tuple[type[BaseException], ...]:
    from eth.exceptions import PyEVMError  # noqa: PLC0415
    from eth_tester.exceptions import TransactionFailed  # noqa: PLC0415
    from eth_tester.exceptions import ValidationError as TesterValidationError  # noqa: PLC0415

    return (TesterValidationError, TransactionFailed, PyEVMError)


#: keccak256("setBlocked(address,bool)")[:4]: the test token's issuer block (Token.sol).
SET_BLOCKED: Final = bytes.fromhex("000af2a1")


def set_blocked(account: str, blocked: bool = True) -> bytes:
    """Calldata of the test token's `setBlocked(account, blocked)`."""
    word = bytes(12) + bytes.fromhex(checksum_address("account", account)[2:])
    return SET_BLOCKED + word + int(blocked).to_bytes(32, "big")


class LocalChain:
    """A test chain whose node holds unlocked, prefunded accounts: the first is the faucet.
    Every transaction sent through it is waited for until mined.

    A node's transaction pool refuses a transaction for another chain and unprotected legacy
    ones (geth does; py-evm executes whatever it is given): `send_raw` checks both first, so
    both kinds of chain behave alike."""

    def __init__(
        self,
        w3: Web3,
        *,
        receipt_timeout: float = 10.0,
        rejections: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._w3 = w3
        self._faucet = to_checksum_address(self._w3.eth.accounts[0])
        self._chain_id = int(self._w3.eth.chain_id)
        self._receipt_timeout = receipt_timeout
        self._rejections = _EVM_REJECTIONS + rejections

    @classmethod
    def connect(cls, url: str, *, receipt_timeout: float = 10.0) -> LocalChain:
        """A local node at `url` (a Hardhat node) over web3's HTTP provider."""
        return cls(Web3(HTTPProvider(url)), receipt_timeout=receipt_timeout)

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def faucet(self) -> ChecksumAddress:
        return self._faucet

    def rpc(self) -> ChainRpc:
        """The coordinator's JSON-RPC client for this chain (what payouts use)."""
        provider = self._w3.provider
        if isinstance(provider, HTTPProvider) and provider.endpoint_uri:
            return ChainRpc.connect(self._chain_id, [str(provider.endpoint_uri)])
        raise ChainError("this local chain has no JSON-RPC URL")

    def request(self, method: str, *params: Any) -> Any:
        """A raw JSON-RPC call (Hardhat's evm_snapshot, evm_revert, evm_mine …)."""
        response = self._w3.provider.make_request(RPCEndpoint(method), list(params))
        if "error" in response:
            raise ChainError(f"{method}: {response['error']}")
        return response.get("result")

    def balance(self, address: str) -> int:
        return int(self._w3.eth.get_balance(checksum_address("address", address)))

    def token_balance(self, token: str, holder: str) -> int:
        data = BALANCE_OF + bytes(12) + bytes.fromhex(checksum_address("holder", holder)[2:])
        params: TxParams = {"to": checksum_address("token", token), "data": HexBytes(data)}
        return int.from_bytes(self._w3.eth.call(params), "big")

    def nonce(self, address: str) -> int:
        """The next nonce of `address`, counting transactions already submitted."""
        account = checksum_address("address", address)
        return int(self._w3.eth.get_transaction_count(account, "pending"))

    def block_number(self) -> int:
        return int(self._w3.eth.block_number)

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
        return self.receipt(self._mined(self._send(params, f"funding {to} with {amount} wei")))

    def deploy(self, init_code: bytes) -> ChecksumAddress:
        """Deploy a contract from the faucet (test tokens, contracts that revert) and return
        its address."""
        if not isinstance(init_code, bytes) or not init_code:
            raise InvalidTransaction("init_code", "must be non-empty bytes")
        params: TxParams = {"from": self._faucet, "data": HexBytes(init_code)}
        tx_hash = self._mined(self._send(params, "deploying a contract"))
        data = self._w3.eth.get_transaction_receipt(HexBytes(tx_hash))
        address = data.get("contractAddress")
        if address is None:
            raise ChainError(f"deployment 0x{tx_hash.hex()} created no contract")
        return to_checksum_address(address)

    def deploy_token(self, name: str, symbol: str, decimals: int, supply: int) -> ChecksumAddress:
        """A `Token` (coordinator/contracts/Token.sol) whose whole supply the faucet holds."""
        arguments = abi_encode(
            ["string", "string", "uint8", "uint256"], [name, symbol, decimals, supply]
        )
        return self.deploy(artifact("Token").bytecode + arguments)

    def call_from_faucet(self, to: str, data: bytes) -> Receipt:
        """A contract call from the faucet (a token transfer to fund an address, a token's
        `setBlocked`), waited for until mined."""
        params: TxParams = {
            "from": self._faucet,
            "to": checksum_address("to", to),
            "data": HexBytes(data),
        }
        return self.receipt(self._mined(self._send(params, f"calling {to}")))

    def submit_from_faucet(self, to: str, data: bytes, priority_fee: int) -> bytes:
        """Send a contract call from the faucet without waiting for it (a test that mines by
        hand orders a block by tips); returns its hash."""
        params: TxParams = {
            "from": self._faucet,
            "to": checksum_address("to", to),
            "data": HexBytes(data),
            "gas": 200_000,
            "maxPriorityFeePerGas": Wei(priority_fee),
            "maxFeePerGas": Wei(2 * self.base_fee() + priority_fee),
        }
        return self._send(params, f"calling {to}")

    def _send(self, params: TxParams, what: str) -> bytes:
        try:
            return bytes(self._w3.eth.send_transaction(params))
        except self._rejections as exc:
            raise TransactionRejected(f"{what}: {exc}") from exc

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
        except self._rejections as exc:
            raise TransactionRejected(str(exc) or type(exc).__name__, tx_hash) from exc
        if submitted != tx_hash:
            raise ChainError(f"the chain reports hash 0x{submitted.hex()} for 0x{tx_hash.hex()}")
        return self._mined(tx_hash)

    def receipt(self, tx_hash: bytes) -> Receipt:
        """The receipt of a mined transaction."""
        if not (isinstance(tx_hash, bytes) and len(tx_hash) == 32):
            raise InvalidTransaction("tx_hash", "must be 32 bytes")
        try:
            return receipt_of(self._w3.eth.get_transaction_receipt(HexBytes(tx_hash)))
        except TransactionNotFound as exc:
            raise UnknownTransaction(tx_hash) from exc

    def _mined(self, tx_hash: bytes) -> bytes:
        try:
            data = self._w3.eth.wait_for_transaction_receipt(
                HexBytes(tx_hash), timeout=self._receipt_timeout, poll_latency=0.01
            )
        except TimeExhausted as exc:
            raise TransactionPending(tx_hash, self._receipt_timeout) from exc
        receipt = receipt_of(data)
        if not receipt.success:
            raise TransactionReverted(receipt)
        return tx_hash


class InProcessChain(LocalChain):
    """A fresh in-memory chain on py-evm (through eth-tester and web3): every submitted
    transaction is mined at once."""

    def __init__(self, receipt_timeout: float = 10.0) -> None:
        try:
            from eth_tester import EthereumTester, PyEVMBackend  # noqa: PLC0415
            from web3 import EthereumTesterProvider  # noqa: PLC0415
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                f"the in-process EVM needs the `evm` extra ({exc.name} is missing): "
                "pip install 'tessera-custody[evm]'"
            ) from exc
        self._tester = EthereumTester(PyEVMBackend())
        super().__init__(
            Web3(EthereumTesterProvider(self._tester)),
            receipt_timeout=receipt_timeout,
            rejections=_tester_rejections(),
        )

    def rpc(self) -> ChainRpc:
        """A `ChainRpc` on this same in-process chain (web3's async eth-tester provider)."""
        from web3.providers.eth_tester import AsyncEthereumTesterProvider  # noqa: PLC0415

        provider = AsyncEthereumTesterProvider()
        provider.ethereum_tester = self._tester  # the same chain, not a new one
        return ChainRpc(
            self._chain_id,
            [AsyncWeb3(provider)],
            names=["eth-tester"],
            node_errors=(EthValidationError, *_tester_rejections()),
        )
