"""`tessera cluster …` and `tessera demo`: a local cluster of node processes, its wallets,
pools, signatures, quarantine mirror and metrics.

Every command takes `--json`: its result, or its error as `{"error": {"code", "detail"}}`, is
one JSON object on stdout (codes are `signer.problems.ErrorCode` values).  Exit codes: 0 done,
1 refused (by the coordinator or a node), 2 usage.  Long work (aux-info, wallet creation, pool
filling, the demo) shows progress on stderr unless `--json`.

Only typer and rich are imported at start-up: the engine, the cluster manager and the demo (and
with it the in-process EVM) are imported by the commands that use them, so `tessera --help`
and every other command group start fast.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from hsm import output
from hsm.output import EXIT_DONE, EXIT_REFUSED, JsonUsageGroup, emit
from signer.errors import TesseraError
from signer.problems import ErrorCode

if TYPE_CHECKING:
    from coordinator.cluster import LocalCluster
    from coordinator.demo import DemoReport
    from coordinator.engine import Coordinator
    from coordinator.store import WalletRow

T = TypeVar("T")

cluster_app = typer.Typer(
    cls=JsonUsageGroup,
    help=(
        "A local cluster: n key-share node processes on this machine, each with its own "
        "SoftHSM2 token and database, and the coordinator's database. `up` creates what is "
        "missing and starts the nodes; `status` shows them; `down` stops them."
    ),
    no_args_is_help=True,
)
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

#: Exit codes of every cluster command.

RootOption = Annotated[
    Path,
    typer.Option(
        "--dir", help="Cluster directory (cluster.json, nodes/, coordinator.db).", file_okay=False
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Machine-readable output (errors too) on stdout.")
]
WalletOption = Annotated[str, typer.Option("--wallet", help="Wallet name or key id.")]
PathOption = Annotated[
    str, typer.Option("--path", help="BIP32 path, non-hardened: m/0/5 or 0/5 (default: m).")
]


# --- output and errors ---------------------------------------------------------------------------
def error_code(exc: BaseException) -> str:
    """The code a failure is reported with: the `ErrorCode` it carries (a node's refusal, the
    coordinator's typed errors), a node that cannot be reached is `BUSY`, anything else the
    shared rule of `hsm.output.error_code` (its class name)."""
    from coordinator.client import NodeUnavailable  # noqa: PLC0415 (start-up time)

    if isinstance(exc, NodeUnavailable):
        return ErrorCode.BUSY.value
    return output.error_code(exc)


def refuse(exc: BaseException, what: str, as_json: bool) -> NoReturn:
    """Report a refusal (exit 1), in the one form of every command group (`hsm.output`)."""
    output.fail(as_json, error_code(exc), str(exc), what=what, exit_code=output.EXIT_REFUSED)


def usage(detail: str, as_json: bool) -> NoReturn:
    """Report a usage error found after parsing (exit 2)."""
    output.usage(detail, as_json)


@contextmanager
def progress(as_json: bool, description: str) -> Iterator[Callable[[str], None]]:
    """A spinner with elapsed time on stderr (none with --json); yields a function that
    changes its description."""
    if as_json or not errors.is_terminal:  # no spinner frames in logs and pipes
        yield lambda _: None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)
        yield lambda text: bar.update(task, description=text)


def run_refusing(work: Coroutine[Any, Any, T], what: str, as_json: bool) -> T:
    """`asyncio.run(work)`, every typed failure reported as a refusal."""
    try:
        return asyncio.run(work)
    except TesseraError as exc:
        refuse(exc, what, as_json)


def _load(root: Path, as_json: bool) -> LocalCluster:
    from coordinator.cluster import LocalCluster  # noqa: PLC0415

    try:
        return LocalCluster.load(root)
    except TesseraError as exc:
        refuse(exc, "cannot open the cluster", as_json)


async def _with_coordinator(root: Path, work: Callable[[Coordinator], Awaitable[T]]) -> T:
    """Run `work` with a coordinator over the cluster, closing its clients afterwards."""
    from coordinator.cluster import LocalCluster  # noqa: PLC0415

    coordinator = LocalCluster.load(root).coordinator()
    try:
        return await work(coordinator)
    finally:
        await coordinator.aclose()


# --- parsing -------------------------------------------------------------------------------------
def _indices(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{what} must be comma-separated party indices") from exc
    if not values or any(i < 1 for i in values) or len(set(values)) != len(values):
        raise typer.BadParameter(f"{what} must be distinct indices ≥ 1, e.g. 1,2")
    return tuple(sorted(values))


def parse_path(text: str) -> tuple[int, ...]:
    """`m/0/5`, `0/5`, `m` or `` → (0, 5) / (); a hardened step (`0'`, `0h`) is refused:
    the coordinator holds only public keys, so it can derive non-hardened children only."""
    parts = [part for part in text.strip().split("/") if part]
    if parts and parts[0] in ("m", "M"):
        parts = parts[1:]
    steps = []
    for part in parts:
        if part.endswith(("'", "h", "H")):
            raise typer.BadParameter(
                f"{part}: hardened derivation needs the private key; only non-hardened "
                "(public) derivation is possible, e.g. m/0/5"
            )
        try:
            step = int(part)
        except ValueError as exc:
            raise typer.BadParameter(f"{part}: path steps are integers, e.g. m/0/5") from exc
        if not 0 <= step < 2**31:
            raise typer.BadParameter(f"{step}: non-hardened steps are 0 ≤ step < 2^31")
        steps.append(step)
    return tuple(steps)


def _show_path(steps: tuple[int, ...]) -> str:
    return "/".join(["m", *(str(s) for s in steps)])


def _check_signers(wallet: WalletRow, signers: tuple[int, ...], as_json: bool) -> None:
    """Refused before any node is asked: a signer set of the wrong size or outside the
    wallet's committee could never produce a presignature."""
    from signer.node import codec  # noqa: PLC0415

    key = codec.decode_key_public(wallet.key_public)
    detail = ""
    if len(signers) < key.threshold:
        detail = (
            f"--signers {','.join(map(str, signers))}: {len(signers)} signer(s), but wallet "
            f"{wallet.name!r} is {key.threshold}-of-{len(key.parties)} and needs {key.threshold}"
        )
    elif not set(signers) <= set(key.parties):
        detail = f"--signers: not all of {list(signers)} hold a share (committee {key.parties})"
    if detail:
        output.fail(as_json, ErrorCode.VALIDATION.value, detail, what="refused")


def _wallet_doc(row: WalletRow) -> dict[str, Any]:
    from coordinator.bip32 import serialize_xpub  # noqa: PLC0415
    from signer.chains.evm import address_of  # noqa: PLC0415
    from signer.node import codec  # noqa: PLC0415

    key = codec.decode_key_public(row.key_public)
    public = key.public_key.to_bytes()
    return {
        "name": row.name,
        "key_id": row.key_id,
        "epoch": row.epoch,
        "threshold": f"{key.threshold}-of-{len(key.parties)}",
        "parties": list(key.parties),
        "address": str(address_of(key.public_key)),
        "public_key": public.hex(),
        "chain_code": key.chain_code.hex(),
        "xpub": serialize_xpub(public, key.chain_code),
        "policy_wallet": row.policy_wallet,  # None: a raw key
    }


# --- cluster lifecycle ---------------------------------------------------------------------------
@cluster_app.command("up")
def up(
    root: RootOption = Path("var/cluster"),
    nodes: Annotated[int, typer.Option("--nodes", min=2, max=255, help="n: number of nodes.")] = 3,
    threshold: Annotated[int, typer.Option("--threshold", min=2, help="t: signers needed.")] = 2,
    base_port: Annotated[
        int,
        typer.Option(
            "--base-port",
            min=1024,
            max=65000,
            help="Node i listens on 127.0.0.1, port base + i (18101, 18102, … by default). "
            "Used only when the cluster is created.",
        ),
    ] = 18100,
    genesis_policy: Annotated[
        str | None,
        typer.Option(
            "--genesis-policy",
            help="Genesis policy hash pinned on every node (used only when the cluster is "
            "created).",
        ),
    ] = None,
    raw_keys: Annotated[
        bool,
        typer.Option(
            "--raw-keys",
            help="Nodes may hold keys of no wallet that sign raw bytes (tests, benchmarks).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create the cluster if the directory has none (tokens, keys, databases, roster), start
    every node that is not running, and pin the roster on new nodes."""
    from coordinator.cluster import LocalCluster  # noqa: PLC0415

    if threshold > nodes:
        usage(f"--threshold {threshold} is larger than --nodes {nodes}", as_json)
    with progress(as_json, "setting up the cluster") as say:
        try:
            if (root / "cluster.json").exists():
                cluster = LocalCluster.load(root)
            else:
                say(f"initialising {nodes} nodes (SoftHSM2 tokens, identity keys)")
                cluster = LocalCluster.create(
                    root,
                    nodes,
                    threshold,
                    base_port,
                    genesis_policy=genesis_policy,
                    raw_keys=raw_keys,
                )
            say("starting the nodes, pinning the roster")
            asyncio.run(cluster.up())
        except TesseraError as exc:
            refuse(exc, "cluster up failed", as_json)
    listed = [
        {"node": n.node_id, "index": n.index, "url": n.url, "pid": cluster.pid(n)}
        for n in cluster.nodes
    ]
    if as_json:
        emit({"root": str(cluster.root), "threshold": cluster.threshold, "nodes": listed})
        return
    console.print(f"[green]cluster up[/green]: {len(cluster.nodes)} nodes, t = {cluster.threshold}")
    for row in listed:
        console.print(f"  {row['node']}  {row['url']}  pid {row['pid']}")


@cluster_app.command("down")
def down(root: RootOption = Path("var/cluster"), as_json: JsonOption = False) -> None:
    """Stop the cluster's node processes (their directories and data stay)."""
    cluster = _load(root, as_json)
    try:
        cluster.down()
    except TesseraError as exc:
        refuse(exc, "cluster down failed", as_json)
    if as_json:
        emit({"stopped": [n.node_id for n in cluster.nodes]})
    else:
        console.print("cluster stopped")


@cluster_app.command("status")
def status(root: RootOption = Path("var/cluster"), as_json: JsonOption = False) -> None:
    """Each node's process and health, the wallets and their presignature pools."""
    from coordinator.client import NodeRefused, NodeUnavailable  # noqa: PLC0415
    from signer.node import codec  # noqa: PLC0415

    cluster = _load(root, as_json)

    async def probe() -> list[dict[str, Any]]:
        rows = []
        for node in cluster.nodes:
            client = cluster.client(node)
            try:
                health = await client.health()
                state = "pinned" if health.pinned else "not pinned"
                if health.quarantined:
                    state += f", {health.quarantined} quarantine entries"
            except (NodeUnavailable, NodeRefused) as exc:
                state = f"down ({type(exc).__name__})"
            finally:
                await client.aclose()
            rows.append(
                {"node": node.node_id, "url": node.url, "pid": cluster.pid(node), "state": state}
            )
        return rows

    nodes = run_refusing(probe(), "cluster status failed", as_json)
    coordinator = cluster.coordinator()
    wallets = []
    for wallet in coordinator.store.wallets():
        key = codec.decode_key_public(wallet.key_public)
        wallets.append(
            {
                "name": wallet.name,
                "key_id": wallet.key_id,
                "public_key": key.public_key.to_bytes().hex(),
                "epoch": wallet.epoch,
                "threshold": f"{key.threshold}-of-{len(key.parties)}",
                "pools": coordinator.store.pools(wallet.key_id),
            }
        )
    asyncio.run(coordinator.aclose())
    if as_json:
        emit({"nodes": nodes, "wallets": wallets})
        return
    table = Table(title=f"cluster {cluster.root}")
    for column in ("node", "url", "pid", "state"):
        table.add_column(column)
    for row in nodes:
        table.add_row(*(str(row[c]) for c in ("node", "url", "pid", "state")))
    console.print(table)
    for entry in wallets:
        console.print(
            f"wallet {entry['name']} ({entry['threshold']}, epoch {entry['epoch']}): "
            f"pools {entry['pools'] or 'empty'}"
        )


# --- wallets and addresses -----------------------------------------------------------------------
@cluster_app.command("wallet")
def wallet(
    name: Annotated[str, typer.Option("--name", help="Wallet name (unique in the cluster).")],
    show: Annotated[
        bool, typer.Option("--show", help="Show an existing wallet instead of creating one.")
    ] = False,
    policy_wallet: Annotated[
        str | None,
        typer.Option(
            "--policy-wallet",
            help="The policy's wallet id the nodes bind the key to (omit: a raw key, on a "
            "--raw-keys cluster only).",
        ),
    ] = None,
    root: RootOption = Path("var/cluster"),
    as_json: JsonOption = False,
) -> None:
    """Create a wallet on the running cluster: aux-info for the committee if there is none yet
    (the nodes generate fresh safe primes), then a t-of-n DKG.  Prints as JSON (also with
    --show, for an existing one) its address, public key, chain code and xpub (BIP32, depth
    0)."""
    _load(root, as_json)

    async def create(coordinator: Coordinator) -> WalletRow:
        if show:
            return coordinator.store.wallet(name)
        with progress(as_json, f"creating wallet {name!r}: aux-info (safe primes), then DKG"):
            return await coordinator.create_wallet(name, policy_wallet=policy_wallet)

    what = "no such wallet" if show else "wallet creation failed"
    row = run_refusing(_with_coordinator(root, create), what, as_json)
    # The wallet is a document an operator keeps or pipes: printed as JSON with or without
    # --json (as before this command had --json; --json also makes its errors JSON).
    emit(_wallet_doc(row))


@cluster_app.command("address")
def address(
    wallet_name: WalletOption,
    path: PathOption = "m",
    root: RootOption = Path("var/cluster"),
    as_json: JsonOption = False,
) -> None:
    """The address of a child of the wallet's key (BIP32 non-hardened public derivation from
    its public key and chain code: no node is asked)."""
    from coordinator.store import CoordinatorStore  # noqa: PLC0415
    from signer.chains.evm import address_of  # noqa: PLC0415
    from signer.node import codec  # noqa: PLC0415
    from signer.protocol.hd import derive  # noqa: PLC0415

    try:
        steps = parse_path(path)
    except typer.BadParameter as exc:
        usage(f"--path: {exc}", as_json)
    cluster = _load(root, as_json)
    try:
        row = CoordinatorStore(cluster.root / "coordinator.db").wallet(wallet_name)
        key = codec.decode_key_public(row.key_public)
        child = derive(key.public_key, key.chain_code, steps)
    except TesseraError as exc:
        refuse(exc, "cannot derive", as_json)
    doc = {
        "wallet": row.name,
        "path": _show_path(steps),
        "address": str(address_of(child.public_key)),
        "public_key": child.public_key.to_bytes().hex(),
    }
    if as_json:
        emit(doc)
    else:
        console.print(f"{doc['path']}  {doc['address']}", highlight=False)


# --- presignature pools --------------------------------------------------------------------------
@cluster_app.command("pools")
def pools(
    wallet_name: WalletOption,
    signers: Annotated[str, typer.Option("--signers", help="Signer set, e.g. 1,2 (t nodes).")],
    depth: Annotated[int, typer.Option("--depth", min=1, max=10_000, help="Pool depth.")] = 8,
    path: PathOption = "",
    keep: Annotated[
        bool,
        typer.Option("--keep", help="Keep the pool full in the background until interrupted."),
    ] = False,
    root: RootOption = Path("var/cluster"),
    as_json: JsonOption = False,
) -> None:
    """Fill a presignature pool (wallet, signer set, path) to a depth; with --keep, keep
    refilling it as presignatures are used, until Ctrl-C.  A failed presign that is not
    operational (see docs/nodes.md) stops the keeper for that pool."""
    from coordinator.engine import PoolTarget  # noqa: PLC0415

    try:
        parties, steps = _indices(signers, "--signers"), parse_path(path)
    except typer.BadParameter as exc:
        usage(str(exc), as_json)
    _load(root, as_json)

    async def fill(coordinator: Coordinator) -> int:
        row = coordinator.store.wallet(wallet_name)
        _check_signers(row, parties, as_json)
        with progress(as_json, f"presigning for {row.name} [{signers}] to depth {depth}"):
            made = await coordinator.fill_pool(row, parties, steps, depth)
        if keep:
            stop = asyncio.Event()
            target = PoolTarget(row.name, parties, steps, depth)
            if not as_json:
                errors.print(
                    f"keeping {row.name} [{signers}] {_show_path(steps)} at {depth}; Ctrl-C stops"
                )
            try:
                await coordinator.keep_pools([target], stop)
            except asyncio.CancelledError:
                stop.set()
        return made

    try:
        made = run_refusing(_with_coordinator(root, fill), "pool fill failed", as_json)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_DONE) from None
    typer.echo(json.dumps({"wallet": wallet_name, "signers": list(parties), "made": made}))


# --- signing -------------------------------------------------------------------------------------
@cluster_app.command("sign")
def sign(
    wallet_name: WalletOption,
    to: Annotated[
        str | None, typer.Option("--to", help="EIP-1559 ETH transfer: recipient (EIP-55).")
    ] = None,
    value: Annotated[int, typer.Option("--value", min=0, help="Amount in wei.")] = 0,
    nonce: Annotated[int, typer.Option("--nonce", min=0, help="The sender's nonce.")] = 0,
    gas: Annotated[int, typer.Option("--gas", min=21_000, help="Gas limit.")] = 21_000,
    chain_id: Annotated[int, typer.Option("--chain-id", min=1, help="EIP-155 chain id.")] = 1,
    max_fee: Annotated[
        int, typer.Option("--max-fee", min=0, help="max_fee_per_gas, wei.")
    ] = 30_000_000_000,
    priority_fee: Annotated[
        int, typer.Option("--priority-fee", min=0, help="max_priority_fee_per_gas, wei.")
    ] = 1_000_000_000,
    message: Annotated[
        str | None,
        typer.Option(
            "--message", help="Instead of a transfer: sign these bytes (hex), hashed by --scheme."
        ),
    ] = None,
    scheme: Annotated[
        str, typer.Option("--scheme", help="With --message: keccak256 or sha256d.")
    ] = "keccak256",
    path: PathOption = "",
    signers: Annotated[
        str | None, typer.Option("--signers", help="Preferred signer set, e.g. 1,2.")
    ] = None,
    request_id: Annotated[
        str | None,
        typer.Option("--request-id", help="Policy wallet: the withdrawal's request id."),
    ] = None,
    initiator: Annotated[
        str, typer.Option("--initiator", help="Policy wallet: who asks for the withdrawal.")
    ] = "operator",
    approvals: Annotated[
        list[Path] | None,
        typer.Option(
            "--approval",
            help="Policy wallet: an officer's approval file (repeat; tessera officer "
            "approve-withdrawal --out).",
            dir_okay=False,
        ),
    ] = None,
    root: RootOption = Path("var/cluster"),
    as_json: JsonOption = False,
) -> None:
    """Sign through the nodes: an EIP-1559 ETH transfer from the wallet's address (at --path)
    — prints the signed raw transaction — or, with --message, any bytes (hashed by the nodes
    with --scheme; a raw key only) — prints the signature.  For a policy wallet every node
    decodes the transfer and decides on its own policy (with --request-id, --initiator and
    the officers' --approval files).  A pooled presignature is used if one exists for the
    path, else one is made on the spot."""
    from signer.protocol.sign import HashScheme  # noqa: PLC0415

    if (to is None) == (message is None):
        usage("give either --to (a transfer) or --message (bytes to sign)", as_json)
    try:
        steps = parse_path(path)
    except typer.BadParameter as exc:
        usage(f"--path: {exc}", as_json)
    try:
        preferred = None if signers is None else _indices(signers, "--signers")
    except typer.BadParameter as exc:
        usage(str(exc), as_json)
    try:
        hashing = HashScheme(scheme)
    except ValueError:
        usage(f"--scheme: one of {', '.join(s.value for s in HashScheme)}", as_json)
    _load(root, as_json)

    if message is not None:
        try:
            payload = bytes.fromhex(message.removeprefix("0x"))
        except ValueError:
            usage("--message: hex bytes, e.g. 0xdeadbeef", as_json)
        doc = run_refusing(
            _with_coordinator(
                root,
                lambda c: _sign_bytes(c, wallet_name, payload, hashing, steps, preferred, as_json),
            ),
            "signing failed",
            as_json,
        )
    else:
        transfer = (to, value, nonce, gas, chain_id, max_fee, priority_fee)
        try:
            claim = _Claim(request_id, initiator, _load_approvals(approvals or []))
        except TesseraError as exc:
            usage(f"--approval: {exc}", as_json)
        doc = run_refusing(
            _with_coordinator(
                root,
                lambda c: _sign_transfer(
                    c, wallet_name, transfer, steps, preferred, as_json, claim
                ),
            ),
            "signing failed",
            as_json,
        )
    if as_json:
        emit(doc)
        return
    for name, shown in doc.items():
        console.print(f"{name + ':':<20}{shown}", highlight=False)


@dataclass(frozen=True)
class _Claim:
    """What travels with a policy wallet's transfer (ignored for a raw key)."""

    request_id: str | None
    initiator: str
    approvals: tuple[Any, ...]


def _load_approvals(paths: list[Path]) -> tuple[Any, ...]:
    from policies.approvals import load_approval  # noqa: PLC0415

    return tuple(load_approval(path) for path in paths)


async def _checked_sign(
    coordinator: Coordinator,
    wallet_name: str,
    message: bytes,
    scheme: Any,
    steps: tuple[int, ...],
    preferred: tuple[int, ...] | None,
    as_json: bool,
) -> Any:
    row = coordinator.store.wallet(wallet_name)
    if preferred is not None:
        _check_signers(row, preferred, as_json)
    return await coordinator.sign(wallet_name, message, scheme, steps, preferred)


async def _sign_bytes(
    coordinator: Coordinator,
    wallet_name: str,
    message: bytes,
    scheme: Any,
    steps: tuple[int, ...],
    preferred: tuple[int, ...] | None,
    as_json: bool,
) -> dict[str, Any]:
    outcome = await _checked_sign(
        coordinator, wallet_name, message, scheme, steps, preferred, as_json
    )
    signature = outcome.signature
    return {
        "wallet": wallet_name,
        "path": _show_path(steps),
        "digest": "0x" + signature.digest.hex(),
        "r": f"0x{signature.r:064x}",
        "s": f"0x{signature.s:064x}",
        "recovery_id": signature.recovery_id,
        "public_key": signature.public_key.to_bytes().hex(),
        "signers": list(outcome.signers),
    }


async def _sign_transfer(
    coordinator: Coordinator,
    wallet_name: str,
    transfer: tuple[str | None, int, int, int, int, int, int],
    steps: tuple[int, ...],
    preferred: tuple[int, ...] | None,
    as_json: bool,
    claim: _Claim,
) -> dict[str, Any]:
    from signer.chains.evm import (  # noqa: PLC0415
        Eip1559Transfer,
        address_of,
        recover_sender,
        transaction_hash,
    )
    from signer.node import codec  # noqa: PLC0415
    from signer.protocol.hd import derive  # noqa: PLC0415
    from signer.protocol.sign import HashScheme  # noqa: PLC0415

    to, value, nonce, gas, chain_id, max_fee, priority_fee = transfer
    row = coordinator.store.wallet(wallet_name)
    key = codec.decode_key_public(row.key_public)
    sender = address_of(derive(key.public_key, key.chain_code, steps).public_key)
    tx = Eip1559Transfer(  # validated here, before any presignature is taken
        chain_id=chain_id,
        nonce=nonce,
        max_priority_fee_per_gas=priority_fee,
        max_fee_per_gas=max_fee,
        gas=gas,
        to=str(to),
        value=value,
    )
    if row.policy_wallet is not None:
        if preferred is not None:
            _check_signers(row, preferred, as_json)
        outcome = await coordinator.sign_transaction(
            wallet_name,
            tx.signing_payload(),
            request_id=claim.request_id or f"cli-{secrets.token_hex(8)}",
            initiator=claim.initiator,
            approvals=claim.approvals,
            path=steps,
            preferred=preferred,
        )
    else:
        outcome = await _checked_sign(
            coordinator,
            wallet_name,
            tx.signing_payload(),
            HashScheme.KECCAK256,
            steps,
            preferred,
            as_json,
        )
    raw = tx.attach(outcome.signature)  # checks the digest and that it recovers to the key
    return {
        "wallet": wallet_name,
        "path": _show_path(steps),
        "from": str(sender),
        "recovered": str(recover_sender(raw)),
        "signed_transaction": "0x" + raw.hex(),
        "transaction_hash": "0x" + transaction_hash(raw).hex(),
        "signers": list(outcome.signers),
    }


# --- the quarantine mirror -----------------------------------------------------------------------
quarantine_app = typer.Typer(
    cls=JsonUsageGroup,
    help=(
        "The coordinator's quarantine mirror: parties and party sets it no longer chooses "
        "after a failure (the same exclusion model as each node's own quarantine, "
        "`tessera node quarantine`). Without a subcommand: list the active entries."
    ),
    invoke_without_command=True,
)
cluster_app.add_typer(quarantine_app, name="quarantine")


def _store(root: Path, as_json: bool) -> Any:
    from coordinator.store import CoordinatorStore  # noqa: PLC0415

    cluster = _load(root, as_json)
    try:
        return CoordinatorStore(cluster.root / "coordinator.db")
    except TesseraError as exc:
        refuse(exc, "cannot open the coordinator", as_json)


@quarantine_app.callback()
def quarantine_list(
    ctx: typer.Context,
    root: RootOption = Path("var/cluster"),
    include_cleared: Annotated[bool, typer.Option("--all", help="Also cleared entries.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List the quarantine mirror (JSON with --json)."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _store(root, as_json).quarantine_mirror(include_cleared=include_cleared)
    docs = [row.to_json() for row in rows]
    if as_json:
        emit(docs)
        return
    if not docs:
        console.print("the quarantine mirror is empty")
        return
    table = Table(title="coordinator quarantine mirror")
    for column in ("id", "kind", "parties", "operation"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="fold")
    for doc in docs:
        cleared = doc["cleared_reason"]
        reason = doc["reason"] if cleared is None else f"cleared: {cleared}"
        parties = ",".join(str(p) for p in doc["parties"])
        table.add_row(str(doc["id"]), doc["kind"], parties, doc["operation"], reason)
    console.print(table)


@quarantine_app.command("clear")
def quarantine_clear(
    entry: Annotated[int, typer.Argument(min=1, help="Entry id (from `cluster quarantine`).")],
    reason: Annotated[str, typer.Option("--reason", help="Why it no longer applies.")],
    root: RootOption = Path("var/cluster"),
    as_json: JsonOption = False,
) -> None:
    """Let the coordinator choose a party (set) again; the nodes' own entries stay until their
    operators clear them (`tessera node quarantine`)."""
    store = _store(root, as_json)
    try:
        row = store.clear_quarantine(entry, reason)
    except TesseraError as exc:
        refuse(exc, "cannot clear", as_json)
    emit(row.to_json())


# --- metrics -------------------------------------------------------------------------------------
@cluster_app.command("metrics")
def metrics(root: RootOption = Path("var/cluster"), as_json: JsonOption = False) -> None:
    """The coordinator's Prometheus metrics (text exposition format) after a health check of
    every node; with --json, `{"metrics": "<text>"}`."""
    from coordinator.client import NodeRefused, NodeReplyInvalid, NodeUnavailable  # noqa: PLC0415

    _load(root, as_json)

    async def collect(coordinator: Coordinator) -> str:
        for index, client in coordinator.clients.items():
            try:
                await client.health()
            except (NodeUnavailable, NodeRefused, NodeReplyInvalid) as exc:
                coordinator.health.mark_down(index, str(exc))
        return coordinator.metrics_text()

    text = run_refusing(_with_coordinator(root, collect), "cannot collect metrics", as_json)
    if as_json:
        emit({"metrics": text})
    else:
        typer.echo(text, nl=False)


# --- the demo ------------------------------------------------------------------------------------
def print_demo(report: DemoReport) -> None:
    table = Table(
        title="Tessera demo — 2-of-3 nodes, SoftHSM2, HTTP, policy in every node, in-process EVM"
    )
    table.add_column("phase")
    table.add_column("time", justify="right")
    table.add_column("detail")
    for phase in report.phases:
        table.add_row(phase.name, f"{phase.seconds * 1000:.1f} ms", phase.detail)
    console.print(table)
    signature = report.signature
    if signature is None:
        return
    eth = 10**18
    console.print(f"wallet address:   {report.wallet_address}")
    console.print(f"recipient:        {report.recipient}")
    console.print(f"signed by nodes:  {', '.join(str(i) for i in report.signers)}")
    console.print(f"signed tx:        0x{report.raw_transaction.hex()}")
    console.print(f"recovers to:      {report.recovered} [green](the wallet)[/green]")
    console.print(f"tx hash:          0x{report.transaction_hash.hex()} (mined)")
    console.print(f"policy in force:  {report.policy_hash[:16]}… on every node")
    refused = report.refused
    console.print(
        f"off the whitelist: refused by node {refused.get('node')}: {refused.get('code')} "
        f"({refused.get('check')}) — {refused.get('detail')}",
        markup=False,
    )
    console.print(
        f"2 ETH approved by {', '.join(report.large_approved_by)}: signed by nodes "
        f"{', '.join(str(i) for i in report.large_signers)}, "
        f"tx 0x{report.large_transaction_hash.hex()} (mined)"
    )
    for address in (report.wallet_address, report.recipient):
        before = report.balances_before[address] / eth
        after = report.balances_after[address] / eth
        console.print(f"balance {address}: {before:.6f} → {after:.6f} ETH")
    payout = report.token_payout
    console.print(
        f"250 USDT payout {payout.get('payout_id')}: nonce {payout.get('nonce')}, "
        f"tx {payout.get('tx_hash')} ({payout.get('state')} in block {payout.get('block')})"
    )
    for address, (before_units, after_units) in report.token_balances.items():
        console.print(
            f"USDT balance {address}: {before_units / 10**6:,.6f} → {after_units / 10**6:,.6f}"
        )
    sweep = report.sweep
    if sweep:
        gas = sweep.get("gas_payouts") or []
        fuelled = ", ".join(f"{g['amount']} ETH" for g in gas) if isinstance(gas, list) else ""
        console.print(
            f"swept {int(str(sweep.get('swept_units'))) / 10**6:,.6f} USDT from deposit address "
            f"{sweep.get('deposit_address')} ({sweep.get('customer_ref')}) to the wallet: gas "
            f"sent first ({fuelled or 'none needed'}), tx {sweep.get('tx_hash')} "
            f"({sweep.get('state')})"
        )
    console.print(
        f"gas fee of the ETH transfers: {report.gas_fee} wei; of the USDT payout: "
        f"{payout.get('fee')} wei; presignatures left in the pool: {report.pool_left}"
    )


def demo_command(root: Path, pool_depth: int, keep_running: bool, as_json: bool) -> None:
    try:
        from coordinator.demo import run_cluster_demo  # noqa: PLC0415 (web3: ≈1 s)
    except ImportError as exc:
        output.fail(as_json, ErrorCode.INTERNAL.value, str(exc), what="demo unavailable")
    with progress(as_json, "demo") as say:
        report = run_refusing(
            run_cluster_demo(root, pool_depth, keep_running, progress=say), "demo failed", as_json
        )
    if not as_json:
        print_demo(report)
        return
    signature = report.signature
    doc = {
        "cluster": str(report.root),
        "reused_cluster": report.reused_cluster,
        "phases": [
            {"phase": p.name, "seconds": p.seconds, "detail": p.detail} for p in report.phases
        ],
        "wallet_address": report.wallet_address,
        "recipient": report.recipient,
        "signers": list(report.signers),
        "signed_transaction": "0x" + report.raw_transaction.hex(),
        "transaction_hash": "0x" + report.transaction_hash.hex(),
        "recovered": report.recovered,
        "signature": None
        if signature is None
        else {"r": hex(signature.r), "s": hex(signature.s), "recovery_id": signature.recovery_id},
        "balances_before": report.balances_before,
        "balances_after": report.balances_after,
        "gas_fee": report.gas_fee,
        "pool_left": report.pool_left,
        "policy_hash": report.policy_hash,
        "refused_off_whitelist": report.refused,
        "large_transfer": {
            "approved_by": list(report.large_approved_by),
            "signers": list(report.large_signers),
            "transaction_hash": "0x" + report.large_transaction_hash.hex(),
        },
        "token_payout": {
            **report.token_payout,
            "token": report.token,
            "balances": {a: list(b) for a, b in report.token_balances.items()},
        },
        "sweep": report.sweep,
    }
    typer.echo(json.dumps(doc, indent=2))


@cluster_app.command("migrate")
def migrate_cluster(
    root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            "--dir",
            help="Cluster directory: its coordinator.db and every node's node.db.",
            file_okay=False,
        ),
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option("--db", help="Instead: one coordinator database file.", dir_okay=False),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Bring the local cluster's databases (the coordinator's, then each node's) to the schema
    this code needs; the processes refuse an older one.  Every file is checked first (one
    refusal changes none) and copied next to itself before it is changed
    (<file>.pre-<revision>-<UTC time>.bak, mode 0600).  Stop the cluster first (`cluster
    down`).  Default --root var/cluster.  Exit 0 migrated or already current, 1 refused, 2
    usage."""
    # Imported here: only this command needs alembic's machinery.
    from coordinator.cluster import LocalCluster  # noqa: PLC0415
    from coordinator.migrations import SCHEMA  # noqa: PLC0415
    from policies.schema import (  # noqa: PLC0415
        CommandResult,
        Schema,
        run_migrate_command,
        usage_result,
    )
    from signer.node.migrations import SCHEMA as NODE_SCHEMA  # noqa: PLC0415
    from signer.node.runtime import NodeConfig  # noqa: PLC0415

    if root is not None and db is not None:
        result = usage_result("give --root or --db, not both", as_json=as_json)
    elif db is not None:
        result = run_migrate_command([(db, SCHEMA)], as_json=as_json)
    else:
        try:
            cluster = LocalCluster.load(root if root is not None else Path("var/cluster"))
            targets: list[tuple[Path, Schema]] = [(cluster.root / "coordinator.db", SCHEMA)]
            targets += [(NodeConfig.load(n.directory).db_path, NODE_SCHEMA) for n in cluster.nodes]
        except TesseraError as exc:
            doc = {"error": {"code": error_code(exc), "detail": str(exc)}}
            result = (
                CommandResult(EXIT_REFUSED, output=json.dumps(doc, indent=2))
                if as_json
                else CommandResult(EXIT_REFUSED, error=f"error: {exc}")
            )
        else:
            result = run_migrate_command(targets, as_json=as_json)
    if result.output:
        typer.echo(result.output)
    if result.error:
        errors.print(result.error, markup=False)
    raise typer.Exit(result.exit_code)
