"""`tessera webhook …`: the signer API's webhook endpoints, administered over the API (scope
`admin`; docs/api.md, "Webhook administration").

- `list` — every endpoint, disabled ones too, with its counter and pending/dead deliveries;
- `add URL` — a new receiver (a URL with an endpoint already gets that one back);
- `disable ENDPOINT_ID`, `enable ENDPOINT_ID` — stop, and resume without a gap;
- `dead [--endpoint ID]` — the dead letters (deliveries given up on);
- `resend --event-id N | --withdrawal ID | --tx-hash HASH` — deliver again, to every enabled
  endpoint, as new deliveries.

Every command takes `--server URL --api-key-id k_… --api-key FILE [--ca-cert FILE] [--json]`.
Exit codes as every command group: 0 done, 1 refused (the service's problem, with its code, or
the service unreachable: `UNREACHABLE`), 2 usage (a missing or unreadable key, not exactly one
resend key); with `--json` the result, or the error as `{"error": {"code", "detail"}}`, is one
JSON object on stdout (`hsm.output`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from hsm import output
from hsm.output import JsonUsageGroup, emit

if TYPE_CHECKING:
    from coordinator.api.client import TesseraClient
    from coordinator.api.webhook_models import WebhookEndpoint

webhook_app = typer.Typer(
    cls=JsonUsageGroup,
    help=(
        "The signer API's webhook endpoints: list, add, disable, enable, the dead letters, "
        "and resends (an admin API client's key)."
    ),
    no_args_is_help=True,
)
console = Console(soft_wrap=True)

T = TypeVar("T")
#: `dead` reads pages until this many deliveries at most.
MAX_LISTED = 10_000

ServerOption = Annotated[str, typer.Option("--server", help="The signer API's base URL.")]
ApiKeyIdOption = Annotated[
    str, typer.Option("--api-key-id", help="The admin API client's key id (k_…).")
]
ApiKeyOption = Annotated[
    Path,
    typer.Option("--api-key", help="PEM private key of that API client (admin).", dir_okay=False),
]
CaOption = Annotated[
    Path | None,
    typer.Option("--ca-cert", help="PEM CA bundle to trust for an https --server.", dir_okay=False),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Machine-readable output (errors too) on stdout.")
]
EndpointArgument = Annotated[str, typer.Argument(help="The endpoint (we_…).")]


@contextmanager
def _api(
    server: str, key_id: str, key_file: Path, ca_cert: Path | None, as_json: bool
) -> Iterator[TesseraClient]:
    from cryptography.exceptions import UnsupportedAlgorithm  # noqa: PLC0415

    from coordinator.api.auth import load_private_key  # noqa: PLC0415 (start-up time)
    from coordinator.api.client import TesseraClient  # noqa: PLC0415

    try:
        private = load_private_key(key_file.read_bytes())
    except OSError as exc:
        output.usage(f"--api-key {key_file}: cannot read it ({exc.strerror})", as_json)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # TypeError: an encrypted PEM; never echo the file's content
        output.usage(f"--api-key {key_file}: not an unencrypted PEM Ed25519 key", as_json)
    if ca_cert is not None and not ca_cert.is_file():
        output.usage(f"--ca-cert {ca_cert}: no such file", as_json)
    verify: bool | str = True if ca_cert is None else str(ca_cert)
    try:
        client = TesseraClient(server, key_id, private, verify=verify)
    except ValueError:
        output.usage("--server: not a URL", as_json)
    try:
        yield client
    finally:
        client.close()


def _call(as_json: bool, call: Callable[[], T]) -> T:
    """`call`'s answer; a refusal (exit 1) with the service's code, or UNREACHABLE."""
    import httpx  # noqa: PLC0415

    from coordinator.api.client import ApiRefused  # noqa: PLC0415

    try:
        return call()
    except ApiRefused as exc:
        output.refuse(exc, as_json, what="refused")
    except httpx.HTTPError as exc:
        output.fail(
            as_json,
            "UNREACHABLE",
            f"the service did not answer ({type(exc).__name__})",
            what="unreachable",
        )


def _endpoint_doc(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return endpoint.model_dump(mode="json")


def _show_endpoints(endpoints: list[WebhookEndpoint]) -> None:
    table = Table("id", "url", "state", "sequence", "pending", "dead")
    for e in endpoints:
        table.add_row(
            e.id,
            e.url,
            "enabled" if e.enabled else "disabled",
            str(e.sequence),
            str(e.pending),
            str(e.dead),
        )
    console.print(table)


@webhook_app.command("list")
def list_endpoints(
    server: ServerOption,
    api_key_id: ApiKeyIdOption,
    api_key: ApiKeyOption,
    ca_cert: CaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every webhook endpoint, disabled ones too."""
    with _api(server, api_key_id, api_key, ca_cert, as_json) as api:
        endpoints = _call(as_json, api.webhook_endpoints)
    if as_json:
        emit({"endpoints": [_endpoint_doc(e) for e in endpoints]})
        return
    _show_endpoints(endpoints)


