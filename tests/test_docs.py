"""The README's Python examples run, and every public function says how to call it."""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import siamsearch

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = [(m.group(1), README.read_text(encoding="utf-8")[: m.start()].count("\n") + 2)
          for m in re.finditer(r"```pycon\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)]
NEEDS = re.compile(r">>> # needs: pip install '?siamsearch(?:\[([\w,]+)\])?'?")
"""An example's first line: what a reader installs to run it (``siamsearch`` alone, or its extras)."""
RUN = """
import doctest, json, site, sys
view, block, line = json.loads(sys.argv[1])
site.addsitedir(view)  # started with -S: this view is the only site-packages
test = doctest.DocTestParser().get_doctest(block, {}, f"README.md line {line}", "README.md", line)
runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
runner.run(test)
sys.exit(1 if runner.failures else 0)
"""
"""Runs one example in a fresh interpreter whose only site-packages is the given folder."""


def needs(block: str) -> set[str]:
    found = NEEDS.match(block.splitlines()[0])
    assert found, "a README example must start with what it needs, e.g. >>> # needs: pip install 'siamsearch[formats]'"
    return set(found.group(1).split(",")) if found.group(1) else set()


def installed_with(extras: set[str]) -> set[str]:
    """The distributions ``pip install 'siamsearch[extras]'`` installs: siamsearch's requirements for
    those extras, and theirs, followed through the installed metadata."""
    known = {canonicalize_name(d.metadata["Name"]): d for d in importlib.metadata.distributions()}
    unknown = extras - set(known["siamsearch"].metadata.get_all("Provides-Extra") or [])
    assert not unknown, f"the README names extras siamsearch does not have: {sorted(unknown)}"
    found, todo = set(), [("siamsearch", frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        if name in found or name not in known:
            continue  # not installed here: a requirement for another platform
        found.add(name)
        for text in known[name].requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in wanted or {""}):
                todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return found


@functools.cache
def owners() -> dict[Path, set[str]]:
    """Each top-level entry of the installed site-packages → the distributions whose files are in it
    (read from their RECORD files directly: ``Distribution.files`` over all of them took 47 s here)."""
    found: dict[Path, set[str]] = {}
    for dist in importlib.metadata.distributions():
        tops = {re.split(r"[/,]", line, maxsplit=1)[0] for line in (dist.read_text("RECORD") or "").splitlines()}
        for top in tops - {"", ".."}:
            found.setdefault(Path(str(dist.locate_file(top))), set()).add(canonicalize_name(dist.metadata["Name"]))
    return found


def environment(extras: set[str], folder: Path) -> Path:
    """A site-packages of links to exactly the files of the distributions those extras install: what a
    reader who installed just those has (a virtualenv per example would cost minutes and gigabytes)."""
    keep = installed_with(extras)
    view = folder / "site-packages"
    view.mkdir()
    for top, names in owners().items():
        if names & keep and top.exists() and not (view / top.name).exists():
            (view / top.name).symlink_to(top)
    return view


def run_example(block: str, line: int, extras: set[str], cwd: Path) -> subprocess.CompletedProcess:
    view = environment(extras, cwd)
    return subprocess.run([sys.executable, "-S", "-c", RUN, json.dumps([str(view), block, line])], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("block, line", BLOCKS, ids=[f"README line {line}" for _, line in BLOCKS])
def test_readme_examples_run_with_exactly_the_extras_they_name(block, line, tmp_path):
    """Each example in its own interpreter and temporary folder (the examples write indexes/ and
    models/), seeing only the packages that the extras its first line names install."""
    done = run_example(block, line, needs(block), tmp_path)
    assert done.returncode == 0, f"the README example from line {line} failed:\n{done.stdout}{done.stderr[-3000:]}"


def test_an_example_that_needs_an_undeclared_extra_fails(tmp_path):
    """The check above can fail: without the formats extra there is no pyarrow, so no Parquet."""
    assert {"pyarrow", "openpyxl"} <= installed_with({"formats"}) - installed_with(set())
    assert not {"tensorflow-cpu", "keras", "gensim", "ray", "pyarrow"} & installed_with(set())
    block = ">>> import pandas as pd\n>>> pd.DataFrame({'a': [1]}).to_parquet('x.parquet')\n"
    for extras, returncode in ((set(), 1), ({"formats"}, 0)):
        folder = tmp_path / ("with" if extras else "without")
        folder.mkdir()
        assert run_example(block, 1, extras, folder).returncode == returncode


def test_there_are_readme_examples():
    assert len(BLOCKS) >= 2


def public_callables():
    """Every public function and class of the package's API, and the public methods of the classes."""
    for name in siamsearch.__all__:
        obj = getattr(siamsearch, name)
        if isinstance(obj, type) and issubclass(obj, Exception) or not callable(obj):
            continue
        yield name, obj
        if isinstance(obj, type):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or isinstance(member, property):
                    continue
                function = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
                if callable(function):
                    yield f"{name}.{attr}", function


def test_every_public_function_has_an_example():
    missing = [name for name, obj in public_callables()
               if not re.search(r"Example|>>>", inspect.getdoc(obj) or "")]
    assert not missing, f"docstrings without an example: {', '.join(missing)}"
