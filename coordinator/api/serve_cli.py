"""`tessera serve`: checks its arguments, builds the service (`coordinator.api.server`) and
runs it until SIGINT/SIGTERM; a refusal at start (no cluster, a bad registry, half a TLS pair)
exits 1 (2 for usage) with the error in the project's form."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from hsm import output


def serve_command(
    root: Path,
    registry: Path | None,
    host: str,
    port: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    pool_depth: int,
    webhooks: list[str],
    as_json: bool,
    screening_url: str | None = None,
    screening_key: str | None = None,
    screening_timeout: float = 5.0,
    screening_max_defer: float = 3600.0,
) -> None:
    from coordinator.api.screening import ScreeningError, check_url, load_screen_key  # noqa: PLC0415
    from coordinator.api.server import ServeOptions, build, run  # noqa: PLC0415
    from coordinator.cluster import LocalCluster  # noqa: PLC0415
    from coordinator.registry import MAINNETS, load_registry  # noqa: PLC0415
    from signer.errors import TesseraError  # noqa: PLC0415

    if (tls_cert is None) != (tls_key is None):
        output.usage("--tls-cert and --tls-key go together", as_json)
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            output.usage(f"{path}: no such file", as_json)
    screen_key = None
    if (screening_url is None) != (screening_key is None):
        output.usage("--screening-url and --screening-key go together", as_json)
    if screening_url is not None and screening_key is not None:
        try:
            check_url(screening_url)
            screen_key = load_screen_key(screening_key)
        except ScreeningError as exc:
            output.usage(exc.detail, as_json)
    options = ServeOptions(
        host=host,
        port=port,
        certfile=tls_cert,
        keyfile=tls_key,
        pool_depth=pool_depth,
        webhook_urls=webhooks,
        screening_url=screening_url,
        screening_key=screen_key,
        screening_timeout=screening_timeout,
        screening_max_defer=screening_max_defer,
    )
    try:
        loaded = load_registry(registry or MAINNETS)
        service = build(LocalCluster.load(root), loaded, options)
    except (TesseraError, OSError, ValueError) as exc:
        output.refuse(exc, as_json, what="cannot serve")
    scheme = "https" if tls_cert is not None else "http"

    async def started() -> None:
        doc = {"serving": f"{scheme}://{host}:{port}", "webhook_public_key": None}
        from coordinator.api.webhooks import public_key_text  # noqa: PLC0415

        doc["webhook_public_key"] = public_key_text(service.webhooks.signing_key)
        if service.screener is not None:
            # what the screen verifies the service's requests with
            doc["screening_public_key"] = public_key_text(service.screener.signing_key)
        if as_json:
            typer.echo(json.dumps(doc))
        else:
            output.errors.print(
                f"serving {doc['serving']} (webhooks signed by {doc['webhook_public_key']}); "
                "Ctrl-C stops",
                highlight=False,
            )

    asyncio.run(run(service, options, started))
