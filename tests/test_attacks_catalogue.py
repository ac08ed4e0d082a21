"""The attack catalogue `docs/attacks.md` cannot rot.

Code, tests and docs cite the catalogue as ``attacks.md A17``, ``attacks.md §2``, ``(A03)``, by a
sub-test id of the research catalogue (``T12c``) or in a test's name (``test_T02a_…``,
``test_A20_…``).  This module guards, statically (no imports of the code, no network):

- every cited attack id A01…A20 has its own ``## Ann.`` section in docs/attacks.md;
- every cited sub-test id Tnn[x] is listed inside the section of its attack Ann;
- every cited ``attacks.md §N`` has its ``## §N.`` section;
- every ``tests/<file>.py::test_<name>`` that docs/attacks.md names is a function of that file,
  and every ``signer/…``-style module path it names exists;
- every ``Check.X`` that docs/attacks.md names is a member of `signer.errors.Check`.

A failure names the citing file and line and the missing id, or the dangling test name.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "docs" / "attacks.md"
SELF = Path(__file__).resolve()
#: Where citations are collected (README.md is a file, the rest directories).
SOURCES = ("signer", "coordinator", "policies", "hsm", "tests", "benchmarks", "docs", "README.md")
#: Citations live in prose and comments: Python sources and Markdown.  Data files (fixtures,
#: keys, base64 blobs) are not scanned, so random ``A12`` substrings there never count.
SUFFIXES = (".py", ".md")

#: An attack id (A01) or a research sub-test id (T12c, or T16 for the whole group), standing
#: alone: not part of a longer word, identifier, hex or base64 run ("0xA17", "SHA256", "T10:00Z"
#: after a date digit, "…+A12=").  Python identifiers are split on "_" separately (test names).
ID_IN_TEXT = re.compile(r"(?<![\w+=])([AT]\d{2}[a-z]?)(?![\w+=])")
ID_PART = re.compile(r"[AT]\d{2}[a-z]?")
#: ``attacks.md §2``, also after ids: ``attacks.md A12, §2``.  A bare "§3" elsewhere is a paper's
#: section (CGGMP21 §3, Groth–Shoup §1.1.2), not the catalogue's.
SECTION_CITATION = re.compile(r"attacks\.md(?:[\s,/]+[AT]\d{2}[a-z]?)*[\s,/]+§\s?(\d+)")

#: Tokens whose text is prose: comments and strings (docstrings included); on Python ≥ 3.12 the
#: literal parts of an f-string arrive as FSTRING_MIDDLE tokens instead of one STRING.
PROSE_TOKENS = frozenset(
    {tokenize.COMMENT, tokenize.STRING} | {getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
)

HEADING = re.compile(r"^## (A\d{2}|§\d+)\. \S", re.MULTILINE)
DOC_TEST = re.compile(r"(tests/[\w/]+\.py)::(\w+)")
DOC_PATH = re.compile(r"`((?:signer|coordinator|policies|hsm|tests|benchmarks)/[\w/]+\.py)`")
DOC_CHECK = re.compile(r"Check\.([A-Z_]+)")


@dataclass(frozen=True)
class Citation:
    path: Path
    line: int
    ident: str  # "A17", "T12c", "T16" or "§2"

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def source_files() -> Iterator[Path]:
    for name in SOURCES:
        top = ROOT / name
        candidates = [top] if top.is_file() else sorted(top.rglob("*"))
        for path in candidates:
            if (
                path.is_file()
                and path.suffix in SUFFIXES
                and "__pycache__" not in path.parts
                and "node_modules" not in path.parts  # coordinator/localchain's npm install
                and path.resolve() not in (SELF, CATALOGUE.resolve())
            ):
                yield path


def text_citations(path: Path, text: str, first_line: int) -> Iterator[Citation]:
    """Ids in a piece of prose (a Markdown file, a comment, a string) starting at `first_line`."""
    for offset, line in enumerate(text.split("\n")):
        for match in ID_IN_TEXT.finditer(line):
            yield Citation(path, first_line + offset, match.group(1))
        for match in SECTION_CITATION.finditer(line):
            yield Citation(path, first_line + offset, "§" + match.group(1))


def python_citations(path: Path, text: str) -> Iterator[Citation]:
    """Comments and strings (docstrings included) as prose, and ids inside test names."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        # A file being edited that does not tokenize: scan it as plain text.
        yield from text_citations(path, text, 1)
        return
    for token in tokens:
        if token.type in PROSE_TOKENS:
            yield from text_citations(path, token.string, token.start[0])
        elif token.type == tokenize.NAME and token.string.startswith("test_"):
            for part in token.string.split("_"):
                if ID_PART.fullmatch(part):
                    yield Citation(path, token.start[0], part)


