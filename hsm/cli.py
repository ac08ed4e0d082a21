"""`tessera hsm …`: create a node's SoftHSM2 token and check that a token is usable.

Never prints a PIN.  Every command takes `--json` (`hsm.output`): its result, or its error as
``{"error": {"code", "detail"}}``, is one JSON object on stdout; without it errors go to stderr.
Exit codes: 0 done, 1 refused, 2 usage.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from hsm.config import CONFIG_FILE_NAME, HsmConfig, read_pin_file, write_pin_file
from hsm.errors import HsmConfigError, HsmError
from hsm.inventory import TokenInfo, TokenObjectInfo
from hsm.keys import NodeKeys
from hsm.keystore import KeyStore
from hsm.output import JsonUsageGroup, refuse
from hsm.softhsm import init_token, read_config_dir

hsm_app = typer.Typer(
    help=(
        "PKCS#11 token of a key-share node: create one with SoftHSM2 (`init`), check one "
        "(`status`).  Each node has its own token; shares are sealed under a key that never "
        "leaves it."
    ),
    no_args_is_help=True,
    cls=JsonUsageGroup,
)
console = Console(soft_wrap=True)

GENERATED_PIN_BYTES = 24  # token_urlsafe(24): 32 characters, 192 bits


def _fail(what: str, exc: HsmError, as_json: bool) -> NoReturn:
    refuse(exc, as_json, what=f"hsm {what} failed")


def _keys_doc(keys: NodeKeys) -> dict[str, object]:
    return {
        "node_id": keys.node_id,
        "kek_label": keys.kek_label,
        "identity_label": keys.identity_label,
        "identity": keys.identity.to_dict(),
        "identity_fingerprint": keys.identity.fingerprint(),
        "created_kek": keys.created_kek,
        "created_identity": keys.created_identity,
    }


@hsm_app.command("init")
def init(
    directory: Annotated[
        Path,
        typer.Option(
            "--dir",
            help="New, empty directory for this node's token (created with mode 0700).",
            file_okay=False,
        ),
    ],
    label: Annotated[
        str, typer.Option("--label", help="Token label (at most 32 bytes), e.g. the node id.")
    ],
    pin_file: Annotated[
        Path,
        typer.Option(
            "--pin-file",
            help=(
                "User PIN file (one line, mode 0600).  If it does not exist, a random PIN is "
                "generated and written there."
            ),
            dir_okay=False,
        ),
    ],
    so_pin_file: Annotated[
        Path | None,
        typer.Option(
            "--so-pin-file",
            help=(
                "Security-officer PIN file (mode 0600).  Without it a random SO PIN is used and "
                "discarded: nobody can then reset the user PIN or re-initialise the token."
            ),
            dir_okay=False,
        ),
    ] = None,
    module: Annotated[
        Path | None,
        typer.Option(
            "--module", help="SoftHSM2 PKCS#11 module (default: searched).", dir_okay=False
        ),
    ] = None,
    node: Annotated[
        str | None,
        typer.Option(
            "--node", help="Also create this node's KEK and identity key and print its public key."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only a JSON document (errors too).")
    ] = False,
) -> None:
    """Create a SoftHSM2 token in DIR and save its settings as DIR/tessera-hsm.json.

    Example: tessera hsm init --dir /var/lib/tessera/node-1/hsm --label node-1
    --pin-file /etc/tessera/node-1.pin

    Then start the node with that config (or `tessera hsm status --dir DIR`).
    """
    created_pin_file = False
    try:
        if pin_file.exists():
            pin = read_pin_file(pin_file)
        else:
            pin = secrets.token_urlsafe(GENERATED_PIN_BYTES)
            write_pin_file(pin_file, pin)
            created_pin_file = True
        so_pin = (
            read_pin_file(so_pin_file, "so_pin_file")
            if so_pin_file is not None
            else secrets.token_urlsafe(GENERATED_PIN_BYTES)
        )
        config = init_token(directory, label, pin, so_pin, pin_file=pin_file, module_path=module)
    except HsmError as exc:
        if created_pin_file:
            pin_file.unlink(missing_ok=True)  # the token was not made; leave nothing behind
        _fail("init", exc, as_json)
    config_path = directory.resolve() / CONFIG_FILE_NAME
    config.save(config_path)
    keys: NodeKeys | None = None
    if node is not None:
        try:
            with KeyStore.open(config) as store:
                keys = store.ensure_node_keys(node)
        except HsmError as exc:
            _fail("init (node keys)", exc, as_json)
    doc: dict[str, object] = {
        "config": config.to_dict(),
        "config_file": str(config_path),
        "pin_file_generated": created_pin_file,
        "so_pin": "from file" if so_pin_file is not None else "random, discarded",
    }
    if keys is not None:
        doc["node_keys"] = _keys_doc(keys)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    console.print(f"[green]token {label!r} created[/green] in {directory.resolve()}")
    if created_pin_file:
        console.print(f"generated a random user PIN in {pin_file} (mode 0600)")
    if so_pin_file is None:
        console.print("the SO PIN was random and has been discarded")
    console.print(f"settings saved to {config_path}:")
    typer.echo(json.dumps(config.to_dict(), indent=2))
    if config.softhsm_conf is not None:
        console.print(f"export SOFTHSM2_CONF={config.softhsm_conf}", highlight=False)
    if keys is not None:
        console.print(
            f"node {keys.node_id!r}: identity {keys.identity.algorithm} "
            f"{keys.identity.public_bytes.hex()}",
            highlight=False,
        )


def _status_config(
    directory: Path | None,
    config_file: Path | None,
    conf: Path | None,
    label: str | None,
    pin_file: Path | None,
    pin_env: str | None,
    module: Path | None,
) -> HsmConfig:
    if directory is not None and config_file is not None:
        raise HsmConfigError("--dir/--config", "give one of them, not both")
    base: HsmConfig | None = None
    if directory is not None:
        base = read_config_dir(directory)
    elif config_file is not None:
        base = HsmConfig.load(config_file)
    doc: dict[str, object] = dict(base.to_dict()) if base is not None else {}
    if pin_file is not None or pin_env is not None:
        doc["pin_file"] = None if pin_file is None else str(pin_file)
        doc["pin_env"] = pin_env
    for key, value in (("softhsm_conf", conf), ("token_label", label), ("module_path", module)):
        if value is not None:
            doc[key] = str(value)
    if "token_label" not in doc:
        raise HsmConfigError("--label", "give --dir, --config or --label")
    return HsmConfig.from_dict(doc)


@hsm_app.command("status")
def status(
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Token directory made by `hsm init` (reads its settings).",
            file_okay=False,
        ),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="A tessera-hsm.json settings file.", dir_okay=False),
    ] = None,
    conf: Annotated[
        Path | None,
        typer.Option(
            "--conf", help="SoftHSM2 configuration file (sets SOFTHSM2_CONF).", dir_okay=False
        ),
    ] = None,
    label: Annotated[str | None, typer.Option("--label", help="Token label.")] = None,
    pin_file: Annotated[
        Path | None, typer.Option("--pin-file", help="User PIN file.", dir_okay=False)
    ] = None,
    pin_env: Annotated[
        str | None, typer.Option("--pin-env", help="Environment variable holding the PIN.")
    ] = None,
    module: Annotated[
        Path | None, typer.Option("--module", help="PKCS#11 module path.", dir_okay=False)
    ] = None,
    node: Annotated[
        str | None,
        typer.Option("--node", help="Check this node's keys (default: the token's only node)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON document (errors too).")
    ] = False,
) -> None:
    """Open the token, log in, list its objects and check the node's keys (exit 1 on any fault).

    Examples: tessera hsm status --dir /var/lib/tessera/node-1/hsm
    | tessera hsm status --conf softhsm2.conf --label node-1 --pin-env TESSERA_HSM_PIN
    """
    try:
        config = _status_config(directory, config_file, conf, label, pin_file, pin_env, module)
        with KeyStore.open(config) as store:
            info = store.token_info()
            nodes = store.node_ids()
            check = node if node is not None else (nodes[0] if len(nodes) == 1 else None)
            keys = store.load_node_keys(check) if check is not None else None
            objects = store.inventory()
    except HsmError as exc:
        _fail("status", exc, as_json)
    _print_status(config, info, objects, nodes, keys, as_json)


def _print_status(
    config: HsmConfig,
    info: TokenInfo,
    objects: list[TokenObjectInfo],
    nodes: list[str],
    keys: NodeKeys | None,
    as_json: bool,
) -> None:
    if as_json:
        doc: dict[str, object] = {
            "config": config.to_dict(),
            "token": {
                "label": info.label,
                "serial": info.serial,
                "manufacturer": info.manufacturer,
                "model": info.model,
                "flags": list(info.flags),
                "aes_gcm": info.aes_gcm,
                "ed25519": info.ed25519,
                "p256": info.p256,
            },
            "login": "ok",
            "nodes": nodes,
            "node_keys": _keys_doc(keys) if keys is not None else None,
            "objects": [
                {
                    "label": o.label,
                    "class": o.object_class,
                    "key_type": o.key_type,
                    "sensitive": o.sensitive,
                    "extractable": o.extractable,
                }
                for o in objects
            ],
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    console.print(
        f"token {info.label!r} (serial {info.serial}, {info.manufacturer} {info.model}): "
        "[green]present, login OK[/green]"
    )
    console.print(f"module {config.module_path}; SOFTHSM2_CONF {config.softhsm_conf or 'unset'}")
    console.print(
        f"mechanisms: AES-GCM {'yes' if info.aes_gcm else 'NO'}, "
        f"Ed25519 {'yes' if info.ed25519 else 'no'}, P-256 {'yes' if info.p256 else 'no'}"
    )
    table = Table(title=f"{len(objects)} object(s)")
    for column in ("label", "class", "type", "sensitive", "extractable"):
        table.add_column(column)
    for o in objects:
        table.add_row(
            o.label,
            o.object_class,
            o.key_type or "-",
            "-" if o.sensitive is None else str(o.sensitive),
            "-" if o.extractable is None else str(o.extractable),
        )
    console.print(table)
    if keys is not None:
        console.print(
            f"node {keys.node_id!r}: KEK and identity key present and pass their checks; "
            f"identity {keys.identity.algorithm} {keys.identity.public_bytes.hex()}",
            highlight=False,
        )
    elif nodes:
        console.print(f"nodes with keys: {', '.join(nodes)} (use --node to check one)")
    else:
        console.print("no node keys yet (the node creates them on first start)")
