"""Setting up and opening a node: its directory, token, database, keys and pinned roster.

A node directory holds (mode 0700):

  node.json        node id, party index, URL, listen address, file names below
  token/           the node's own SoftHSM2 token (tessera-hsm.json: how to reach it)
  hsm-pin          the token's user PIN (0600; or an environment variable, see docs/nodes.md)
  api-token        bearer token the coordinator must present (0600)
  node.db          SQLite: public data and HSM-sealed secrets only
  card.json        the node's self-signed card (identity key, X25519 key, URL) for peers to pin
  velocity.db      SQLite: the node's own velocity ledger (policies.velocity)

`init_node` creates all of it once; `NodeRuntime.open` opens it for `tessera node run`.  The
roster (every node's card) is pinned once, at cluster set-up, and never changes afterwards.
The genesis policy hash is pinned the same way, at `init_node`, by the operator: the node then
accepts the officers' policy chain from that genesis on (signer/node/governance.py).  A node
made with `raw_keys` may also hold keys that belong to no wallet and sign raw bytes (benchmarks
and protocol tests); a wallet key never can.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hsm.config import HsmConfig
from hsm.keystore import KeyStore
from hsm.softhsm import init_token
from signer.errors import TesseraError
from signer.node.audit import IdentitySigner
from signer.node.enforcement import Enforcement
from signer.node.envelope import Endpoint, EnvelopeRejected, NodeCard, Roster
from signer.node.metrics import NodeMetrics
from signer.node.service import NodeService
from signer.node.store import NodeStore
from signer.paillier import PaillierSecretKey
from signer.primes import PrimePool

CONFIG_FILE = "node.json"
_KEX_SETTING = "kex_private_sealed"
_CARD_SETTING = "card"
_ROSTER_SETTING = "roster"


class NodeSetupError(TesseraError):
    """A node directory that cannot be created or opened; `path` names the culprit file."""

    def __init__(self, path: Path | str, detail: str) -> None:
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{path}: {detail}")


@dataclass(frozen=True)
class NodeConfig:
    directory: Path
    node_id: str
    index: int
    url: str
    host: str
    port: int
    prime_pool: Path | None = None
    genesis_policy: str | None = None  # hex SHA-256 of the genesis policy version
    raw_keys: bool = False  # may hold keys of no wallet, which sign raw bytes

    @property
    def token_dir(self) -> Path:
        return self.directory / "token"

    @property
    def db_path(self) -> Path:
        return self.directory / "node.db"

    @property
    def api_token_path(self) -> Path:
        return self.directory / "api-token"

    @property
    def velocity_path(self) -> Path:
        return self.directory / "velocity.db"

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "index": self.index,
            "url": self.url,
            "host": self.host,
            "port": self.port,
            "prime_pool": None if self.prime_pool is None else str(self.prime_pool),
            "genesis_policy": self.genesis_policy,
            "raw_keys": self.raw_keys,
        }

    @classmethod
    def load(cls, directory: Path) -> NodeConfig:
        path = directory / CONFIG_FILE
        try:
            doc = json.loads(path.read_text())
            index = doc["index"]
            port = doc["port"]
            if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= 255:
                raise ValueError("index must be an integer in 1..255")
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise ValueError("port must be an integer in 1..65535")
            pool = doc.get("prime_pool")
            genesis = doc.get("genesis_policy")
            if genesis is not None and not _is_hash(genesis):
                raise ValueError("genesis_policy must be 64 lowercase hex digits")
            raw_keys = doc.get("raw_keys", False)
            if not isinstance(raw_keys, bool):
                raise ValueError("raw_keys must be true or false")
            return cls(
                directory=directory,
                node_id=str(doc["node_id"]),
                index=index,
                url=str(doc["url"]),
                host=str(doc["host"]),
                port=port,
                prime_pool=None if pool is None else Path(pool),
                genesis_policy=genesis,
                raw_keys=raw_keys,
            )
        except FileNotFoundError as exc:
            raise NodeSetupError(path, "not a node directory (run `tessera node init`)") from exc
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise NodeSetupError(path, f"malformed node config: {exc}") from exc


def _is_hash(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")


def _token_label(node_id: str) -> str:
    return f"tessera-{node_id}"[:32]


def init_node(
    directory: Path,
    node_id: str,
    index: int,
    *,
    host: str = "127.0.0.1",
    port: int,
    url: str | None = None,
    prime_pool: Path | None = None,
    genesis_policy: str | None = None,
    raw_keys: bool = False,
) -> NodeCard:
    """Create a node directory: token with KEK and identity key, X25519 key (sealed), API
    token, database and self-signed card, with the genesis policy hash pinned.  Refuses an
    existing node directory."""
    if (directory / CONFIG_FILE).exists():
        raise NodeSetupError(directory, "already a node directory")
    if genesis_policy is not None and not _is_hash(genesis_policy):
        raise NodeSetupError(directory, "the genesis policy hash must be 64 lowercase hex digits")
    if not 1 <= index <= 255:
        raise NodeSetupError(directory, f"party index {index} not in 1..255")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = NodeConfig(
        directory,
        node_id,
        index,
        url or f"http://{host}:{port}",
        host,
        port,
        prime_pool,
        genesis_policy,
        raw_keys,
    )
    pin_file = directory / "hsm-pin"
    pin = secrets.token_urlsafe(24)
    _write_secret(pin_file, pin)
    hsm = init_token(
        config.token_dir,
        _token_label(node_id),
        pin,
        secrets.token_urlsafe(24),
        pin_file=pin_file,
    )
    hsm.save(config.token_dir / "tessera-hsm.json")
    _write_secret(config.api_token_path, secrets.token_hex(32))
    with KeyStore.open(hsm) as keystore:
        keystore.ensure_node_keys(node_id)
        store = NodeStore(config.db_path)
        try:
            kex = X25519PrivateKey.generate()
            raw = kex.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            sealed = keystore.seal(
                raw, node_id=node_id, key_id="kex", share_version=0, purpose="x25519"
            )
            store.set_setting(_KEX_SETTING, sealed)
            card = NodeCard(
                node_id,
                index,
                keystore.identity_public_key(),
                kex.public_key().public_bytes(
                    serialization.Encoding.Raw, serialization.PublicFormat.Raw
                ),
                config.url,
            ).signed_by(keystore)
            store.set_setting(_CARD_SETTING, json.dumps(card.to_dict()).encode())
        finally:
            store.close()
    (directory / "card.json").write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_json(), indent=2) + "\n")
    return card


def paillier_source(pool: Path | None) -> Callable[[], PaillierSecretKey]:
    """Fresh Paillier keys for aux-info: from the operator's prime pool when it has a pair
    (`tessera primes generate`), else generated on the spot (≈ 4 s)."""

    def take() -> PaillierSecretKey:
        if pool is not None and len(PrimePool(pool)) >= 2:
            p, q = PrimePool(pool).take(2)
            return PaillierSecretKey.from_primes(p, q)
        return PaillierSecretKey.generate()

    return take


class NodeRuntime:
    """An opened node: keystore logged in, database open, roster pinned (or not yet)."""

    def __init__(self, config: NodeConfig, keystore: KeyStore, store: NodeStore) -> None:
        self.config = config
        self.keystore = keystore
        self.store = store
        self.api_token = config.api_token_path.read_text().strip()
        card_doc = store.setting(_CARD_SETTING)
        if card_doc is None:
            raise NodeSetupError(config.db_path, "no node card (initialisation incomplete)")
        self.card = NodeCard.from_dict(json.loads(card_doc))
        if self.card.identity != keystore.identity_public_key():
            raise NodeSetupError(config.db_path, "card does not match the token's identity key")
        sealed = store.setting(_KEX_SETTING)
        if sealed is None:
            raise NodeSetupError(config.db_path, "no key-agreement key")
        raw = keystore.unseal(
            sealed, node_id=config.node_id, key_id="kex", share_version=0, purpose="x25519"
        )
        self._kex = X25519PrivateKey.from_private_bytes(raw)
        # One registry per node process (not the global default): several runtimes in one
        # test process must not collide.  The HSM histogram is this keystore's own.
        self.metrics = NodeMetrics()
        self.metrics.watch_store(store)
        self.metrics.watch_hsm(keystore.metrics)
        # The audit log and the policy live with the runtime, not the service: governance
        # documents are accepted (and audited) before a roster is pinned.
        self.enforcement = Enforcement.open(
            store,
            genesis=config.genesis_policy,
            raw_keys=config.raw_keys,
            signer=IdentitySigner(keystore, config.node_id),
            ledger_path=config.velocity_path,
        )
        self.audit = self.enforcement.audit
        self.governance = self.enforcement.governance
        self.metrics.watch_policy(self.governance.status)
        self.service: NodeService | None = None
        #: The stored roster the service was last given (reload_roster compares, not parses).
        self._roster_seen: bytes | None = None
        roster = store.setting(_ROSTER_SETTING)
        if roster is not None:
            self._activate(roster_from_json(json.loads(roster)))
            self._roster_seen = roster

    @classmethod
    def open(cls, directory: Path) -> NodeRuntime:
        config = NodeConfig.load(directory)
        hsm = HsmConfig.load(config.token_dir / "tessera-hsm.json")
        keystore = KeyStore.open(hsm)
        try:
            keystore.load_node_keys(config.node_id)
            return cls(config, keystore, NodeStore(config.db_path))
        except BaseException:
            keystore.close()
            raise

    def close(self) -> None:
        self.enforcement.close()
        self.store.close()
        self.keystore.close()

    def pin(self, roster: Roster) -> None:
        """Pin the cluster roster over the API: once (the same roster again is accepted, any
        other refused).  Growing it later is a local operator action (`grow_roster`)."""
        mine = roster.cards.get(self.config.index)
        if mine is None or mine != self.card:
            raise EnvelopeRejected(self.config.index, "FORMAT", "roster lacks this node's card")
        encoded = json.dumps(roster_to_json(roster), sort_keys=True).encode()
        self.store.set_setting(_ROSTER_SETTING, encoded)  # raises if another roster is pinned
        if self.service is None:
            self._activate(roster)
        self._roster_seen = encoded

    def reload_roster(self) -> None:
        """Pick up a roster grown by the operator (`tessera node pin`) since start-up."""
        stored = self.store.setting(_ROSTER_SETTING)
        if stored is None or stored == self._roster_seen:
            return  # unchanged since the last request: its cards were verified then
        roster = roster_from_json(json.loads(stored))
        if self.service is None:
            self._activate(roster)
        elif self.service.endpoint.roster != roster:
            self.service.endpoint.roster = roster
        self._roster_seen = stored  # only once in use: a failed activation is tried again

    def _activate(self, roster: Roster) -> None:
        endpoint = Endpoint(self.config.index, self.keystore, self._kex, roster)
        self.service = NodeService(
            self.config.node_id,
            self.config.index,
            self.store,
            self.keystore,
            endpoint,
            paillier_source(self.config.prime_pool),
            self.metrics,
            self.enforcement,
        )


def grow_roster(directory: Path, roster: Roster) -> None:
    """Pin `roster` on the node in `directory` as the operator, locally: allowed at genesis, or
    to add nodes — every card already pinned must stay exactly as it is, under the same cluster
    id.  Not reachable over the API, so a compromised coordinator cannot add nodes of its own
    (a re-share to them would hand it the key)."""
    config = NodeConfig.load(directory)
    store = NodeStore(config.db_path)
    try:
        card_doc = store.setting(_CARD_SETTING)
        if card_doc is None:
            raise NodeSetupError(config.db_path, "no node card (initialisation incomplete)")
        card = NodeCard.from_dict(json.loads(card_doc))
        if roster.cards.get(config.index) != card:
            raise NodeSetupError(directory, "the roster lacks this node's own card")
        stored = store.setting(_ROSTER_SETTING)
        if stored is not None:
            current = roster_from_json(json.loads(stored))
            if current.cluster_id != roster.cluster_id:
                raise NodeSetupError(directory, "the roster is for another cluster")
            changed = [i for i, c in current.cards.items() if roster.cards.get(i) != c]
            if changed:
                raise NodeSetupError(directory, f"pinned cards {changed} would change or vanish")
        encoded = json.dumps(roster_to_json(roster), sort_keys=True).encode()
        store.set_setting(_ROSTER_SETTING, encoded, overwrite=True)
    finally:
        store.close()


def roster_to_json(roster: Roster) -> dict[str, Any]:
    return {
        "cluster_id": roster.cluster_id.hex(),
        "cards": [roster.cards[i].to_dict() for i in sorted(roster.cards)],
    }


def roster_from_json(doc: Any) -> Roster:
    try:
        cluster_id = bytes.fromhex(str(doc["cluster_id"]))
        cards = [NodeCard.from_dict(card) for card in doc["cards"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise EnvelopeRejected(None, "FORMAT", f"malformed roster: {exc}") from exc
    if len(cluster_id) != 32:
        raise EnvelopeRejected(None, "FORMAT", "cluster id must be 32 bytes")
    return Roster(cluster_id, {card.index: card for card in cards})
