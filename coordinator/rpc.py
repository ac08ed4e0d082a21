"""One EVM chain over JSON-RPC: the calls payouts need, through web3.py's HTTP provider.

`ChainRpc.connect(chain)` talks to the registry entry's RPC URLs in order, moving to the next one
when a URL cannot be reached (never when the node answered: an answer, even an error, is the
chain's).  The same class runs on an in-process eth-tester chain (`ChainRpc(AsyncWeb3(...))`, see
coordinator/evm_chain.py) so unit tests take the code path a production RPC URL takes.

Every answer is checked for the chain id the registry names before anything is sent
(`check_chain_id`): a URL pointed at the wrong network is refused, never used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

from signer.chains.evm import ChainError, checksum_address, transaction_hash
from signer.problems import ErrorCode

try:
    import aiohttp
    from hexbytes import HexBytes
    from web3 import AsyncWeb3
    from web3.exceptions import (
        BlockNotFound,
        ContractLogicError,
        TransactionNotFound,
        Web3Exception,
        Web3RPCError,
    )
    from web3.types import BlockIdentifier, TxParams, Wei

    from coordinator.rpc_transport import KeptAliveHTTPProvider
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(f"JSON-RPC needs web3 ({exc.name} is missing)") from exc

__all__ = [
    "ALLOWANCE",
    "BALANCE_OF",
    "Block",
    "CallReverted",
    "ChainRpc",
    "ChainUnavailable",
    "FeeHistory",
    "Log",
    "Receipt",
    "TransactionRejected",
    "WrongChain",
]

T = TypeVar("T")

#: allowance(address,address) — what a spender may still move of an owner's tokens.
ALLOWANCE: Final = bytes.fromhex("dd62ed3e")
#: balanceOf(address) — ERC-20 balances read with eth_call.
BALANCE_OF: Final = bytes.fromhex("70a08231")
# Error(string): the ABI encoding of a Solidity `require` / `revert` reason.
_ERROR_STRING: Final = bytes.fromhex("08c379a0")
# What nodes answer to a transaction they already hold: resending the same bytes is not an error.
_ALREADY_KNOWN: Final = ("already known", "known transaction", "already imported")
_NONCE_TOO_LOW: Final = ("nonce too low", "nonce is too low")
# a node that cannot queue a transaction above the account's next nonce (an automining
# Hardhat) refuses it with these; a queueing node (geth) holds it instead
_NONCE_TOO_HIGH: Final = ("nonce too high", "nonce is too high")
# web3's default middleware that this class does without: every address it passes is already
# checked and checksummed (so no ENS name is ever resolved behind its back), it never asks a
# node to fill in or send a transaction (gas price strategy, buffered gas estimate), and the
# validation layer asked the node's `eth_chainId` before every `eth_call` and
# `eth_estimateGas` to check a `chainId` field these calls never carry (`check_chain_id` does
# that once) — two round trips on every payout's way to its signature.
_UNUSED_MIDDLEWARE: Final = (
    "validation",
    "ens_name_to_address",
    "gas_price_strategy",
    "gas_estimate",
)


class ChainUnavailable(ChainError):
    """No RPC URL of the chain answered."""

    code = ErrorCode.CHAIN_UNAVAILABLE

    def __init__(self, chain_id: int, problems: Sequence[str]) -> None:
        self.chain_id = chain_id
        self.problems = list(problems)
        super().__init__(f"chain {chain_id}: no RPC URL answered ({'; '.join(problems)})")


class WrongChain(ChainError):
    """An RPC URL serves another chain than the one it is configured for."""

    code = ErrorCode.CHAIN_MISMATCH

    def __init__(self, expected: int, found: int) -> None:
        self.expected = expected
        self.found = found
        super().__init__(f"the RPC node serves chain {found}, configured for chain {expected}")


class TransactionRejected(ChainError):
    """The chain refused a transaction before executing it (chain id, nonce, funds, fee)."""

    code = ErrorCode.CHAIN_REJECTED

    def __init__(
        self,
        reason: str,
        tx_hash: bytes | None = None,
        *,
        nonce_too_low: bool = False,
        nonce_too_high: bool = False,
    ):
        self.reason = reason
        self.tx_hash = tx_hash
        self.nonce_too_low = nonce_too_low
        self.nonce_too_high = nonce_too_high
        shown = f" 0x{tx_hash.hex()}" if tx_hash is not None else ""
        super().__init__(f"transaction{shown} rejected by the chain: {reason}")


class CallReverted(ChainError):
    """A call or gas estimate reverted: the transaction would fail if sent."""

    code = ErrorCode.CHAIN_REJECTED

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"execution reverted: {reason}")


@dataclass(frozen=True)
class Receipt:
    """What the chain recorded for a mined transaction."""

    tx_hash: bytes
    block_number: int
    block_hash: bytes
    success: bool
    gas_used: int
    effective_gas_price: int
    sender: ChecksumAddress
    to: ChecksumAddress | None

    @property
    def fee(self) -> int:
        """Wei the sender paid for gas (base fee burnt plus the priority fee)."""
        return self.gas_used * self.effective_gas_price


@dataclass(frozen=True)
class FeeHistory:
    """`eth_feeHistory`: the base fee of each block asked for and of the next one (last), and
    per block the priority fees paid at each percentile asked for."""

    base_fees: tuple[int, ...]
    rewards: tuple[tuple[int, ...], ...]

    @property
    def next_base_fee(self) -> int:
        return self.base_fees[-1]


@dataclass(frozen=True)
class Block:
    """A block as deposits need it: its number, hash, parent and its value transfers
    (tx hash, from, to, wei) — transactions with a recipient and a non-zero value."""

    number: int
    hash: bytes
    parent_hash: bytes
    transfers: tuple[tuple[bytes, ChecksumAddress, ChecksumAddress, int], ...]


@dataclass(frozen=True)
class Log:
    block_number: int
    block_hash: bytes
    tx_hash: bytes
    log_index: int
    address: ChecksumAddress
    topics: tuple[bytes, ...]
    data: bytes


def revert_reason(data: bytes) -> str:
    """The reason string of ABI-encoded revert data, or its selector if it is a custom error."""
    if data[:4] == _ERROR_STRING and len(data) >= 68:
        length = int.from_bytes(data[36:68], "big")
        text = data[68 : 68 + length]
        if len(text) == length:
            return text.decode("utf-8", "replace")
    if not data:
        return "no reason given"
    return f"custom error 0x{data[:4].hex()}"


def receipt_of(data: Any) -> Receipt:
    """A web3 receipt as a `Receipt`."""
    to = data.get("to")
    return Receipt(
        tx_hash=bytes(data["transactionHash"]),
        block_number=int(data["blockNumber"]),
        block_hash=bytes(data["blockHash"]),
        success=data["status"] == 1,
        gas_used=int(data["gasUsed"]),
        effective_gas_price=int(data["effectiveGasPrice"]),
        sender=to_checksum_address(data["from"]),
        to=to_checksum_address(to) if to else None,
    )


def _message(exc: BaseException) -> str:
    if isinstance(exc, ContractLogicError) and exc.message:
        return exc.message
    if isinstance(exc, Web3RPCError) and isinstance(exc.rpc_response, dict):
        error = exc.rpc_response.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
    return str(exc) or type(exc).__name__


def _revert_data(exc: BaseException) -> bytes | None:
    """The revert data an error carries if it says the call reverted (b"" when it says so but
    gives no data), None if it is about something else."""
    data: object = None
    if isinstance(exc, ContractLogicError):
        data = exc.data
    elif isinstance(exc, Web3RPCError) and isinstance(exc.rpc_response, dict):
        error = exc.rpc_response.get("error")
        if isinstance(error, dict):
            data = error.get("data")
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return b""
    if isinstance(exc, ContractLogicError) or "revert" in _message(exc).lower():
        return b""
    return None


# Failures of the transport, not answers of the node: try the next URL.
_UNREACHABLE: Final = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class ChainRpc:
    """JSON-RPC to one chain.  `chain_id` is the chain it must serve."""

    def __init__(
        self,
        chain_id: int,
        providers: Sequence[AsyncWeb3[Any]],
        *,
        names: Sequence[str] = (),
        node_errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        """`node_errors`: what else the providers raise for a node's refusal (an in-process
        chain raises py-evm's own exceptions where an RPC node answers a JSON-RPC error)."""
        if not providers:
            raise ValueError("a chain needs at least one RPC provider")
        self.chain_id = chain_id
        self._w3 = list(providers)
        for w3 in self._w3:
            present = {layer for _middleware, layer in w3.middleware_onion.middleware}
            for name in present.intersection(_UNUSED_MIDDLEWARE):
                w3.middleware_onion.remove(name)
        self._names = list(names) or [f"provider {i + 1}" for i in range(len(providers))]
        self._checked = False
        self._answers: tuple[type[BaseException], ...] = (Web3Exception, ValueError, *node_errors)

    @classmethod
    def connect(cls, chain_id: int, urls: Sequence[str], *, timeout: float = 10.0) -> ChainRpc:
        """One kept-alive HTTP provider per URL (coordinator/rpc_transport.py), tried in order,
        with no retries of its own: a URL that does not answer is left for the next one at
        once."""
        providers = [AsyncWeb3(KeptAliveHTTPProvider(url, timeout=timeout)) for url in urls]
        # the URL's host only, never its path or query (API keys live there)
        names = [url.split("//", 1)[-1].split("/", 1)[0] for url in urls]
        return cls(chain_id, providers, names=names)

    async def aclose(self) -> None:
        for w3 in self._w3:
            if isinstance(w3.provider, KeptAliveHTTPProvider):
                await w3.provider.disconnect()

    async def _call(self, what: Callable[[AsyncWeb3[Any]], Awaitable[T]]) -> T:
        problems = []
        for name, w3 in zip(self._names, self._w3, strict=True):
            try:
                return await what(w3)
            except _UNREACHABLE as exc:
                problems.append(f"{name}: {type(exc).__name__}")
        raise ChainUnavailable(self.chain_id, problems)

    async def check_chain_id(self) -> None:
        """Refuse (`WrongChain`) if the node serves another chain; once per instance."""
        if self._checked:
            return
        found = int(await self._call(lambda w3: w3.eth.chain_id))
        if found != self.chain_id:
            raise WrongChain(self.chain_id, found)
        self._checked = True

    # --- reading ---------------------------------------------------------------------------
    async def block_number(self) -> int:
        return int(await self._call(lambda w3: w3.eth.block_number))

    async def nonce(self, address: str, block: BlockIdentifier = "pending") -> int:
        """The next nonce of `address`: counting the node's pending pool by default."""
        account = checksum_address("address", address)
        return int(await self._call(lambda w3: w3.eth.get_transaction_count(account, block)))

    async def balance(self, address: str) -> int:
        account = checksum_address("address", address)
        return int(await self._call(lambda w3: w3.eth.get_balance(account)))

    async def token_balance(self, token: str, holder: str) -> int:
        """`balanceOf(holder)` of ERC-20 contract `token`, in its smallest unit."""
        data = BALANCE_OF + bytes(12) + bytes.fromhex(checksum_address("holder", holder)[2:])
        params: TxParams = {"to": checksum_address("token", token), "data": HexBytes(data)}
        out = await self._call(lambda w3: w3.eth.call(params))
        if len(out) != 32:
            raise ChainError(f"balanceOf on {token} returned {len(out)} bytes, not 32")
        return int.from_bytes(out, "big")

    async def token_allowance(self, token: str, owner: str, spender: str) -> int:
        """`allowance(owner, spender)` of ERC-20 contract `token`, in its smallest unit."""
        data = (
            ALLOWANCE
            + bytes(12)
            + bytes.fromhex(checksum_address("owner", owner)[2:])
            + bytes(12)
            + bytes.fromhex(checksum_address("spender", spender)[2:])
        )
        params: TxParams = {"to": checksum_address("token", token), "data": HexBytes(data)}
        out = await self._call(lambda w3: w3.eth.call(params))
        if len(out) != 32:
            raise ChainError(f"allowance on {token} returned {len(out)} bytes, not 32")
        return int.from_bytes(out, "big")

    async def fee_history(self, blocks: int, percentiles: Sequence[float]) -> FeeHistory:
        data = await self._call(lambda w3: w3.eth.fee_history(blocks, "latest", list(percentiles)))
        rewards = tuple(tuple(int(r) for r in row) for row in data.get("reward", []))
        return FeeHistory(tuple(int(f) for f in data["baseFeePerGas"]), rewards)

    async def gas_price(self) -> int:
        return int(await self._call(lambda w3: w3.eth.gas_price))

    async def max_priority_fee(self) -> int:
        """The node's own tip suggestion (`eth_maxPriorityFeePerGas`)."""
        return int(await self._call(lambda w3: w3.eth.max_priority_fee))

    async def estimate_gas(self, sender: str, to: str, value: int, data: bytes) -> int:
        """Gas `eth_estimateGas` says the call needs; `CallReverted` with the reason if it
        would revert (a token transfer from an empty or blocked account, say)."""
        params: TxParams = {
            "from": checksum_address("sender", sender),
            "to": checksum_address("to", to),
            "value": Wei(value),
            "data": HexBytes(data),
        }
        try:
            return int(await self._call(lambda w3: w3.eth.estimate_gas(params)))
        except self._answers as exc:
            revert = _revert_data(exc)
            if revert is None:
                raise ChainError(f"eth_estimateGas failed: {_message(exc)[:200]}") from exc
            reason = revert_reason(revert) if revert else _message(exc)[:200]
            raise CallReverted(reason) from exc

    async def receipt(self, tx_hash: bytes) -> Receipt | None:
        """The receipt of a mined transaction, None while it is not mined (or unknown)."""
        try:
            data = await self._call(lambda w3: w3.eth.get_transaction_receipt(HexBytes(tx_hash)))
        except TransactionNotFound:
            return None
        if data is None or data.get("blockNumber") is None:
            return None
        return receipt_of(data)

    async def block_hash(self, number: int) -> bytes | None:
        """The hash of block `number` on the node's canonical chain (None past its head)."""
        try:
            block = await self._call(lambda w3: w3.eth.get_block(number))
        except Web3Exception:
            return None
        return bytes(block["hash"])

    async def block(self, number: int) -> Block | None:
        """Block `number` of the node's canonical chain with its transactions (None past the
        head)."""
        try:
            data = await self._call(lambda w3: w3.eth.get_block(number, full_transactions=True))
        except BlockNotFound:
            return None
        transfers = []
        for item in data["transactions"]:
            tx: Any = item  # full transactions were asked for: each is a dict, never a hash
            to = tx.get("to")
            if to and int(tx["value"]) > 0:
                transfers.append(
                    (
                        bytes(tx["hash"]),
                        to_checksum_address(tx["from"]),
                        to_checksum_address(to),
                        int(tx["value"]),
                    )
                )
        return Block(
            int(data["number"]), bytes(data["hash"]), bytes(data["parentHash"]), tuple(transfers)
        )

    async def logs(
        self, first: int, last: int, addresses: Sequence[str], topic0: bytes
    ) -> list[Log]:
        """`eth_getLogs` of the contracts `addresses` in blocks first..last with topic0."""
        params: Any = {
            "fromBlock": first,
            "toBlock": last,
            "address": [checksum_address("address", a) for a in addresses],
            "topics": ["0x" + topic0.hex()],
        }
        found = await self._call(lambda w3: w3.eth.get_logs(params))
        return [
            Log(
                block_number=int(log["blockNumber"]),
                block_hash=bytes(log["blockHash"]),
                tx_hash=bytes(log["transactionHash"]),
                log_index=int(log["logIndex"]),
                address=to_checksum_address(log["address"]),
                topics=tuple(bytes(t) for t in log["topics"]),
                data=bytes(log["data"]),
            )
            for log in found
            if not log.get("removed")
        ]

    async def revert_reason_of(self, tx_hash: bytes, block_number: int) -> str:
        """Why a mined transaction reverted: its call replayed on the state its block left
        (what made it fail earlier in that block is in it; its own effects were undone), then
        on the parent's state."""
        tx = await self._call(lambda w3: w3.eth.get_transaction(HexBytes(tx_hash)))
        params: TxParams = {
            "from": tx["from"],
            "to": tx["to"],
            "value": tx["value"],
            "data": tx["input"],
            "gas": tx["gas"],
        }
        for block in (block_number, block_number - 1):
            try:
                await self._call(lambda w3, at=block: w3.eth.call(params, at))  # type: ignore[misc]
            except self._answers as exc:
                revert = _revert_data(exc)
                if revert is not None:
                    return revert_reason(revert) if revert else _message(exc)[:200]
                return _message(exc)[:200]
        # The call succeeds on both states: it ran out of gas, or a later transaction of its
        # block undid what made it fail.
        return "no reason found on replay (out of gas?)"

    # --- sending ---------------------------------------------------------------------------
    async def send_raw(self, raw_signed_tx: bytes) -> bytes:
        """Submit signed bytes and return their hash.  Sending bytes the node already holds is
        not an error (a re-send after a crash is idempotent); a refusal raises
        `TransactionRejected`, with `nonce_too_low` when the nonce is already used and
        `nonce_too_high` when an earlier nonce of the account has not reached the node."""
        tx_hash = transaction_hash(raw_signed_tx)
        try:
            sent = bytes(await self._call(lambda w3: w3.eth.send_raw_transaction(raw_signed_tx)))
        except self._answers as exc:
            message = _message(exc)
            lowered = message.lower()
            if any(text in lowered for text in _ALREADY_KNOWN):
                return tx_hash
            raise TransactionRejected(
                message[:300],
                tx_hash,
                nonce_too_low=any(text in lowered for text in _NONCE_TOO_LOW),
                nonce_too_high=any(text in lowered for text in _NONCE_TOO_HIGH),
            ) from exc
        if sent != tx_hash:
            raise ChainError(f"the chain reports hash 0x{sent.hex()} for 0x{tx_hash.hex()}")
        return tx_hash

    async def known(self, tx_hash: bytes) -> bool:
        """Whether the node knows the transaction at all (pending or mined)."""
        try:
            await self._call(lambda w3: w3.eth.get_transaction(HexBytes(tx_hash)))
        except TransactionNotFound:
            return False
        return True