def citations() -> list[Citation]:
    found: list[Citation] = []
    for path in source_files():
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".py":
            found.extend(python_citations(path, text))
        else:
            found.extend(text_citations(path, text, 1))
    return found


def catalogue_sections() -> dict[str, str]:
    """``{"A01": body, …, "§0": body}`` for every ``## A01. …`` / ``## §0. …`` heading."""
    text = CATALOGUE.read_text(encoding="utf-8")
    matches = list(HEADING.finditer(text))
    sections: dict[str, str] = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        sections[match.group(1)] = text[match.start() : end]
    return sections


def missing_from_catalogue(citation: Citation, sections: dict[str, str]) -> str | None:
    ident = citation.ident
    if ident.startswith(("A", "§")):
        return None if ident in sections else f"no '## {ident}.' section"
    attack = "A" + ident[1:3]
    body = sections.get(attack)
    if body is None:
        return f"no '## {attack}.' section to list {ident} in"
    if len(ident) == 3:  # a whole group such as "T16"
        listed = re.search(rf"(?<![\w+=]){ident}[a-z]?(?![\w+=])", body)
    else:
        listed = re.search(rf"(?<![\w+=]){ident}(?![\w+=])", body)
    return None if listed else f"{ident} not listed in section {attack}"


def functions_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def check_members() -> set[str]:
    tree = ast.parse((ROOT / "signer" / "errors.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Check":
            return {
                target.id
                for statement in node.body
                if isinstance(statement, ast.Assign)
                for target in statement.targets
                if isinstance(target, ast.Name)
            }
    raise AssertionError("signer/errors.py has no class Check")


def test_catalogue_has_every_attack_section() -> None:
    sections = catalogue_sections()
    expected = {f"A{n:02d}" for n in range(1, 21)}
    assert expected <= sections.keys(), sorted(expected - sections.keys())


def test_every_cited_id_is_in_the_catalogue() -> None:
    found = citations()
    # The scan must see the citations that exist; an empty result means the regexes broke.
    assert any(c.ident.startswith("A") for c in found), "no attack id found anywhere"
    assert any(c.ident.startswith("T") for c in found), "no sub-test id found anywhere"
    assert any(c.ident.startswith("§") for c in found), "no attacks.md § citation found"
    sections = catalogue_sections()
    problems = [
        f"{citation.where()}: {citation.ident}: {reason}"
        for citation in found
        if (reason := missing_from_catalogue(citation, sections)) is not None
    ]
    assert not problems, "cited but missing from docs/attacks.md:\n" + "\n".join(problems)


def test_every_test_named_by_the_catalogue_exists() -> None:
    text = CATALOGUE.read_text(encoding="utf-8")
    named = sorted(set(DOC_TEST.findall(text)))
    assert named, "docs/attacks.md names no regression test"
    cache: dict[str, set[str]] = {}
    problems: list[str] = []
    for file, name in named:
        path = ROOT / file
        if not path.is_file():
            problems.append(f"{file}::{name}: no such file")
            continue
        if file not in cache:
            cache[file] = functions_of(path)
        if name not in cache[file]:
            problems.append(f"{file}::{name}: no such function")
    assert not problems, "docs/attacks.md names tests that do not exist:\n" + "\n".join(problems)


def test_every_module_and_check_named_by_the_catalogue_exists() -> None:
    text = CATALOGUE.read_text(encoding="utf-8")
    paths = sorted(set(DOC_PATH.findall(text)))
    missing_paths = [p for p in paths if not (ROOT / p).is_file()]
    assert not missing_paths, f"docs/attacks.md names missing modules: {missing_paths}"
    members = check_members()
    unknown = sorted(set(DOC_CHECK.findall(text)) - members)
    assert not unknown, f"docs/attacks.md names unknown Check codes: {unknown}"
