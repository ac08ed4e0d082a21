"""Key management under the policy: which wallet a new key belongs to, and who may move a key.

* A wallet's DKG names a wallet of the policy in force; the node binds that wallet to the key
  for good (`KeyBindingRow`, written in the transaction that stores the share) and refuses a
  second key for the same wallet (WALLET_BOUND).  A DKG that names no wallet makes a raw key,
  and only a node made with `--raw-keys` (benchmarks, protocol tests) accepts one.
* A re-share or refresh of a wallet's key needs the signatures of the policy's quorum of
  officers over the plan (`policies.governance.key_plan_statement`: key version, dealers, new
  committee, threshold, wallet, policy hash), checked by every node before it takes part
  (PLAN_UNAUTHORISED).  A new committee member binds the key to the plan's wallet.
"""

from __future__ import annotations

import time

from sqlmodel import col, select

from policies.errors import PolicyError
from policies.governance import key_plan_statement, require_quorum
from policies.keys import Purpose
from signer.node import codec
from signer.node.api import SessionProtocol
from signer.node.errors import NodeError
from signer.node.governance import NodeGovernance
from signer.node.policy_tables import KeyBindingRow
from signer.node.spec import SessionSpec
from signer.node.store import NodeStore
from signer.problems import ErrorCode


class KeyGate:
    def __init__(self, store: NodeStore, governance: NodeGovernance, *, raw_keys: bool) -> None:
        self.store = store
        self.governance = governance
        self.raw_keys = raw_keys

    def _raw_allowed(self) -> None:
        if not self.raw_keys:
            raise NodeError(
                ErrorCode.RAW_SIGNING_REFUSED,
                "this node holds no raw keys (it was not made with --raw-keys): name a wallet "
                "of the policy",
                check="raw_key",
            )

    def _wallet_of_policy(self, wallet: str) -> str:
        link = self.governance.require_policy()
        if link.document.wallet(wallet) is None:
            raise NodeError(
                ErrorCode.POLICY_DENIED,
                f"{wallet!r} is not a wallet of policy version {link.version}",
                check="wallet",
                policy_hash=link.policy_hash,
            )
        return link.policy_hash

    def new_key(self, spec: SessionSpec) -> KeyBindingRow:
        """The binding a keygen will store with its key (checked before the DKG runs)."""
        key_id = spec.key_id.hex()
        with self.store.session() as session:
            if session.get(KeyBindingRow, key_id) is not None:
                raise NodeError(
                    ErrorCode.WALLET_BOUND, f"key {key_id[:16]} is already bound", check="key"
                )
            if spec.wallet:
                bound = session.exec(
                    select(KeyBindingRow).where(col(KeyBindingRow.wallet) == spec.wallet)
                ).first()
                if bound is not None:
                    raise NodeError(
                        ErrorCode.WALLET_BOUND,
                        f"wallet {spec.wallet!r} already has key {bound.key_id[:16]}",
                        check="wallet",
                    )
        if not spec.wallet:
            self._raw_allowed()
            return KeyBindingRow(key_id=key_id, wallet=None, policy_hash=None, bound_at=time.time())
        policy_hash = self._wallet_of_policy(spec.wallet)
        return KeyBindingRow(
            key_id=key_id, wallet=spec.wallet, policy_hash=policy_hash, bound_at=time.time()
        )

    def plan(self, spec: SessionSpec) -> KeyBindingRow | None:
        """Check a re-share or refresh before this node takes part; the binding a new member
        stores with its share (None: this node already holds the key's binding)."""
        key_id = spec.key_id.hex()
        with self.store.session() as session:
            binding = session.get(KeyBindingRow, key_id)
        if binding is not None and (binding.wallet or "") != spec.wallet:
            raise NodeError(
                ErrorCode.WALLET_BOUND,
                f"key {key_id[:16]} is bound to {binding.wallet or 'no wallet (raw)'}, not "
                f"{spec.wallet or 'no wallet (raw)'}",
                check="wallet",
            )
        if not spec.wallet:
            self._raw_allowed()  # raw keys live on test and benchmark clusters only
            if binding is not None:
                return None
            return KeyBindingRow(key_id=key_id, wallet=None, policy_hash=None, bound_at=time.time())
        policy_hash = self._wallet_of_policy(spec.wallet)
        link = self.governance.require_policy()
        old = codec.decode_key_public(spec.plan_old)
        statement = key_plan_statement(
            key_id=key_id,
            epoch=old.epoch,
            protocol=str(spec.protocol),
            old_parties=old.parties,
            dealers=spec.dealers,
            new_parties=spec.new_parties,
            threshold=spec.threshold,
            wallet=spec.wallet,
            policy_hash=policy_hash,
        )
        verb = "refresh" if spec.protocol == SessionProtocol.REFRESH else "re-share"
        try:
            require_quorum(
                f"{verb} key {key_id[:16]} of wallet {spec.wallet}",
                link.document.governance.quorum,
                link.document,
                Purpose.KEY_PLAN,
                statement,
                spec.authorization,
            )
        except PolicyError as exc:
            raise NodeError(
                ErrorCode.PLAN_UNAUTHORISED, str(exc), check="plan_quorum", policy_hash=policy_hash
            ) from exc
        if binding is not None:
            return None
        return KeyBindingRow(
            key_id=key_id, wallet=spec.wallet, policy_hash=policy_hash, bound_at=time.time()
        )
