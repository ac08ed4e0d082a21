"""`tessera officer approve WITHDRAWAL_ID --server URL`: an officer's approval of a withdrawal
waiting in the signer API.  It fetches the withdrawal and the intent the nodes will evaluate,
shows them, decides and signs with the officer's key under the officer's own policy store
(`policies.operations.decide_withdrawal`, as `officer approve-withdrawal` does with a request
file), and posts the signed approval.  The service only collects it: every node verifies it
again when it signs.

The command lives here, not in `policies/cli.py`, because it talks to the signer API (a
coordinator-layer client); `coordinator/console.py` adds it to the `officer` group."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from hsm.output import EXIT_REFUSED

ServerOption = Annotated[str, typer.Option("--server", help="The signer API's base URL.")]
ApiKeyIdOption = Annotated[
    str, typer.Option("--api-key-id", help="The officers' API client key id (k_…).")
]
ApiKeyOption = Annotated[
    Path,
    typer.Option(
        "--api-key", help="PEM private key of that API client (approvals:write).", dir_okay=False
    ),
]


def approve(
    withdrawal_id: Annotated[str, typer.Argument(help="The withdrawal (wd_…).")],
    server: ServerOption,
    api_key_id: ApiKeyIdOption,
    api_key: ApiKeyOption,
    key: Annotated[
        Path, typer.Option("--key", help="Officer key file (from `officer create-key`).")
    ],
    passphrase_file: Annotated[
        Path | None, typer.Option("--passphrase-file", help="File holding the key passphrase.")
    ] = None,
    store: Annotated[
        Path | None, typer.Option("--store", help="The officer's local policy store (SQLite).")
    ] = None,
    expires_in: Annotated[
        int, typer.Option("--expires-in", min=60, max=7 * 86400, help="Approval lifetime, s.")
    ] = 3600,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Approve a withdrawal waiting for officers in the signer API."""
    from coordinator.api.auth import load_private_key  # noqa: PLC0415
    from coordinator.api.client import ApiRefused, TesseraClient  # noqa: PLC0415
    from policies import operations as ops  # noqa: PLC0415
    from policies.locations import DEFAULT_STORE  # noqa: PLC0415
    from policies.render import Output  # noqa: PLC0415

    out = Output(as_json)
    with out.guarded():
        try:
            private = load_private_key(api_key.read_bytes())
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(f"--api-key: {exc}") from exc
        with TesseraClient(server, api_key_id, private) as api:
            try:
                withdrawal = api.withdrawal(withdrawal_id)
                intent = api.intent(withdrawal_id)
            except ApiRefused as exc:
                out.fail(exc)
            out.note(
                f"withdrawal {withdrawal.id} ({withdrawal.status}): {withdrawal.amount} "
                f"{withdrawal.asset} on chain {withdrawal.chain_id} from wallet "
                f"{withdrawal.wallet} to {withdrawal.destination}"
            )
            out.note("the intent the nodes will evaluate:\n" + json.dumps(intent, indent=2))
            with tempfile.TemporaryDirectory() as scratch:
                request = Path(scratch) / "request.json"
                request.write_text(json.dumps(intent))
                doc = ops.decide_withdrawal(
                    store or DEFAULT_STORE,
                    request,
                    key,
                    passphrase_file,
                    "approve",
                    expires_in=expires_in,
                    reason=None,
                    out=None,
                    progress=out.progress,
                )
            try:
                after = api.approve(withdrawal_id, doc["approval"])
            except ApiRefused as exc:
                out.fail(exc)
    result = {
        "withdrawal": after.id,
        "status": after.status.value,
        "officer": doc["officer"],
        "approvals": after.approvals,
        "local_evaluation": doc["status"],
    }
    if as_json:
        out.json(result)
    else:
        out.say(
            f"approved {after.id} as {doc['officer']}: now {after.status.value}, approved by "
            f"{', '.join(after.approvals)}"
        )
    if doc["status"] not in ("approved", "pending"):
        raise typer.Exit(EXIT_REFUSED)
