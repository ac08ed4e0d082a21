"""docs/errors.md lists exactly the codes of `signer.problems.ErrorCode`, each with its HTTP
status and title, and its example is a valid problem (a static check: no node runs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from signer.problems import STATUS, TITLE, ErrorCode, Problem

PAGE = Path(__file__).parent.parent / "docs" / "errors.md"
ROW = re.compile(r"^\| `([A-Z_]+)` \| (\d{3}) \| ([^|]+) \|", re.MULTILINE)


def documented() -> dict[str, tuple[int, str]]:
    rows = ROW.findall(PAGE.read_text())
    table = {code: (int(status), title.strip()) for code, status, title in rows}
    assert len(table) == len(rows), "a code is listed twice"
    return table


def test_the_errors_table_and_the_enum_are_equal() -> None:
    table = documented()
    assert set(table) == {code.value for code in ErrorCode}
    for code in ErrorCode:
        assert table[code.value] == (STATUS[code], TITLE[code]), code


def test_every_code_has_a_status_and_a_title() -> None:
    assert set(STATUS) == set(ErrorCode) == set(TITLE)
    assert all(400 <= status <= 599 for status in STATUS.values())


def test_the_example_is_a_problem() -> None:
    example = PAGE.read_text().split("```json", 1)[1].split("```", 1)[0]
    parsed = Problem.model_validate(json.loads(example))
    assert parsed == Problem.of(
        parsed.code, parsed.detail, culprit=parsed.culprit, check=parsed.check, node=parsed.node
    )


def test_nodes_md_links_the_table_instead_of_the_old_error_form() -> None:
    page = (PAGE.parent / "nodes.md").read_text()
    assert "(errors.md)" in page and '{"error"' not in page
