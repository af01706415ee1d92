"""The documentation stays true: its examples run and its error catalog is complete.

Every fenced block tagged ``python`` in ``docs/**/*.md`` is executed. The blocks
of one page run in order in one module namespace, so a block may use what an
earlier block on the same page defined; pages do not share anything. Blocks
meant to be read, not run, use another tag (``text``, ``pycon``, ``console``).
"""

from __future__ import annotations

import http
import importlib
import pkgutil
import re
import sys
import textwrap
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

import uno

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
ERROR_CATALOG = DOCS / "errors.md"
MKDOCS_CONFIG = ROOT / "mkdocs.yml"
PAGES = sorted(DOCS.rglob("*.md"))

_OPENING_FENCE = re.compile(r"[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)")
_HTTP_STATUS = re.compile(r"^HTTP status: (\d{3}) ([A-Za-z ]+)\.$", re.MULTILINE)
_STATUSES = {status.value: status.phrase for status in http.HTTPStatus}
_CATALOG_HEADING = re.compile(r"^#{2,6}[ \t]+`(?P<code>[a-z_]+(?:\.[a-z_]+)+)`", re.MULTILINE)


@dataclass(frozen=True)
class CodeBlock:
    """One fenced code block of a Markdown page."""

    language: str
    first_line: int
    """1-based line number, in the page, of the block's first line of code."""
    source: str


def code_blocks(page: Path) -> list[CodeBlock]:
    """Return the fenced code blocks of ``page`` in order, with their code dedented.

    Raises:
        ValueError: a fence is never closed.
    """
    blocks: list[CodeBlock] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _OPENING_FENCE.fullmatch(lines[index])
        index += 1
        if opening is None:
            continue
        fence = opening["fence"]
        closing = re.compile(rf"[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*")
        start = index
        while index < len(lines) and not closing.fullmatch(lines[index]):
            index += 1
        if index == len(lines):
            raise ValueError(f"{page}:{start}: the code fence opened here is never closed")
        info = opening["info"].split()
        blocks.append(
            CodeBlock(
                language=info[0].lower() if info else "",
                first_line=start + 1,
                source=textwrap.dedent("\n".join(lines[start:index])),
            )
        )
        index += 1
    return blocks


def _page_id(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_python_block_of_the_page_runs(page: Path) -> None:
    """Each ```python block runs without error, after the page's earlier blocks."""
    blocks = [block for block in code_blocks(page) if block.language == "python"]
    name = "docs_examples." + re.sub(r"\W", "_", _page_id(page).removesuffix(".md"))
    module = types.ModuleType(name, f"The python examples of docs/{_page_id(page)}.")
    module.__file__ = str(page)
    # Registered, so that classes defined by the examples can find their module
    # (msgspec, dataclasses and typing resolve annotations through sys.modules).
    sys.modules[name] = module
    try:
        for block in blocks:
            _run(block, page, module)
    finally:
        del sys.modules[name]


def _run(block: CodeBlock, page: Path, module: types.ModuleType) -> None:
    where = f"docs/{_page_id(page)}, the python block starting on line {block.first_line}"
    # Leading newlines make the line numbers of tracebacks those of the page itself;
    # dont_inherit keeps this module's `from __future__ import annotations` out.
    padded = "\n" * (block.first_line - 1) + block.source
    try:
        code = compile(padded, str(page), "exec", dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102 - running our own documentation is the test
    except Exception as exc:
        # Skip this function's own frame: the traceback starts in the page.
        tail = exc.__traceback__.tb_next if exc.__traceback__ else None
        shown = "".join(traceback.format_exception(type(exc), exc, tail))
        failure = f"{where} failed: {type(exc).__name__}: {exc}\n\n{shown}"
    else:
        return
    # Outside the except clause, so pytest does not print the example's error twice.
    pytest.fail(failure, pytrace=False)


def _exception_modules() -> list[types.ModuleType]:
    """Import the ``exceptions`` module of every installed uno package that has one."""
    modules = []
    for package in pkgutil.iter_modules(uno.__path__, prefix="uno."):
        name = f"{package.name}.exceptions"
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return modules


def _error_classes(module: types.ModuleType) -> list[type[Exception]]:
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and value.__module__ == module.__name__
    ]


def test_the_error_catalog_lists_every_error_code_and_no_other() -> None:
    """Each error class of every uno ``exceptions`` module has its own code in docs/errors.md."""
    modules = _exception_modules()
    assert "uno.events.exceptions" in [module.__name__ for module in modules]
    codes: dict[str, str] = {}
    for module in modules:
        for cls in _error_classes(module):
            where = f"{module.__name__}.{cls.__qualname__}"
            code = cls.__dict__.get("code")
            assert isinstance(code, str), f"{where} declares no `code` string of its own"
            assert code not in codes, f"{where} and {codes[code]} share the code {code!r}"
            codes[code] = where

    catalog = ERROR_CATALOG.read_text(encoding="utf-8")
    listed = [match["code"] for match in _CATALOG_HEADING.finditer(catalog)]
    missing = sorted(f"`{code}` ({codes[code]})" for code in set(codes) - set(listed))
    unknown = sorted(set(listed) - set(codes))
    duplicated = sorted({code for code in listed if listed.count(code) > 1})
    assert not missing, f"docs/errors.md has no heading for: {', '.join(missing)}"
    assert not unknown, f"docs/errors.md lists codes that no error class has: {unknown}"
    assert not duplicated, f"docs/errors.md lists these codes more than once: {duplicated}"
    for where in codes.values():
        assert where.rpartition(".")[2] in catalog, f"docs/errors.md never names {where}"


def test_every_error_code_names_the_http_status_the_web_adapter_answers_with() -> None:
    """Each entry of docs/errors.md has one ``HTTP status: NNN Phrase.`` line, a real status."""
    catalog = ERROR_CATALOG.read_text(encoding="utf-8")
    headings = list(_CATALOG_HEADING.finditer(catalog))
    assert headings
    wrong: list[str] = []
    for heading, following in zip(headings, [*headings[1:], None], strict=True):
        entry = catalog[heading.end() : following.start() if following else len(catalog)]
        found = _HTTP_STATUS.findall(entry)
        if len(found) != 1:
            wrong.append(f"{heading['code']}: {len(found)} 'HTTP status:' lines")
            continue
        status, phrase = int(found[0][0]), found[0][1]
        if status not in _STATUSES or _STATUSES[status] != phrase or not 400 <= status < 600:
            wrong.append(f"{heading['code']}: {status} {phrase} is not an error status")
    assert not wrong, (
        "docs/errors.md: give each entry one line such as 'HTTP status: 409 Conflict.': "
        + "; ".join(wrong)
    )


def test_mkdocs_reads_the_sources_of_every_package() -> None:
    """mkdocstrings' ``paths`` in mkdocs.yml name every packages/*/src folder."""
    config = MKDOCS_CONFIG.read_text(encoding="utf-8")
    sources = sorted(path.parent.name for path in ROOT.glob("packages/*/src"))
    assert sources
    missing = [name for name in sources if f"- packages/{name}/src\n" not in config]
    assert not missing, f"add packages/<name>/src to mkdocstrings' paths for: {missing}"
