"""The edges offer what the registries hold: a kind or a teacher added to its registry is
offered by the CLI (choices, options, help) with no change there, and works end to end."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import ClassVar

import pytest
from click.testing import CliRunner

import siamsearch.cli
from siamsearch import kinds, teacher
from siamsearch.demo import SAMPLE_FAQ
from siamsearch.kinds import Flat, parameter

from .conftest import CharTeacher


@dataclass(frozen=True)
class Toy(Flat):
    """A flat index with a parameter of its own, registered only in this test."""

    name: ClassVar[str] = "toy"
    toy_width: int = parameter(3, 2, "a width of nothing. [default: {default}]")


@pytest.fixture
def cli(monkeypatch):
    """The CLI as imported with the toy kind and the toy teacher registered, and as it was after."""
    monkeypatch.setitem(kinds.KINDS, "toy", Toy)
    monkeypatch.setitem(teacher.TEACHERS, "toy-chars", CharTeacher)
    yield importlib.reload(siamsearch.cli).main
    monkeypatch.undo()
    importlib.reload(siamsearch.cli)


def test_a_registered_kind_and_teacher_are_offered_by_the_cli(cli):
    runner = CliRunner()
    shown = runner.invoke(cli, ["build-index", "--help"], terminal_width=200).output
    assert "[auto|flat|hnsw|ivf|toy]" in shown
    assert "--toy-width INTEGER RANGE" in shown and "toy: a width of nothing. [default: 3]" in shown
    assert "ivf above (then" in shown  # auto's rule, in words, from the kinds: it never reaches the toy
    assert "toy-chars" in runner.invoke(cli, ["train", "--help"], terminal_width=200).output

    refused = runner.invoke(cli, ["build-index", str(SAMPLE_FAQ), "--kind", "toy", "--toy-width", "1"])
    assert refused.exit_code == 2 and "--toy-width" in refused.output  # its minimum, from the kind
    refused = runner.invoke(cli, ["train", "x.tsv", "--out", "m", "--teacher", "nope"])
    assert refused.exit_code == 2 and "toy-chars" in refused.output


def test_a_registered_kind_builds_saves_and_answers(cli, tmp_path):
    runner = CliRunner()
    out = tmp_path / "toy"
    built = runner.invoke(cli, ["build-index", str(SAMPLE_FAQ), "--text-column", "question", "--out", str(out),
                                "--kind", "toy", "--toy-width", "5"])
    assert built.exit_code == 0, built.output
    assert "(toy)" in built.output
    info = runner.invoke(cli, ["info", str(out)])
    assert info.exit_code == 0 and "toy (toy_width 5)" in info.output, info.output
    answered = runner.invoke(cli, ["query", "--index", str(out), "--json", "怎么退货"])
    assert answered.exit_code == 0 and '"rank": 1' in answered.output, answered.output
