"""The security officers' command line: ``tessera officer …`` and ``tessera policy …``.

Until the coordinator API exists every command works on files (officer key files, policy files,
withdrawal request files) and the local SQLite store (`policies.store`): ``--store PATH`` on the
command or on its group, else ``$TESSERA_POLICY_STORE``, else ``./tessera-policy.db``.  The store
must exist: only ``tessera policy init`` creates one.  Passphrases come from ``--passphrase-file``
or ``$TESSERA_OFFICER_PASSPHRASE``, never from the command line.  Every command has ``--json``
for scripts.  Exit codes: 0 done, 1 refused or denied, 2 usage error; errors are ``error: …`` on
stderr, or with ``--json`` one ``{"error": {...}}`` object on stdout (`policies.render`).

This module is only the command-line surface (options, help, exit codes); the work is in
`policies.operations`, the text in `policies.render`.  `operations` pulls in pydantic,
SQLAlchemy and cryptography, so it is imported on first use: ``--help`` and usage errors never
pay for it.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from hsm.output import JsonUsageGroup
from policies.errors import UsageError
from policies.locations import DEFAULT_STORE, EXAMPLES, STARTER, STORE_ENV
from policies.render import Output, decision_lines, policy_summary, status_print, withdrawal_lines

if TYPE_CHECKING:
    from policies import drafts
    from policies import operations as ops
else:

    class _Lazy:
        """A module imported when a command first uses it (start-up time); typed as the module
        itself for mypy (above)."""

        def __init__(self, module: str) -> None:
            self._module = module

        def __getattr__(self, name: str) -> Any:
            return getattr(importlib.import_module(self._module), name)

    ops = _Lazy("policies.operations")  # the store, keys, the evaluator
    drafts = _Lazy("policies.drafts")  # policy files only: validate and hash load no store

officer_app = typer.Typer(
    cls=JsonUsageGroup,
    help="Security officers: keys, policy votes, withdrawal approvals, freezes.",
    no_args_is_help=True,
)
policy_app = typer.Typer(
    cls=JsonUsageGroup,
    help=(
        "Policy versions: init, validate, hash, new-version, propose, show, diff, activate, "
        "status, simulate, push (to the nodes); the audit log."
    ),
    no_args_is_help=True,
)
audit_app = typer.Typer(
    cls=JsonUsageGroup, help="Verify, checkpoint and export the audit log.", no_args_is_help=True
)
policy_app.add_typer(audit_app, name="audit")


# --- shared options ----------------------------------------------------------------------------

GroupStoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        envvar=STORE_ENV,
        help=f"Local policy store (SQLite). Default ./{DEFAULT_STORE} or ${STORE_ENV}.",
        dir_okay=False,
    ),
]
# The same option on each command, so `tessera policy status --store X` works too; it has no
# envvar of its own so that an explicit group-level --store is not overridden by the environment.
StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help=f"Local policy store (SQLite). Default ./{DEFAULT_STORE} or ${STORE_ENV}.",
        dir_okay=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the result (or the error) as JSON on stdout.")
]
KeyOption = Annotated[
    Path,
    typer.Option("--key", help="Officer key file (from `officer create-key`).", dir_okay=False),
]
PassphraseOption = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help="File holding the key passphrase (else $TESSERA_OFFICER_PASSPHRASE).",
        dir_okay=False,
    ),
]
VersionOption = Annotated[
    str | None,
    typer.Option("--version", help="Policy version: its number, or its hash (or a prefix)."),
]
HashOption = Annotated[
    str | None,
    typer.Option("--hash", help="Policy hash or a unique prefix (same as --version HASH)."),
]
ExpiresOption = Annotated[
    int,
    typer.Option(
        "--expires-in",
        min=1,
        max=7 * 86400,
        help="Seconds the signed statement stays valid (at most 7 days).",
    ),
]
OutOption = Annotated[
    Path | None,
    typer.Option("--out", help="Also write the signed statement to this file.", dir_okay=False),
]
RequestArgument = Annotated[
    Path, typer.Argument(help="Withdrawal request file (YAML or JSON intent).", dir_okay=False)
]
PolicyFileArgument = Annotated[
    Path, typer.Argument(help="Policy file (YAML or JSON).", dir_okay=False)
]
WalletArgument = Annotated[str, typer.Argument(help="Wallet id, as in the policy.")]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why (recorded).")]


@dataclass
class _Settings:
    store: Path | None  # the group-level --store (or $TESSERA_POLICY_STORE)


def _store_path(ctx: typer.Context, store: Path | None) -> Path:
    """The command's --store, else the group's (or the environment's), else the default."""
    if store is not None:
        return store
    settings = ctx.find_object(_Settings)
    if settings is not None and settings.store is not None:
        return settings.store
    return DEFAULT_STORE


@officer_app.callback()
def _officer_main(ctx: typer.Context, store: GroupStoreOption = None) -> None:
    """Security officers: keys, policy votes, withdrawal approvals, freezes."""
    ctx.obj = _Settings(store)


@policy_app.callback()
def _policy_main(ctx: typer.Context, store: GroupStoreOption = None) -> None:
    """Policy versions and the audit log."""
    ctx.obj = _Settings(store)


# --- officer -----------------------------------------------------------------------------------


@officer_app.command("create-key")
def create_key(
    officer_id: Annotated[str, typer.Option("--id", help="Officer id, as in the policy.")],
    out: Annotated[
        Path, typer.Option("--out", help="Key file to create (mode 0600).", dir_okay=False)
    ],
    algorithm: Annotated[
        str, typer.Option("--algorithm", help="One of ed25519, p256.")
    ] = "ed25519",
    passphrase_file: PassphraseOption = None,
    hsm_config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "--token-config",
            help=(
                "A tessera-hsm.json settings file (as `tessera hsm --config`): generate the key "
                "inside that PKCS#11 token; --out then gets a reference file, not the key."
            ),
            dir_okay=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create an officer key — an encrypted key file, or a non-extractable key in a PKCS#11
    token — and print the public key to put in the policy's officers list."""
    out_ = Output(as_json)
    with out_.guarded():
        doc = ops.create_key(
            officer_id, out, algorithm, passphrase_file, hsm_config, progress=out_.progress
        )
    if as_json:
        out_.json(doc)
        return
    out_.say(f"created {out} for officer {doc['id']} ({doc['algorithm']})")
    out_.say("policy officers entry:")
    out_.say(
        f"  - {{id: {doc['id']}, algorithm: {doc['algorithm']}, public_key: {doc['public_key']}}}"
    )


@officer_app.command("show-key")
def show_key(
    key: Annotated[Path, typer.Argument(help="Officer key file.", dir_okay=False)],
    as_json: JsonOption = False,
) -> None:
    """Show the officer id, algorithm and public key of a key file (no passphrase needed)."""
    out = Output(as_json)
    with out.guarded():
        doc = ops.show_key(key)
    if as_json:
        out.json(doc)
        return
    for name, value in doc.items():
        out.say(f"{name:<11} {value}")


@officer_app.command("approve-policy")
def approve_policy(
    ctx: typer.Context,
    key: KeyOption,
    passphrase_file: PassphraseOption = None,
    version: VersionOption = None,
    policy_hash: HashOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign a proposed policy version (the open proposal, or --version N|HASH)."""
    out = Output(as_json)
    with out.guarded():
        doc = ops.approve_policy(
            _store_path(ctx, store),
            key,
            passphrase_file,
            ops.pick_ref(version, policy_hash),
            progress=out.progress,
        )
    if as_json:
        out.json(doc)
        return
    out.say(
        f"{doc['officer']} signed policy version {doc['version']} "
        f"({doc['policy_hash'][:16]}…): {len(doc['counted'])} of {doc['needed']}"
    )
    if doc["ready_to_activate"]:
        out.say("quorum reached: run `tessera policy activate`")


@officer_app.command("approve-plan")
def approve_plan(
    ctx: typer.Context,
    plan: Annotated[
        Path,
        typer.Argument(
            help="Key plan file (JSON: key, epoch, committee, wallet, policy hash).", dir_okay=False
        ),
    ],
    key: KeyOption,
    passphrase_file: PassphraseOption = None,
    out_file: OutOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Authorise one re-share or refresh of a wallet's key: sign the plan (key version,
    dealers, new committee and threshold, wallet, policy hash).  Every node checks the
    quorum of these signatures before it takes part."""
    out = Output(as_json)
    with out.guarded():
        doc = ops.approve_plan(
            _store_path(ctx, store), key, passphrase_file, plan, progress=out.progress
        )
        if out_file is not None:
            out_file.write_text(json.dumps(doc["signature"], indent=2) + "\n")
    if as_json:
        out.json(doc)
        return
    statement = doc["plan"]
    out.say(
        f"{doc['officer']} authorised {statement['protocol']} of key {statement['key_id'][:16]} "
        f"(wallet {statement['wallet']}) to parties {statement['new_parties']}, "
        f"t = {statement['threshold']}; {doc['needed']} officers needed"
    )
    if out_file is not None:
        out.say(f"signature written to {out_file}")


@officer_app.command("cancel-policy")
def cancel_policy(
    ctx: typer.Context,
    key: KeyOption,
    passphrase_file: PassphraseOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Vote to cancel the time-locked (not yet effective) policy version; it is cancelled once
    the freeze quorum of the version in force has signed."""
    out = Output(as_json)
    with out.guarded():
        doc = ops.cancel_policy(_store_path(ctx, store), key, passphrase_file, out.progress)
    if as_json:
        out.json(doc)
        return
    state = "cancelled" if doc["cancelled"] else "not cancelled yet"
    out.say(
        f"cancel of version {doc['version']}: {len(doc['counted'])} of {doc['needed']} ({state})"
    )


def _withdrawal(
    ctx: typer.Context,
    request: Path,
    key: Path,
    passphrase_file: Path | None,
    decision: Literal["approve", "reject"],
    *,
    expires_in: int,
    reason: str | None,
    out_file: Path | None,
    store: Path | None,
    as_json: bool,
) -> None:
    out = Output(as_json)
    with out.guarded():
        doc = ops.decide_withdrawal(
            _store_path(ctx, store),
            request,
            key,
            passphrase_file,
            decision,
            expires_in=expires_in,
            reason=reason,
            out=out_file,
            progress=out.progress,
        )
    if as_json:
        out.json(doc)
        return
    out.lines(withdrawal_lines(doc, None if out_file is None else str(out_file)))


@officer_app.command("approve-withdrawal")
def approve_withdrawal(
    ctx: typer.Context,
    request: RequestArgument,
    key: KeyOption,
    passphrase_file: PassphraseOption = None,
    expires_in: ExpiresOption = 3600,
    out: OutOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign an approval of a pending withdrawal (request file) bound to its request id,
    transaction digest and the policy version in force; print the resulting decision.
    Refused (exit 1, nothing recorded) when the approval could not count: an officer outside
    the rule's approver group, or a request the policy denies or blocks."""
    _withdrawal(
        ctx,
        request,
        key,
        passphrase_file,
        "approve",
        expires_in=expires_in,
        reason=None,
        out_file=out,
        store=store,
        as_json=as_json,
    )


@officer_app.command("reject-withdrawal")
def reject_withdrawal(
    ctx: typer.Context,
    request: RequestArgument,
    key: KeyOption,
    reason: ReasonOption = None,
    passphrase_file: PassphraseOption = None,
    expires_in: ExpiresOption = 3600,
    out: OutOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign a rejection of a withdrawal (request file); the request is closed (DENY)."""
    _withdrawal(
        ctx,
        request,
        key,
        passphrase_file,
        "reject",
        expires_in=expires_in,
        reason=reason,
        out_file=out,
        store=store,
        as_json=as_json,
    )


def _freeze(
    ctx: typer.Context,
    action: Literal["freeze", "unfreeze"],
    wallet: str,
    key: Path,
    passphrase_file: Path | None,
    reason: str | None,
    store: Path | None,
    as_json: bool,
) -> None:
    out = Output(as_json)
    with out.guarded():
        doc = ops.freeze(
            _store_path(ctx, store), action, wallet, key, passphrase_file, reason, out.progress
        )
    if as_json:
        out.json(doc)
        return
    if doc["applied"]:
        done = "frozen" if action == "freeze" else "unfrozen"
        out.say(f"wallet {wallet} {done} (signed by {', '.join(doc['counted'])})")
    else:
        out.say(
            f"{action} of wallet {wallet}: {len(doc['counted'])} of {doc['needed']} signatures;"
            " waiting for more officers"
        )


@officer_app.command("freeze")
def freeze(
    ctx: typer.Context,
    wallet: WalletArgument,
    key: KeyOption,
    reason: ReasonOption = None,
    passphrase_file: PassphraseOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign a freeze of a wallet; it applies at once when the freeze quorum has signed."""
    _freeze(ctx, "freeze", wallet, key, passphrase_file, reason, store, as_json)


@officer_app.command("unfreeze")
def unfreeze(
    ctx: typer.Context,
    wallet: WalletArgument,
    key: KeyOption,
    reason: ReasonOption = None,
    passphrase_file: PassphraseOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign an unfreeze of a wallet; it applies when the full quorum has signed."""
    _freeze(ctx, "unfreeze", wallet, key, passphrase_file, reason, store, as_json)


# --- policy files ------------------------------------------------------------------------------


@policy_app.command("init")
def init(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Argument(help="Starter policy file to write (never overwritten).", dir_okay=False),
    ] = Path("policy.yaml"),
    example: Annotated[
        str, typer.Option("--example", help=f"Which shipped example: {', '.join(EXAMPLES)}.")
    ] = STARTER,
    store_only: Annotated[
        bool, typer.Option("--store-only", help="Only create the store; write no policy file.")
    ] = False,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start here: create the policy store (the only command that does) and write a starter
    policy file from the shipped examples, to edit before `policy propose`."""
    out = Output(as_json)
    with out.guarded():
        doc = ops.init_policy(None if store_only else file, _store_path(ctx, store), example)
    if as_json:
        out.json(doc)
        return
    kept = "created" if doc["store_created"] else "exists, kept"
    out.say(f"store {doc['store']} ({kept})")
    if doc["policy_file"] is not None:
        out.say(f"wrote {doc['policy_file']} from example {doc['example']}")
        out.say(
            "next: replace its officers with keys from `tessera officer create-key`, then "
            f"`tessera policy validate {doc['policy_file']}` and `tessera policy propose`"
        )


@policy_app.command("validate")
def validate(file: PolicyFileArgument, as_json: JsonOption = False) -> None:
    """Check a policy file and print every problem, each with its path (exit 1 if any)."""
    out = Output(as_json)
    with out.guarded():
        doc = drafts.validate(file)
    if as_json:
        out.json(doc)
        return
    out.say(f"{file}: valid policy version {doc['version']}, hash {doc['policy_hash']}")


@policy_app.command("hash")
def hash_cmd(file: PolicyFileArgument, as_json: JsonOption = False) -> None:
    """Print the canonical hash of a policy file (what officers sign, what `previous` names)."""
    out = Output(as_json)
    with out.guarded():
        doc = drafts.policy_hash(file)
    if as_json:
        out.json(doc)
        return
    out.say(doc["policy_hash"])


@policy_app.command("new-version")
def new_version(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The new version's file to write (.yaml or .json).")],
    from_store: Annotated[
        bool,
        typer.Option("--from-store", help="Build on the newest activated version in the store."),
    ] = False,
    previous: Annotated[
        Path | None,
        typer.Option("--previous", help="Build on this policy file instead.", dir_okay=False),
    ] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write the next version: the previous one's content with version + 1 and `previous` set
    to its hash, ready to edit (nobody copies a 64-hex hash by hand)."""
    out = Output(as_json)
    with out.guarded():
        if from_store == (previous is not None):
            raise UsageError("--from-store/--previous", "give exactly one of them")
        if previous is not None:
            doc = drafts.next_version_from_file(file, previous)
        else:
            doc = ops.next_version_from_store(file, _store_path(ctx, store))
    if as_json:
        out.json(doc)
        return
    out.say(
        f"wrote {doc['file']}: version {doc['version']}, previous {doc['previous']} "
        f"(based on {doc['based_on']})"
    )
    out.say("edit it, then `tessera policy validate` and `tessera policy propose` it")


# --- policy versions ---------------------------------------------------------------------------


@policy_app.command("propose")
def propose(
    ctx: typer.Context,
    file: PolicyFileArgument,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Record a policy file as a proposal for the next version; officers then sign it."""
    out = Output(as_json)
    with out.guarded():
        doc = ops.propose(_store_path(ctx, store), file)
    if as_json:
        out.json(doc)
        return
    out.say(f"proposed policy version {doc['version']}: {doc['policy_hash']}")
    out.say("officers sign it with `tessera officer approve-policy --key FILE`")


@policy_app.command("show")
def show(
    ctx: typer.Context,
    version: Annotated[
        str | None,
        typer.Argument(help="Version number or hash prefix (default: the version in force)."),
    ] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a policy version in human-readable form (or its canonical JSON with --json)."""
    out = Output(as_json)
    with out.guarded():
        ref = None if version is None else ops.parse_version_ref(version, "VERSION")
        doc = ops.show(_store_path(ctx, store), ref)
    if as_json:
        out.json(doc)
        return
    out.say(f"[{doc['state']}]")
    out.lines(policy_summary(doc["document"], doc["policy_hash"]))


@policy_app.command("diff")
def diff(
    ctx: typer.Context,
    old: Annotated[str, typer.Argument(help="Old version number or hash prefix.")],
    new: Annotated[str, typer.Argument(help="New version number or hash prefix.")],
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show what changed between two versions; loosening changes are marked (they wait for
    the time lock)."""
    out = Output(as_json)
    with out.guarded():
        doc = ops.diff(
            _store_path(ctx, store),
            ops.parse_version_ref(old, "OLD"),
            ops.parse_version_ref(new, "NEW"),
        )
    if as_json:
        out.json(doc)
        return
    out.lines(doc["lines"])
    if doc["loosening"]:
        out.say(f"{len(doc['loosening'])} loosening change(s): subject to the time lock")


@policy_app.command("activate")
def activate_cmd(
    ctx: typer.Context,
    version: VersionOption = None,
    policy_hash: HashOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Activate a proposal once the officers who decide (those of the version in force) have
    signed it in quorum."""
    out = Output(as_json)
    with out.guarded():
        doc = ops.activate(_store_path(ctx, store), ops.pick_ref(version, policy_hash))
    if as_json:
        out.json(doc)
        return
    out.say(f"policy version {doc['version']} activated (signed by {', '.join(doc['signed_by'])})")
    if doc["time_locked"]:
        out.say(f"it loosens the policy; in force from {doc['effective_at']} (time lock):")
        out.lines([f"  - {line}" for line in doc["loosening"]])
    else:
        out.say("in force now")


@policy_app.command("status")
def status(ctx: typer.Context, store: StoreOption = None, as_json: JsonOption = False) -> None:
    """The version in force, time-locked and proposed versions with their signatures, frozen
    wallets, pending withdrawals, the audit-log head."""
    out = Output(as_json)
    with out.guarded():
        doc = ops.status(_store_path(ctx, store))
    if as_json:
        out.json(doc)
        return
    status_print(out, doc)


@policy_app.command("simulate")
def simulate(
    ctx: typer.Context,
    intent_file: Annotated[
        Path,
        typer.Option("--intent", help="Withdrawal request file (YAML or JSON).", dir_okay=False),
    ],
    version: VersionOption = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Evaluate at this RFC 3339 time (default: now).")
    ] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Evaluate a withdrawal against a version (default: the one in force) exactly as a node
    would, with the approvals already recorded, and explain the decision.  Changes nothing.
    Exit 0 when it would be signed (ALLOW), 1 otherwise (DENY, BLOCK, approvals missing)."""
    out = Output(as_json)
    with out.guarded():
        ref = None if version is None else ops.parse_version_ref(version)
        doc = ops.simulate(_store_path(ctx, store), intent_file, ref, at)
    if as_json:
        out.json(doc)
    else:
        out.lines(decision_lines(doc["request_id"], doc))
        out.say("velocity limits evaluated against an empty ledger (nodes use their own)")
    if doc["outcome"] != "ALLOW":
        out.exit_denied()


@policy_app.command("push")
def push_cmd(
    ctx: typer.Context,
    nodes: Annotated[
        list[str],
        typer.Option(
            "--node",
            help="A key-share node's URL (repeat for each node), e.g. http://10.0.0.5:18101.",
        ),
    ],
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Push the activated policy chain and the applied freeze orders straight to the nodes
    (no coordinator: each node checks the officers' signatures itself).  Exit 0 when every node
    accepted, 1 when any refused or could not be reached."""
    from policies import push as pushing  # noqa: PLC0415  (httpx only when pushing)

    out = Output(as_json)
    with out.guarded():
        for node in nodes:
            if not node.startswith(("http://", "https://")):
                raise UsageError("--node", f"{node[:80]!r} is not an http(s) URL")
        ops.open_store(_store_path(ctx, store)).close()  # a missing store is refused first
        with out.progress(f"pushing to {len(nodes)} node(s)"):
            results = pushing.push(_store_path(ctx, store), nodes)
    if as_json:
        out.json({"nodes": [r.to_json() for r in results]})
    else:
        for result in results:
            if result.accepted and result.status is not None:
                version = result.status.get("policy_version")
                frozen = ", ".join(result.status.get("frozen") or []) or "none"
                out.say(f"{result.node}: enforces version {version}; frozen: {frozen}")
            else:
                out.say(f"{result.node}: refused {result.code}: {result.detail}")
    if not all(r.accepted for r in results):
        out.exit_denied()


# --- audit -------------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="A checkpoint file kept outside the store (detects truncation).",
            dir_okay=False,
        ),
    ] = None,
    head_seq: Annotated[
        int | None, typer.Option("--head-seq", min=1, help="Trusted head: record number.")
    ] = None,
    head_hash: Annotated[
        str | None, typer.Option("--head-hash", help="Trusted head: that record's hash.")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", help="Verify this JSONL export instead of the store's log.", dir_okay=False
        ),
    ] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify the hash chain and every checkpoint signature; report the first position where
    the log was edited, cut, extended or reordered."""
    out = Output(as_json)
    with out.guarded():
        report = ops.audit_verify(
            _store_path(ctx, store), checkpoint, head_seq, head_hash, file, out.progress
        )
    if as_json:
        out.json(report)
        return
    out.say(
        f"audit log OK: {report['records']} records, {report['checkpoints']} signed "
        f"checkpoint(s), head seq {report['head_seq']} {report['head_hash']}"
    )
    if report["trusted_head_seq"] is not None:
        out.say(f"matches the trusted head at seq {report['trusted_head_seq']}")
    else:
        out.say("no external head given: truncation of the newest records cannot be ruled out")


@audit_app.command("checkpoint")
def audit_checkpoint(
    ctx: typer.Context,
    key: KeyOption,
    passphrase_file: PassphraseOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write the signed checkpoint here (keep it elsewhere).", dir_okay=False
        ),
    ] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign the newest audit record and append the checkpoint to the log."""
    output = Output(as_json)
    with output.guarded():
        checkpoint = ops.audit_checkpoint(
            _store_path(ctx, store), key, passphrase_file, out, output.progress
        )
    if as_json:
        output.json(checkpoint)
        return
    output.say(
        f"checkpoint by {checkpoint['signer']} over seq {checkpoint['seq']} ({checkpoint['head']})"
    )
    if out is not None:
        output.say(f"written to {out}")


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    fmt: Annotated[
        str, typer.Option("--format", help="jsonl (exact, verifiable) or csv (spreadsheets).")
    ] = "jsonl",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write to this file instead of stdout.", dir_okay=False),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Export the audit log as JSONL or CSV (errors: `error: …` on stderr, exit 1)."""
    output = Output(as_json=False)
    with output.guarded():
        text = ops.audit_export(_store_path(ctx, store), fmt)
        if out is not None:
            drafts.write_new(out, text)
    if out is None:
        typer.echo(text, nl=False)
    else:
        output.errors.print(f"wrote {out}", markup=False)


@policy_app.command("migrate")
def migrate(
    ctx: typer.Context,
    store: StoreOption = None,
    ledger: Annotated[
        Path | None,
        typer.Option(
            "--ledger",
            help="A velocity ledger to migrate (alone, or with --store).",
            dir_okay=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Bring the policy store (and a velocity ledger) to the schema this code needs; both
    refuse to open at an older one.  Without --store and --ledger: the group's store.  Each file
    is checked first (one refusal changes neither) and copied next to itself before it is
    changed (<file>.pre-<revision>-<UTC time>.bak, mode 0600).  Exit 0 migrated or already
    current, 1 refused."""
    # Imported here: only this command needs alembic's machinery.
    from policies.migrations.store import SCHEMA as STORE_SCHEMA  # noqa: PLC0415
    from policies.migrations.velocity import SCHEMA as LEDGER_SCHEMA  # noqa: PLC0415
    from policies.schema import Schema, run_migrate_command  # noqa: PLC0415

    targets: list[tuple[Path, Schema]] = []
    if store is not None or ledger is None:
        targets.append((_store_path(ctx, store), STORE_SCHEMA))
    if ledger is not None:
        targets.append((ledger, LEDGER_SCHEMA))
    result = run_migrate_command(targets, as_json=as_json)
    if result.output:
        typer.echo(result.output)
    if result.error:
        typer.echo(result.error, err=True)
    raise typer.Exit(result.exit_code)
