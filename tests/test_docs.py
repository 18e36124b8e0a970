"""The README's Python examples run, and every public function says how to call it."""

from __future__ import annotations

import doctest
import inspect
import re
from pathlib import Path

import pytest

import siamsearch

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = [(m.group(1), README.read_text(encoding="utf-8")[: m.start()].count("\n") + 2)
          for m in re.finditer(r"```pycon\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)]


@pytest.mark.parametrize("block, line", BLOCKS, ids=[f"README line {line}" for _, line in BLOCKS])
def test_readme_examples_run(block, line, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write indexes/ and models/ where they run
    test = doctest.DocTestParser().get_doctest(block, {}, f"README.md line {line}", str(README), line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0, f"{runner.failures} README example(s) from line {line} failed (output above)"


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
