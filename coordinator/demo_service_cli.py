"""`tessera demo`'s output: the phases of the demo over the signer API
(`coordinator.demo_service`) with their times, each withdrawal's statuses and times, the
webhooks the receiver got, the balances; or all of it as one JSON document with `--json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from coordinator.cli import console, progress, run_refusing
from hsm import output
from signer.problems import ErrorCode

if TYPE_CHECKING:
    from coordinator.demo_service import ServiceDemoReport

_DECIMALS = {"ETH": 18, "USDT": 6}


def _amount(units: int, asset: str) -> str:
    decimals = _DECIMALS[asset]
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**decimals)
    text = f"{whole:,}.{frac:0{decimals}d}".rstrip("0").rstrip(".")
    return f"{sign}{text}"


def print_service_demo(report: ServiceDemoReport) -> None:
    from coordinator.demo_service import lifecycle_text  # noqa: PLC0415

    table = Table(
        title="Tessera demo — the signer API over HTTP: 2-of-3 nodes (SoftHSM2), the policy in "
        "every node, a Hardhat node"
    )
    table.add_column("phase")
    table.add_column("time", justify="right")
    table.add_column("detail")
    for phase in report.phases:
        table.add_row(phase.name, f"{phase.seconds * 1000:,.1f} ms", phase.detail)
    console.print(table)
    console.print(f"signer API:       {report.service_url} (tessera serve, its own process)")
    console.print(f"local chain:      {report.chain_url} (Hardhat, chain 31337)")
    console.print(f"wallet:           {report.wallet_address}")
    console.print(f"exchange:         {report.exchange} (whitelisted)")
    console.print(f"policy in force:  {report.policy_hash[:16]}… on every node")
    console.print("withdrawals (POST /v1/withdrawals; statuses in ms after the submission):")
    tags = {item.withdrawal.id: f"#{n}" for n, item in enumerate(report.withdrawals, 1)}
    for item in report.withdrawals:
        w = item.withdrawal
        if w.tx_hash:
            what = f"tx {w.tx_hash}"
            if item.approved_by:
                what = f"approved by {', '.join(item.approved_by)}; {what}"
        else:
            rule = f", rule {w.rule_id}" if w.rule_id else ""
            what = f"{w.reason_code}{rule}: {w.reason}"
        console.print(f"  {tags[w.id]} {item.label}: {w.id} {w.status.value}", highlight=False)
        console.print(f"     {what}", markup=False, highlight=False)
        console.print(
            f"     202 in {item.accepted_ms:.0f} ms; {lifecycle_text(item.timeline)}",
            highlight=False,
        )
    hooks = Table(title=f"webhooks received: {len(report.webhooks)}, every signature verified")
    for column in ("seq", "event", "type", "withdrawal", "sub-status"):
        hooks.add_column(column)
    for doc in report.webhooks:
        hooks.add_row(
            str(doc["sequence"]),
            str(doc["event_id"]),
            str(doc["type"]),
            tags.get(str(doc["data"]["id"]), str(doc["data"]["id"])),
            str(doc["data"]["sub_status"]),
        )
    console.print(hooks)
    names = {
        report.wallet_address: "wallet",
        report.exchange: "exchange",
        report.stranger: "not whitelisted",
    }
    for address, assets in report.balances.items():
        for asset, (before, after) in assets.items():
            console.print(
                f"{names[address]:>16} {address} {asset:>4}: {_amount(before, asset)} → "
                f"{_amount(after, asset)} ({_amount(after - before, asset)})"
            )
    console.print(f"presignatures ready in the pool: {report.pool_left}")


def report_document(report: ServiceDemoReport) -> dict[str, Any]:
    return {
        "root": str(report.root),
        "reused_cluster": report.reused_cluster,
        "phases": [
            {"phase": p.name, "seconds": p.seconds, "detail": p.detail} for p in report.phases
        ],
        "service_url": report.service_url,
        "chain_url": report.chain_url,
        "wallet_address": report.wallet_address,
        "exchange": report.exchange,
        "not_whitelisted": report.stranger,
        "token": report.token,
        "policy_hash": report.policy_hash,
        "webhook_public_key": report.webhook_public_key,
        "withdrawals": [
            {
                "label": item.label,
                "withdrawal": item.withdrawal.model_dump(mode="json"),
                "accepted_ms": item.accepted_ms,
                "timeline_ms": [[status, ms] for status, ms in item.timeline],
                "approved_by": item.approved_by,
            }
            for item in report.withdrawals
        ],
        "webhooks": report.webhooks,
        "balances": {
            address: {asset: list(pair) for asset, pair in assets.items()}
            for address, assets in report.balances.items()
        },
        "pool_left": report.pool_left,
    }


def service_demo_command(root: Path, pool_depth: int, keep_running: bool, as_json: bool) -> None:
    try:
        from coordinator.demo_service import run_service_demo  # noqa: PLC0415 (web3: ≈1 s)
    except ImportError as exc:
        output.fail(as_json, ErrorCode.INTERNAL.value, str(exc), what="demo unavailable")
    with progress(as_json, "demo") as say:
        report = run_refusing(
            run_service_demo(root, pool_depth, keep_running, progress=say), "demo failed", as_json
        )
    if as_json:
        typer.echo(json.dumps(report_document(report), indent=2))
    else:
        print_service_demo(report)