@webhook_app.command("add")
def add(
    url: Annotated[str, typer.Argument(help="The receiver's http(s) URL.")],
    server: ServerOption,
    api_key_id: ApiKeyIdOption,
    api_key: ApiKeyOption,
    ca_cert: CaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a receiver: it gets the events created from now on, numbered from 1."""
    with _api(server, api_key_id, api_key, ca_cert, as_json) as api:
        endpoint = _call(as_json, lambda: api.add_webhook_endpoint(url))
    if as_json:
        emit(_endpoint_doc(endpoint))
        return
    state = "" if endpoint.enabled else " (disabled: `tessera webhook enable` it)"
    console.print(f"endpoint {endpoint.id} delivers to {endpoint.url}{state}")


def _switch(
    endpoint_id: str,
    enable: bool,
    server: str,
    api_key_id: str,
    api_key: Path,
    ca_cert: Path | None,
    as_json: bool,
) -> None:
    with _api(server, api_key_id, api_key, ca_cert, as_json) as api:
        call = api.enable_webhook_endpoint if enable else api.disable_webhook_endpoint
        endpoint = _call(as_json, lambda: call(endpoint_id))
    if as_json:
        emit(_endpoint_doc(endpoint))
        return
    console.print(
        f"endpoint {endpoint.id} {'enabled' if endpoint.enabled else 'disabled'} "
        f"(sequence {endpoint.sequence}, {endpoint.pending} pending)"
    )


@webhook_app.command("disable")
def disable(
    endpoint_id: EndpointArgument,
    server: ServerOption,
    api_key_id: ApiKeyIdOption,
    api_key: ApiKeyOption,
    ca_cert: CaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop delivering to an endpoint (its pending deliveries wait)."""
    _switch(endpoint_id, False, server, api_key_id, api_key, ca_cert, as_json)


@webhook_app.command("enable")
def enable(
    endpoint_id: EndpointArgument,
    server: ServerOption,
    api_key_id: ApiKeyIdOption,
    api_key: ApiKeyOption,
    ca_cert: CaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deliver to an endpoint again, from where it stopped (no gap)."""
    _switch(endpoint_id, True, server, api_key_id, api_key, ca_cert, as_json)


@webhook_app.command("dead")
def dead(
    server: ServerOption,
    api_key_id: ApiKeyIdOption,
    api_key: ApiKeyOption,
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="Only this endpoint's (we_…).")
    ] = None,
    ca_cert: CaOption = None,
    as_json: JsonOption = False,
) -> None:
    """The dead letters: deliveries given up on after their last attempt."""
    from coordinator.api.webhook_models import WebhookDelivery  # noqa: PLC0415

    items: list[WebhookDelivery] = []
    with _api(server, api_key_id, api_key, ca_cert, as_json) as api:
        cursor: str | None = None
        while len(items) < MAX_LISTED:
            page = _call(
                as_json,
                partial(
                    api.webhook_deliveries, "dead", endpoint_id=endpoint, cursor=cursor, limit=500
                ),
            )
            items.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
    if as_json:
        emit({"deliveries": [d.model_dump(mode="json") for d in items], "more": cursor is not None})
        return
    table = Table("endpoint", "sequence", "event", "attempts", "last error")
    for d in items:
        table.add_row(d.endpoint_id, str(d.sequence), str(d.event_id), str(d.attempts),
                      d.last_error or "")  # fmt: skip
    console.print(table)
    if not items:
        console.print("no dead letters")


@webhook_app.command("resend")
def resend(
    server: ServerOption,
    api_key_id: ApiKeyIdOption,
    api_key: ApiKeyOption,
    event_id: Annotated[
        int | None, typer.Option("--event-id", min=1, help="One event, by its event_id.")
    ] = None,
    withdrawal: Annotated[
        str | None, typer.Option("--withdrawal", help="Every event of a withdrawal (wd_…).")
    ] = None,
    tx_hash: Annotated[
        str | None,
        typer.Option("--tx-hash", help="Every event carrying a chain transaction hash (0x…)."),
    ] = None,
    ca_cert: CaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deliver events again to every enabled endpoint, as new deliveries."""
    if sum(v is not None for v in (event_id, withdrawal, tx_hash)) != 1:
        output.usage("give exactly one of --event-id, --withdrawal, --tx-hash", as_json)
    with _api(server, api_key_id, api_key, ca_cert, as_json) as api:
        resent = _call(
            as_json,
            lambda: api.resend_webhooks(
                event_id=event_id, withdrawal_id=withdrawal, tx_hash=tx_hash
            ),
        )
    if as_json:
        emit(resent.model_dump(mode="json"))
        return
    console.print(f"{resent.deliveries} new deliveries")
