"""Signing wallet transactions: what the coordinator sends so that every node can decide alone.

For a policy wallet the coordinator never asks for a signature on bytes.  It sends each signer
the unsigned transaction, the request id and initiator, the intent it claims the transaction is
(the node decodes it itself and refuses a different one), the officers' approvals and the
sender the transaction is from (the node derives it from its own key and the presignature's
path).  Before a velocity-limited intent it first collects receipts from the committee
(signer/node/receipts.py): every node reserves the amount in its own ledger, and a signer needs
q of them.  The coordinator relays all of it and can forge none of it.

It also relays the officers' policy chain to the nodes (`relay_governance`), and reads the
policy in force from them to build the intent it claims (`active_policy`): the nodes enforce
their own copy, so a stale or wrong claim only makes them refuse.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum

from coordinator.client import NodeRefused, NodeUnavailable
from coordinator.errors import SigningFailed, SignRequestInvalid
from coordinator.signing import SigningOps, SignOutcome
from coordinator.specs import plan_statement
from coordinator.store import WalletRow
from policies.approvals import Approval
from policies.bundle import GovernanceBundle
from policies.document import PolicyDocument, parse_policy
from policies.errors import PolicyError
from policies.governance import KeyPlan
from signer.chains.allowance import read_allowance
from signer.chains.errors import TransactionRefused
from signer.chains.evm import Transfer, address_of
from signer.chains.intent import DecodedTransaction, decode_transaction, intent_of
from signer.chains.internal import read_internal
from signer.chains.replacement import is_cancellation
from signer.node import codec
from signer.node.api import (
    REQUEST_ID_PATTERN,
    AllowanceRequest,
    CancellationRequest,
    GovernanceReply,
    InternalTransferRequest,
    SignReply,
    SignRequest,
    TransactionRequest,
    VelocityReceipt,
)
from signer.node.receipts import receipt_quorum
from signer.problems import ErrorCode
from signer.protocol.hd import derive
from signer.protocol.sign import HashScheme

#: How long the coordinator reuses the policy it read from the nodes before asking again.  It
#: only shapes the claim it sends: a node decides on its own copy, and a claim built on a
#: version the nodes left behind is refused, never signed.
POLICY_CACHE_SECONDS = 5.0


class _Route(Enum):
    """The node route of a wallet transaction that moves nothing."""

    CANCEL = "/v1/sign/cancel"
    ALLOWANCE = "/v1/sign/allowance"
    INTERNAL = "/v1/sign/internal"


class TransactionOps(SigningOps):
    #: The policy version last read from the nodes (`active_policy`), and when.
    _policy: PolicyDocument | None = None
    _policy_read: float = 0.0

    async def relay_governance(self, bundle: GovernanceBundle) -> dict[int, GovernanceReply]:
        """Hand the officers' documents to every node (each checks them itself); a node that
        refuses or is down is reported, not retried (an officer can push to it directly)."""
        replies = await asyncio.gather(
            *(self.clients[i].relay_governance(bundle) for i in self.parties),
            return_exceptions=True,
        )
        out: dict[int, GovernanceReply] = {}
        failed: list[BaseException] = []
        for index, reply in zip(self.parties, replies, strict=True):
            if isinstance(reply, BaseException):
                failed.append(reply)
            else:
                out[index] = reply
        if failed and not out:
            raise failed[0]
        return out

    async def sync_governance(self) -> dict[int, GovernanceReply]:
        """Bring lagging nodes up to the most advanced one: read every node's accepted chain
        and relay the longest to all (each node re-checks it; one that is ahead keeps its own
        version, since a node never goes back)."""
        bundles = await asyncio.gather(
            *(self.clients[i].governance_chain() for i in self.parties), return_exceptions=True
        )
        found = [b for b in bundles if isinstance(b, GovernanceBundle)]
        if not found:
            failed = [b for b in bundles if isinstance(b, BaseException)]
            raise failed[0] if failed else SigningFailed(["no node"], ErrorCode.NO_POLICY)
        newest = max(found, key=lambda b: (len(b.versions), len(b.freezes)))
        return await self.relay_governance(newest)

    async def active_policy(self) -> PolicyDocument:
        """The policy version the nodes enforce, read from the first node that answers (used
        only to build the claimed intent: the nodes decide on their own copy)."""
        if self._policy is not None and time.monotonic() - self._policy_read < POLICY_CACHE_SECONDS:
            return self._policy
        problems: list[str] = []
        for index in self.parties:
            try:
                status = await self.clients[index].governance()
                if status.policy_hash is None:
                    problems.append(f"node {index}: no policy in force")
                    continue
                if self._policy is not None and self._policy.policy_hash() == status.policy_hash:
                    self._policy_read = time.monotonic()
                    return self._policy
                bundle = await self.clients[index].governance_chain()
            except (NodeUnavailable, NodeRefused) as exc:
                problems.append(str(exc))
                continue
            for doc in bundle.versions:
                try:
                    document = parse_policy(doc.document, source=f"node {index}")
                except PolicyError:
                    continue
                if document.policy_hash() == status.policy_hash:
                    self._policy, self._policy_read = document, time.monotonic()
                    return document
            problems.append(f"node {index}: its chain lacks the version it reports")
        raise SigningFailed(problems or ["no node"], ErrorCode.NO_POLICY)

    async def key_plan(
        self,
        wallet_name: str,
        new_parties: Sequence[int] | None = None,
        new_threshold: int | None = None,
        dealers: Sequence[int] | None = None,
        *,
        refresh: bool = False,
    ) -> KeyPlan:
        """The plan officers sign (`tessera officer approve-plan`) before `reshare` or
        `refresh` of a policy wallet's key; defaults: the same committee, threshold and
        dealers (a refresh)."""
        wallet = self.store.wallet(wallet_name)
        if wallet.policy_wallet is None:
            raise SignRequestInvalid(f"wallet {wallet_name!r} is a raw key: no plan to authorise")
        key = codec.decode_key_public(wallet.key_public)
        policy = await self.active_policy()
        statement = plan_statement(
            wallet,
            tuple(sorted(dealers if dealers is not None else key.parties)),
            tuple(sorted(new_parties if new_parties is not None else key.parties)),
            new_threshold if new_threshold is not None else key.threshold,
            refresh=refresh,
            policy_hash=policy.policy_hash(),
        )
        return KeyPlan.model_validate(statement)

    async def sign_transaction(
        self,
        wallet_name: str,
        payload: bytes,
        *,
        request_id: str,
        initiator: str,
        approvals: Sequence[Approval] = (),
        path: Sequence[int] = (),
        preferred: tuple[int, ...] | None = None,
    ) -> SignOutcome:
        """A verified signature of the unsigned transaction `payload` (its signing payload, as
        `signer.chains.evm` encodes it) by the policy wallet's key along `path`, which every
        signer's policy allowed."""
        # One log record and one metric per request, a refusal before any node signs included.
        return await self._observed(
            wallet_name,
            lambda: self._sign_transaction(
                wallet_name, payload, request_id, initiator, approvals, path, preferred
            ),
        )

    async def _sign_transaction(
        self,
        wallet_name: str,
        payload: bytes,
        request_id: str,
        initiator: str,
        approvals: Sequence[Approval],
        path: Sequence[int],
        preferred: tuple[int, ...] | None,
    ) -> SignOutcome:
        wallet = self.store.wallet(wallet_name)
        if wallet.policy_wallet is None:
            raise SignRequestInvalid(
                f"wallet {wallet_name!r} is a raw key: it signs no transaction",
                ErrorCode.RAW_SIGNING_REFUSED,
            )
        policy = await self.active_policy()
        decoded = self._decode(payload, policy, wallet, request_id, initiator)
        key = codec.decode_key_public(wallet.key_public)
        sender = address_of(derive(key.public_key, key.chain_code, tuple(path)).public_key)
        base = TransactionRequest(
            key_id=wallet.key_id,
            transaction=payload.hex(),
            request_id=request_id,
            initiator=initiator,
            intent=decoded.intent.model_dump(mode="json"),
            approvals=[approval.to_json_object() for approval in approvals],
        )
        receipts: list[VelocityReceipt] = []
        excluded: frozenset[int] = frozenset()
        limits = policy.limits_for(wallet.policy_wallet, decoded.intent.asset)
        if limits:
            needed = receipt_quorum(limits, len(key.parties), key.threshold)
            receipts = await self.collect_receipts(base, key.parties, needed)
            # a signer must hold its own reservation: sign among the nodes that issued one
            excluded = frozenset(key.parties) - {r.node for r in receipts}

        def ask(index: int, presignature_id: str) -> Awaitable[SignReply]:
            request = SignRequest(
                **base.model_dump(),
                presignature_id=presignature_id,
                sender=sender,
                receipts=receipts,
            )
            return self.clients[index].sign_transaction(request)

        return await self._sign(
            wallet_name, payload, HashScheme.KECCAK256, path, preferred, ask, excluded, wallet
        )

    async def sign_cancellation(
        self,
        wallet_name: str,
        payload: bytes,
        *,
        request_id: str,
        path: Sequence[int] = (),
    ) -> SignOutcome:
        """A verified signature of `payload`, a cancellation (a 0-value self-send at the same
        nonce, signer/chains/replacement.py) of what the nodes signed for `request_id`: every
        signer checks it cancels what it signed itself, from the same address."""

        async def precheck(transfer: Transfer, sender: str) -> None:
            if not is_cancellation(transfer, sender):
                raise SignRequestInvalid(
                    "a cancellation is a 0-value self-send with no calldata",
                    ErrorCode.CANCEL_REFUSED,
                )

        return await self._observed(
            wallet_name,
            lambda: self._sign_moving_nothing(
                wallet_name, payload, request_id, tuple(path), precheck, _Route.CANCEL
            ),
        )

    async def sign_allowance(
        self,
        wallet_name: str,
        payload: bytes,
        *,
        request_id: str,
        path: Sequence[int] = (),
    ) -> SignOutcome:
        """A verified signature of `payload`, an ERC-20 `approve` of a policy token to the
        policy's disperse contract: the allowance a token batch spends (every signer reads it
        itself, signer/chains/allowance.py)."""

        async def precheck(transfer: Transfer, sender: str) -> None:
            try:
                read_allowance(transfer, await self.active_policy())
            except TransactionRefused as exc:
                raise SignRequestInvalid(f"{exc.check}: {exc.detail}", exc.code) from exc

        return await self._observed(
            wallet_name,
            lambda: self._sign_moving_nothing(
                wallet_name, payload, request_id, tuple(path), precheck, _Route.ALLOWANCE
            ),
        )

    async def sign_internal(
        self,
        wallet_name: str,
        payload: bytes,
        *,
        request_id: str,
        path: Sequence[int],
        destination_path: Sequence[int],
    ) -> SignOutcome:
        """A verified signature of `payload`, a transfer from the wallet's address at `path` to
        its address at `destination_path` (a deposit address's sweep, or its gas): every signer
        derives the recipient itself and signs nothing else (signer/chains/internal.py)."""
        to_path = tuple(destination_path)

        async def precheck(transfer: Transfer, sender: str) -> None:
            key = codec.decode_key_public(self.store.wallet(wallet_name).key_public)
            destination = address_of(derive(key.public_key, key.chain_code, to_path).public_key)
            try:
                read_internal(
                    transfer, await self.active_policy(), sender=sender, destination=destination
                )
            except TransactionRefused as exc:
                raise SignRequestInvalid(f"{exc.check}: {exc.detail}", exc.code) from exc

        return await self._observed(
            wallet_name,
            lambda: self._sign_moving_nothing(
                wallet_name,
                payload,
                request_id,
                tuple(path),
                precheck,
                _Route.INTERNAL,
                destination_path=list(to_path),
            ),
        )

    async def _sign_moving_nothing(
        self,
        wallet_name: str,
        payload: bytes,
        request_id: str,
        path: tuple[int, ...],
        precheck: Callable[[Transfer, str], Awaitable[None]],
        route: _Route,
        **extra: object,
    ) -> SignOutcome:
        """Sign a wallet transaction that moves nothing (no intent, approvals or receipts):
        `precheck` refuses, before a presignature is taken, what every node would refuse."""
        if not isinstance(request_id, str) or not re.fullmatch(REQUEST_ID_PATTERN, request_id):
            raise SignRequestInvalid("the request id is not a valid request id")
        wallet = self.store.wallet(wallet_name)
        if wallet.policy_wallet is None:
            raise SignRequestInvalid(
                f"wallet {wallet_name!r} is a raw key: it signs no transaction",
                ErrorCode.RAW_SIGNING_REFUSED,
            )
        key = codec.decode_key_public(wallet.key_public)
        sender = address_of(derive(key.public_key, key.chain_code, path).public_key)
        try:
            transfer = decode_transaction(payload)
        except TransactionRefused as exc:
            raise SignRequestInvalid(f"{exc.check}: {exc.detail}", exc.code) from exc
        await precheck(transfer, sender)

        def ask(index: int, presignature_id: str) -> Awaitable[SignReply]:
            fields = {
                "key_id": wallet.key_id,
                "transaction": payload.hex(),
                "request_id": request_id,
                "presignature_id": presignature_id,
                "sender": sender,
                **extra,
            }
            client = self.clients[index]
            if route is _Route.CANCEL:
                return client.sign_cancellation(CancellationRequest.model_validate(fields))
            if route is _Route.INTERNAL:
                return client.sign_internal(InternalTransferRequest.model_validate(fields))
            return client.sign_allowance(AllowanceRequest.model_validate(fields))

        return await self._sign(
            wallet_name, payload, HashScheme.KECCAK256, path, None, ask, frozenset(), wallet
        )

    @staticmethod
    def _decode(
        payload: bytes,
        policy: PolicyDocument,
        wallet: WalletRow,
        request_id: str,
        initiator: str,
    ) -> DecodedTransaction:
        try:
            return intent_of(
                payload,
                policy,
                wallet=wallet.policy_wallet or "",
                request_id=request_id,
                initiator=initiator,
            )
        except TransactionRefused as exc:
            # Every node would refuse it the same way: say so before a presignature is taken.
            raise SignRequestInvalid(f"{exc.check}: {exc.detail}", exc.code) from exc

    async def collect_receipts(
        self, request: TransactionRequest, committee: Sequence[int], needed: int
    ) -> list[VelocityReceipt]:
        """Receipts from every committee node that gives one; fewer than `needed` fails with
        the most telling refusal (a node's policy refusal is final)."""
        replies = await asyncio.gather(
            *(self.clients[i].receipt(request) for i in committee), return_exceptions=True
        )
        receipts = [r for r in replies if isinstance(r, VelocityReceipt)]
        refusals = [r for r in replies if isinstance(r, NodeRefused)]
        if len(receipts) >= needed:
            return receipts
        attempts = [str(r) for r in replies if isinstance(r, BaseException)]
        if refusals:
            first = refusals[0]
            raise SigningFailed(attempts, first.code, refusal=first)
        raise SigningFailed(attempts, ErrorCode.RECEIPTS_MISSING)
