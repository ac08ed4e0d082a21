"""Wallets, their balances and their deposit addresses over the signer API (docs/api.md,
"Wallets").

Only policy wallets are shown (a raw key signs no transaction and holds nothing): each with its
own address — the key's root path, the same on every EVM chain — and the chains it may send on
(the policy's wallet chains that the registry configures).  Balances are read from the chains
at the time of the call (the native coin and every token the registry lists for the chain) for
that own address; a chain that does not answer is `503 CHAIN_UNAVAILABLE`, never a partial
list.  Deposit addresses are derived by `coordinator.deposits.DepositAddresses` from the public
key alone (no node is asked), each bound to its label (a customer reference): a label asked
again gets its address again.
"""

from __future__ import annotations

import asyncio
import secrets
from decimal import Decimal
from typing import Final

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from coordinator.api.models import (
    AssetBalance,
    DepositAddress,
    DepositAddressBatch,
    DepositAddressesCreate,
    WalletAddress,
    WalletBalances,
    WalletInfo,
)
from coordinator.api.withdrawals import WithdrawalError, WithdrawalService
from coordinator.deposits import DEPOSIT_BRANCH, DepositAddresses, DepositError
from coordinator.rpc import ChainRpc
from coordinator.store import DepositAddressRow, WalletRow
from policies.document import AMOUNT_CONTEXT, PolicyDocument, amount_str
from signer.errors import TesseraError
from signer.problems import ErrorCode

#: Attempts when a concurrent request takes the same child index meanwhile.
_ATTEMPTS: Final = 3


class WalletsView:
    """What the wallet routes answer, over the withdrawal service's store and payout engine."""

    def __init__(self, service: WithdrawalService) -> None:
        self.service = service

    def _row(self, name: str) -> WalletRow:
        for row in self.service.store.wallets():
            if row.name == name and row.policy_wallet is not None:
                return row
        raise WithdrawalError(ErrorCode.NOT_FOUND, f"no wallet {name[:64]}")

    def _chains(self, row: WalletRow, policy: PolicyDocument) -> list[int]:
        engine = self.service.engine
        wallet = policy.wallet(row.policy_wallet or row.name)
        if wallet is None:  # a wallet this policy version does not know sends nowhere
            return []
        return sorted(
            cid
            for cid in engine.registry.chain_ids()
            if cid in engine.rpcs and (wallet.chains is None or cid in wallet.chains)
        )

    def _info(self, row: WalletRow, policy: PolicyDocument, deposits: int) -> WalletInfo:
        address = self.service.engine.sender_of(row.name, ())
        chains = self._chains(row, policy)
        wallet = policy.wallet(row.policy_wallet or row.name)
        return WalletInfo(
            name=row.name,
            policy_wallet=row.policy_wallet or row.name,
            tier=None if wallet is None else wallet.tier,
            threshold=row.threshold,
            address=address,
            chains=chains,
            addresses=[WalletAddress(chain_id=cid, address=address) for cid in chains],
            deposit_addresses=deposits,
        )

    def _deposit_counts(self) -> dict[str, int]:
        with self.service.store.session() as session:
            rows = session.exec(
                select(DepositAddressRow.wallet, func.count()).group_by(DepositAddressRow.wallet)
            ).all()
        return {wallet: int(count) for wallet, count in rows}

    async def wallets(self) -> list[WalletInfo]:
        policy = await self.service.policy()
        counts = self._deposit_counts()
        rows = sorted(
            (r for r in self.service.store.wallets() if r.policy_wallet is not None),
            key=lambda r: r.name,
        )
        return [self._info(r, policy, counts.get(r.name, 0)) for r in rows]

    async def wallet(self, name: str) -> WalletInfo:
        row = self._row(name)
        policy = await self.service.policy()
        return self._info(row, policy, self._deposit_counts().get(row.name, 0))

    async def balances(self, name: str) -> WalletBalances:
        """The wallet's own address's balance of every asset of every chain it sends on."""
        row = self._row(name)
        policy = await self.service.policy()
        engine = self.service.engine
        address = engine.sender_of(row.name, ())

        async def of_chain(cid: int) -> list[AssetBalance]:
            chain, rpc = engine.registry.chain(cid), engine.rpcs[cid]
            assets: list[tuple[str, int, str | None]] = [
                (chain.native.symbol, chain.native.decimals, None)
            ]
            assets += [(s, t.decimals, t.address) for s, t in sorted(chain.tokens.items())]
            units = await asyncio.gather(
                *(_balance(rpc, cid, address, contract) for _s, _d, contract in assets)
            )
            return [
                AssetBalance(
                    chain_id=cid,
                    asset=symbol,
                    amount=amount_str(Decimal(held).scaleb(-decimals, AMOUNT_CONTEXT)),
                    units=str(held),
                    decimals=decimals,
                    contract=contract,
                )
                for (symbol, decimals, contract), held in zip(assets, units, strict=True)
            ]

        per_chain = await asyncio.gather(*(of_chain(c) for c in self._chains(row, policy)))
        return WalletBalances(
            wallet=row.name,
            address=address,
            balances=[b for chain in per_chain for b in chain],
        )

    async def deposit_addresses(
        self, name: str, request: DepositAddressesCreate
    ) -> DepositAddressBatch:
        """Derive (or give back, per label) `count` deposit addresses of the wallet."""
        row = self._row(name)
        policy = await self.service.policy()
        if request.chain_id not in self._chains(row, policy):
            raise WithdrawalError(
                ErrorCode.UNKNOWN_CHAIN,
                f"wallet {row.name} does not send on chain {request.chain_id} (not in the "
                "registry, or not the policy's)",
            )
        labels = request.labels
        if labels is None:
            # unlabelled: fresh addresses, bound to labels of their own (not idempotent)
            labels = [f"api-{secrets.token_hex(12)}" for _ in range(request.count)]
        elif len(labels) != request.count:
            raise WithdrawalError(
                ErrorCode.VALIDATION,
                f"labels: {len(labels)} given for count {request.count}: one label per address",
            )
        assigned = self._assign(row.name, labels)
        return DepositAddressBatch(
            wallet=row.name,
            chain_id=request.chain_id,
            items=[
                DepositAddress(
                    address=a.address,
                    label=a.customer_ref,
                    index=a.child,
                    path=f"m/{DEPOSIT_BRANCH}/{a.child}",
                )
                for a in assigned
            ],
        )

    def _assign(self, wallet: str, labels: list[str]) -> list[DepositAddressRow]:
        deposits = DepositAddresses(self.service.store)
        for _attempt in range(_ATTEMPTS):
            try:
                return deposits.assign(wallet, labels)
            except DepositError as exc:
                raise WithdrawalError(getattr(exc, "code", ErrorCode.VALIDATION), str(exc)) from exc
            except IntegrityError:
                continue  # a concurrent request took the next index (or a label) meanwhile
        raise WithdrawalError(
            ErrorCode.BUSY, "deposit addresses are being derived concurrently; ask again"
        )


async def _balance(rpc: ChainRpc, chain_id: int, address: str, contract: str | None) -> int:
    try:
        if contract is None:
            return await rpc.balance(address)
        return await rpc.token_balance(contract, address)
    except TesseraError as exc:
        raise WithdrawalError(
            ErrorCode.CHAIN_UNAVAILABLE, f"chain {chain_id} did not answer a balance read"
        ) from exc
