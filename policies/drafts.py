"""Policy files on disk, without the store: the starter policy, checking a file, its hash, and
writing the next version of a policy so that nobody copies a 64-hex ``previous`` by hand.

Only `policies.document` (pydantic, YAML) is needed here, not the store or the key code: the
commands that only read files (`policy validate`, `policy hash`) start faster for it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from policies.document import PolicyDocument, load_policy, parse_policy
from policies.errors import StoreError, UsageError
from policies.locations import EXAMPLES, example
from policies.structured import parse_structured_text

Doc = dict[str, Any]

# The examples carry test officer keys (derived from public seeds): the starter says so where
# the operator edits, so that nobody activates them by accident.
_STARTER_HEADER = (
    "# Starter policy from the Tessera examples.  The officers below are TEST KEYS\n"
    "# derived from public seeds: replace each with a key from\n"
    "# `tessera officer create-key` before proposing this policy.\n"
)


def refuse_existing(path: Path | None) -> None:
    if path is not None and path.exists():
        raise StoreError(str(path), "already exists; refusing to overwrite")


def write_new(path: Path, text: str) -> None:
    """Create ``path`` with ``text``; never overwrites (exclusive create)."""
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError as exc:
        raise StoreError(str(path), "already exists; refusing to overwrite") from exc
    except OSError as exc:
        raise StoreError(str(path), f"cannot write ({exc.strerror})") from exc


def starter_text(example_name: str) -> str:
    """The text of a shipped example policy, as `policy init` writes it."""
    if example_name not in EXAMPLES:
        raise UsageError("--example", f"{example_name!r}: one of {', '.join(EXAMPLES)}")
    text = example(example_name).read_text(encoding="utf-8")
    if example_name.endswith((".yaml", ".yml")):
        text = _STARTER_HEADER + text
    return text


def validate(file: Path) -> Doc:
    """Every problem of a policy file (schema and cross-checks), or its identity."""
    document = load_policy(file)
    return {
        "file": str(file),
        "valid": True,
        "version": document.version,
        "previous": document.previous,
        "policy_hash": document.policy_hash(),
    }


def policy_hash(file: Path) -> Doc:
    document = load_policy(file)
    return {"file": str(file), "version": document.version, "policy_hash": document.policy_hash()}


def next_version_from_file(out: Path, previous_file: Path) -> Doc:
    """The version after ``previous_file``; from YAML its comments and layout are kept."""
    refuse_existing(out)
    base = load_policy(previous_file)
    raw = None
    if previous_file.suffix.lower() in (".yaml", ".yml"):
        raw = _bump_yaml(previous_file.read_text(encoding="utf-8"), base)
    return write_next_version(out, base, str(previous_file), raw)


def write_next_version(out: Path, base: PolicyDocument, source: str, text: str | None) -> Doc:
    """Write ``text`` (else ``base`` with version + 1 and ``previous`` = its hash, as JSON or
    YAML by the suffix of ``out``), after checking it reads back as exactly that version."""
    refuse_existing(out)
    if text is None:
        obj = base.canonical_object()
        obj["version"] = base.version + 1
        obj["previous"] = base.policy_hash()
        if out.suffix.lower() == ".json":
            text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
        else:
            text = _yaml_text(obj, base)
    # Never write a file that would not read back as exactly the next version.
    written = parse_policy(
        parse_structured_text(text, source=str(out), as_json=out.suffix.lower() == ".json"),
        source=str(out),
    )
    if written.version != base.version + 1 or written.previous != base.policy_hash():
        raise StoreError(str(out), "the written version/previous do not read back; not written")
    write_new(out, text)
    return {
        "file": str(out),
        "based_on": source,
        "version": written.version,
        "previous": written.previous,
        "policy_hash": written.policy_hash(),
    }


_VERSION_LINE = re.compile(r"^version:[ \t]*\d+[ \t]*(#.*)?$", re.MULTILINE)
_PREVIOUS_LINE = re.compile(r"^previous:.*$", re.MULTILINE)


def _bump_yaml(raw: str, base: PolicyDocument) -> str | None:
    """``raw`` with its top-level ``version`` and ``previous`` lines changed, comments kept;
    None when the file does not have the plain one-line form (then it is written afresh)."""
    if len(_VERSION_LINE.findall(raw)) != 1 or len(_PREVIOUS_LINE.findall(raw)) > 1:
        return None
    version_line = f"version: {base.version + 1}"
    previous_line = f'previous: "{base.policy_hash()}"'
    if _PREVIOUS_LINE.search(raw):
        bumped = _VERSION_LINE.sub(version_line, raw)
        return _PREVIOUS_LINE.sub(previous_line, bumped)
    return _VERSION_LINE.sub(f"{version_line}\n{previous_line}", raw)


def _yaml_text(obj: dict[str, Any], base: PolicyDocument) -> str:
    import yaml  # noqa: PLC0415 (only this path writes YAML)

    header = (
        f"# Tessera policy version {obj['version']}, following version {base.version} "
        f"({base.policy_hash()[:16]}…).\n# Written by `tessera policy new-version`; edit, then "
        "`tessera policy validate` and `tessera policy propose`.\n"
    )
    return header + yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)
