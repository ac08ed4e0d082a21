"""Reading YAML and JSON files strictly, for every file Tessera takes from people: policies,
withdrawal requests, approvals, sanctions lists.

Nothing surprising gets through: no duplicate keys (YAML or JSON), no YAML anchors or aliases
(no expansion bombs), no NaN/Infinity, timestamps kept as strings (parsed later, with offsets),
an unquoted 40-hex-digit address kept as text rather than read as a number, bounded size and
nesting.  Errors are the caller's `PolicySchemaError` subclass, naming the file, line and what
is wrong.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from policies.errors import PolicySchemaError

MAX_FILE_BYTES = 64 * 1024 * 1024
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without surprises: no duplicate keys, no anchors/aliases (no expansion bombs),
    timestamps stay strings (we parse them ourselves, with offsets), and an unquoted 40-hex-digit
    ``0x…`` value stays the address text instead of becoming an integer."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "aliases are not allowed in policy files", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, "mapping keys must be plain scalars", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _construct_int(loader: _StrictLoader, node: yaml.ScalarNode) -> Any:
    if _ADDRESS_RE.fullmatch(node.value):
        return node.value
    return yaml.SafeLoader.construct_yaml_int(loader, node)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
# A copy without the timestamp resolver (SafeLoader's own table stays untouched).
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _line(text: str, index: int) -> str | None:
    """The offending line of a syntax error, as the error's value."""
    lines = text.splitlines()
    return lines[index] if 0 <= index < len(lines) else None


#: Deepest nesting of JSON/YAML collections accepted.  Checked by a scan before any parser
#: runs: the C JSON decoder recurses on the C stack, and libraries loaded in the same process
#: (py-evm, py_ecc) raise Python's recursion limit to 100 000, so "[[[[…" could crash the
#: process instead of raising RecursionError.
MAX_NESTING = 64


def _nesting_depth(text: str, limit: int, quotes: str) -> int:
    """The deepest [ / { nesting, stopping once `limit` is passed.  Brackets inside strings
    delimited by `quotes` are skipped: '"' for JSON; none for YAML, where whether a quote
    starts a string depends on context — counting every bracket only over-estimates."""
    depth = deepest = 0
    quote = ""
    escaped = False
    for char in text:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = ""
            continue
        if char in quotes:
            quote = char
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


def _block_depth(text: str) -> int:
    """Distinct indentation levels of YAML block structure (a bound on its nesting)."""
    levels = {len(line) - len(line.lstrip(" ")) for line in text.splitlines() if line.strip()}
    return len(levels)


def parse_structured_text(
    text: str,
    *,
    source: str,
    as_json: bool | None = None,
    error_type: type[PolicySchemaError] = PolicySchemaError,
) -> Any:
    """Parse YAML or JSON text (JSON when `as_json`, or when None and the text starts with
    ``{`` or ``[``); syntax errors become `error_type` with line and column."""
    if as_json is None:
        as_json = text.lstrip().startswith(("{", "["))
    if len(text) > MAX_FILE_BYTES:
        raise error_type("$", None, f"more than {MAX_FILE_BYTES} characters", source=source)
    depth = _nesting_depth(text, MAX_NESTING, '"' if as_json else "")
    if not as_json:
        depth = max(depth, _block_depth(text))
    if depth > MAX_NESTING:
        raise error_type("$", None, f"nested too deeply (more than {MAX_NESTING})", source=source)
    try:
        if as_json:
            return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except json.JSONDecodeError as exc:
        raise error_type(
            "$",
            _line(text, exc.lineno - 1),
            f"JSON syntax error at line {exc.lineno} column {exc.colno}: {exc.msg}",
            source=source,
        ) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise error_type(
            "$",
            _line(text, mark.line) if mark else None,
            f"YAML error{where}: {exc.problem or exc.context}",
            source=source,
        ) from exc
    except yaml.YAMLError as exc:
        raise error_type("$", None, f"YAML error: {exc}", source=source) from exc
    except RecursionError as exc:
        raise error_type("$", None, "nested too deeply", source=source) from exc
    except ValueError as exc:  # duplicate JSON keys, NaN / Infinity
        raise error_type("$", None, f"JSON: {exc}", source=source) from exc
    _only_json_values(data, "$", source, error_type)
    return data


def _only_json_values(
    value: Any, path: str, source: str, error_type: type[PolicySchemaError]
) -> None:
    """Refuse what YAML can express but JSON cannot (sets, binary, dates via explicit tags,
    non-string keys), so a YAML file means exactly what its JSON form would."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise error_type(where, key, "keys must be strings", source=source)
                stack.append((child, f"{where}.{key}" if where != "$" else key))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{index}]") for index, child in enumerate(item))
        elif item is not None and not isinstance(item, str | int | float | bool):
            raise error_type(
                where, item, f"{type(item).__name__} is not a JSON value", source=source
            )


def read_structured_file(
    path: Path, *, error_type: type[PolicySchemaError] = PolicySchemaError
) -> Any:
    """Read a YAML or JSON file (by suffix, else by content) into plain Python values."""
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error_type(
            "$", source, f"cannot read the file: {exc.strerror}", source=source
        ) from exc
    if len(data) > MAX_FILE_BYTES:
        raise error_type("$", len(data), "file larger than 64 MiB", source=source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error_type("$", None, f"not UTF-8 (byte {exc.start})", source=source) from exc
    suffix = path.suffix.lower()
    as_json = True if suffix == ".json" else False if suffix in (".yaml", ".yml") else None
    return parse_structured_text(text, source=source, as_json=as_json, error_type=error_type)
