"""Batch files (coordinator/batches.py): CSV and JSON read into payouts in file order; every
wrong row named by number and field, never its value; the whole file refused, nothing partial."""

from __future__ import annotations

import json

import pytest

from coordinator.batches import MAX_PAYOUTS, BatchRefused, parse_batch
from coordinator.fees import FeeLevel

TO = "0xA1A1a1a1A1A1A1A1A1a1a1a1a1a1A1A1a1A1a1a1"
HEADER = "payout_id,chain_id,asset,destination,amount,fee_level\n"


def parse(text: str, fmt: str = "csv") -> list[object]:
    return list(parse_batch(text.encode(), fmt, wallet="hot", initiator="svc"))


def test_a_csv_batch_in_file_order() -> None:
    text = HEADER + f"p1,31337,ETH,{TO},0.5,high\np2,1338,USDT,{TO},12.345678,\n"
    first, second = parse_batch(text.encode(), "csv", wallet="hot", initiator="svc")
    assert (first.payout_id, first.chain_id, first.asset, first.amount) == (
        "p1",
        31337,
        "ETH",
        "0.5",
    )
    assert first.fee_level is FeeLevel.HIGH and first.wallet == "hot" and first.initiator == "svc"
    assert second.fee_level is FeeLevel.MEDIUM  # empty: the default
    # a BOM and CRLF line ends, as spreadsheets write them
    again = parse_batch(
        ("\ufeff" + text.replace("\n", "\r\n")).encode(), "csv", wallet="hot", initiator="svc"
    )
    assert [r.payout_id for r in again] == ["p1", "p2"]


def test_a_json_batch() -> None:
    rows = [
        {"payout_id": "j1", "chain_id": 31337, "asset": "DAI", "destination": TO, "amount": "1"},
        {
            "payout_id": "j2",
            "chain_id": "31337",
            "asset": "ETH",
            "destination": TO,
            "amount": "2",
            "fee_level": "low",
        },
    ]
    out = parse_batch(json.dumps(rows).encode(), "json", wallet="hot", initiator="svc")
    assert [(r.payout_id, r.chain_id, r.fee_level) for r in out] == [
        ("j1", 31337, FeeLevel.MEDIUM),
        ("j2", 31337, FeeLevel.LOW),
    ]


@pytest.mark.parametrize(
    ("text", "fmt", "says"),
    [
        ("", "csv", "no header row"),
        ("payout_id,asset\n", "csv", "missing column(s): chain_id, destination, amount"),
        (HEADER.rstrip() + ",secret\n", "csv", "1 unknown column(s)"),
        (HEADER, "csv", "no payouts"),
        (HEADER + "p1,31337,ETH\n", "csv", "row 1: not as many fields"),
        (HEADER + f"p1,31337,ETH,{TO},1,fast\n", "csv", "row 1: fee_level must be"),
        (HEADER + f"p1,chain,ETH,{TO},1,\n", "csv", "row 1: chain_id must be"),
        (HEADER + f"p1,1,ETH,{TO},,\n", "csv", "row 1: amount must be non-empty"),
        ("{}", "json", "an array of payout objects"),
        ("[1]", "json", "row 1: not an object"),
        ('[{"payout_id": "x", "chain_id": NaN}]', "json", "not JSON"),
        ('[{"payout_id": "x"}]', "json", "row 1: missing chain_id"),
        (
            json.dumps(
                [{"payout_id": "x", "chain_id": 1, "asset": "E", "destination": TO, "amount": 1}]
            ),
            "json",
            "amount must be non-empty text",
        ),
        ("[]", "json", "no payouts"),
        ("x", "xml", "unknown format"),
    ],
)
def test_a_wrong_batch_is_refused_whole_naming_the_row(text: str, fmt: str, says: str) -> None:
    with pytest.raises(BatchRefused) as caught:
        parse(text, fmt)
    assert says in str(caught.value)
    assert "secret" not in str(caught.value)  # names, never the values


def test_every_wrong_row_is_named_and_the_list_is_bounded() -> None:
    rows = "".join(f"p{i},x,ETH,{TO},1,\n" for i in range(50))
    with pytest.raises(BatchRefused) as caught:
        parse(HEADER + rows)
    assert len(caught.value.problems) == 50
    assert "row 50: chain_id" in caught.value.problems[-1]
    assert str(caught.value).endswith("and 30 more")


def test_the_size_limits() -> None:
    rows = "".join(f"p{i},1,ETH,{TO},1,\n" for i in range(MAX_PAYOUTS + 1))
    with pytest.raises(BatchRefused, match="more than 1000 payouts"):
        parse(HEADER + rows)
    assert len(parse(HEADER + rows.split("\n", 1)[1])) == MAX_PAYOUTS
    with pytest.raises(BatchRefused, match="over 2 MiB"):
        parse_batch(b"x" * (2 * 1024 * 1024 + 1), "csv", wallet="w", initiator="i")
    with pytest.raises(BatchRefused, match="not UTF-8"):
        parse_batch(b"\xff\xfe", "csv", wallet="w", initiator="i")
