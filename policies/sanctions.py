"""Import a sanctions list (CSV or JSON) into blacklist entries.

Published lists rarely carry EIP-55 checksums, so — unlike the policy document itself — the
importer accepts single-case addresses and writes them in checksummed form; a mixed-case address
whose checksum is wrong is still refused (it was typed or altered by hand).  Every bad line is
reported (`SanctionsImportError.problems`), the first one in the message; nothing is returned
unless the whole list is good.  Repeated (address, chain) pairs are kept once.

CSV: a header row with an ``address`` column and optional ``chain_id`` and ``label`` columns
(other columns are ignored; blank lines and lines starting with ``#`` are skipped).
JSON: a list of address strings or of ``{"address", "chain_id"?, "label"?}`` objects, or an
object ``{"entries": [...]}`` holding such a list.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from eth_utils.address import to_checksum_address

from policies.document import MAX_SAFE_INT, BlacklistEntry, PolicyDocument
from policies.errors import PolicySchemaError, SanctionsImportError
from policies.structured import MAX_FILE_BYTES, parse_structured_text

_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class _BadCell(Exception):
    """One bad cell of one entry (collected, then reported with its line)."""

    def __init__(self, reason: str, value: object) -> None:
        super().__init__(reason)
        self.reason = reason
        self.value = value


class _Collector:
    def __init__(self, source: str, default_label: str | None) -> None:
        self.source = source
        self.default_label = default_label
        self.problems: list[tuple[int, object, str]] = []
        self.entries: dict[tuple[str, int | None], BlacklistEntry] = {}

    def add(self, line: int, address: object, chain_id: object, label: object) -> None:
        try:
            checked = _address(address)
            chain = _chain(chain_id)
            text = _label(label, self.default_label)
        except _BadCell as exc:
            self.problems.append((line, exc.value, exc.reason))
            return
        key = (checked.lower(), chain)
        if key not in self.entries:
            self.entries[key] = BlacklistEntry(address=checked, chain_id=chain, label=text)

    def result(self) -> tuple[BlacklistEntry, ...]:
        if self.problems:
            line, value, reason = self.problems[0]
            error = SanctionsImportError(self.source, line, value, reason)
            error.problems = tuple(self.problems)
            raise error
        return tuple(self.entries.values())


def _address(value: object) -> str:
    if not isinstance(value, str) or not _ADDRESS_RE.fullmatch(value.strip()):
        raise _BadCell("not a 20-byte hex address (0x followed by 40 hex digits)", value)
    text = value.strip()
    digits = text[2:]
    checksummed = to_checksum_address(text)
    if digits not in (digits.lower(), digits.upper()) and text != checksummed:
        raise _BadCell("EIP-55 checksum mismatch in a mixed-case address", value)
    return checksummed


def _chain(value: object) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SAFE_INT:
        raise _BadCell("chain_id must be a positive integer (blank: every chain)", value)
    return value


def _label(value: object, default: str | None) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if not isinstance(value, str) or len(value) > 200 or _CONTROL_RE.search(value):
        raise _BadCell("label must be text of at most 200 characters", value)
    return value.strip()


def parse_sanctions_csv(
    text: str, *, source: str = "<csv>", default_label: str | None = None
) -> tuple[BlacklistEntry, ...]:
    """Blacklist entries from CSV text (see the module docstring for the columns)."""
    collector = _Collector(source, default_label)
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise SanctionsImportError(source, 1, None, "empty list: no header and no entries")
    header_line, header_text = lines[0]
    header = [name.strip().lower() for name in next(csv.reader([header_text]))]
    if "address" not in header:
        raise SanctionsImportError(
            source, header_line, header_text, "the header row needs an 'address' column"
        )
    column = {
        name: header.index(name) for name in ("address", "chain_id", "label") if name in header
    }
    for number, line in lines[1:]:
        cells = next(csv.reader(io.StringIO(line)))
        if len(cells) != len(header):
            collector.problems.append(
                (number, line, f"{len(cells)} columns where the header has {len(header)}")
            )
            continue

        def cell(name: str, cells: Sequence[str] = cells) -> str | None:
            return cells[column[name]] if name in column else None

        collector.add(number, cell("address"), cell("chain_id"), cell("label"))
    return collector.result()


def _item_lines(text: str, count: int) -> list[int]:
    """1-based line of each top-level list item (JSON is YAML, whose nodes carry marks)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        node = None
    if isinstance(node, yaml.MappingNode):
        node = next(
            (value for key, value in node.value if getattr(key, "value", None) == "entries"), None
        )
    if isinstance(node, yaml.SequenceNode) and len(node.value) == count:
        return [item.start_mark.line + 1 for item in node.value]
    return list(range(1, count + 1))


def parse_sanctions_json(
    text: str, *, source: str = "<json>", default_label: str | None = None
) -> tuple[BlacklistEntry, ...]:
    """Blacklist entries from JSON text (see the module docstring for the shapes)."""
    try:
        data = parse_structured_text(text, source=source, as_json=True)
    except PolicySchemaError as exc:
        raise SanctionsImportError(source, 1, exc.value, exc.reason) from exc
    if isinstance(data, dict) and set(data) == {"entries"}:
        data = data["entries"]
    if not isinstance(data, list):
        raise SanctionsImportError(
            source, 1, type(data).__name__, 'expected a list of entries or {"entries": [...]}'
        )
    collector = _Collector(source, default_label)
    for line, item in zip(_item_lines(text, len(data)), data, strict=True):
        if isinstance(item, str):
            collector.add(line, item, None, None)
        elif isinstance(item, dict):
            unknown = sorted(set(item) - {"address", "chain_id", "label"})
            if unknown:
                collector.problems.append((line, unknown, "unknown fields in a sanctions entry"))
                continue
            collector.add(line, item.get("address"), item.get("chain_id"), item.get("label"))
        else:
            collector.problems.append((line, item, "an entry is an address or an object"))
    return collector.result()


def load_sanctions(path: Path, *, default_label: str | None = None) -> tuple[BlacklistEntry, ...]:
    """Read a sanctions list file: JSON for ``.json``, CSV otherwise."""
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SanctionsImportError(source, 0, source, f"cannot read: {exc.strerror}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise SanctionsImportError(source, 0, len(data), "file larger than 64 MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SanctionsImportError(source, 0, None, f"not UTF-8 (byte {exc.start})") from exc
    label = default_label if default_label is not None else f"sanctions list {path.name}"[:200]
    if path.suffix.lower() == ".json":
        return parse_sanctions_json(text, source=source, default_label=label)
    return parse_sanctions_csv(text, source=source, default_label=label)


def next_version_with_blacklist(
    policy: PolicyDocument, entries: Sequence[BlacklistEntry]
) -> tuple[dict[str, Any], int]:
    """The raw document of the next version (version + 1, `previous` = this hash) with `entries`
    added to the blacklist, and how many were new.  It still has to be proposed and signed."""
    obj = policy.canonical_object()
    present = {(entry.address.lower(), entry.chain_id) for entry in policy.blacklist}
    added = 0
    for entry in entries:
        key = (entry.address.lower(), entry.chain_id)
        if key not in present:
            present.add(key)
            obj["blacklist"].append(entry.model_dump(mode="json"))
            added += 1
    obj["version"] = policy.version + 1
    obj["previous"] = policy.policy_hash()
    return obj, added
