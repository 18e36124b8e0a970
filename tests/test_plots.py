"""'siamsearch evaluate --plot': the PNGs, the recall@k curve behind them, and their errors."""

import sys

import pytest
from click.testing import CliRunner

from siamsearch.cli import main
from siamsearch.demo import SAMPLE_PAIRS
from siamsearch.metrics import recall_curve

PNG = b"\x89PNG\r\n\x1a\n"


def test_recall_curve_is_the_share_of_queries_with_a_relevant_document_in_the_top_k():
    ranked = [[5, 1, 2], [7, 8, 9], [3, 4, 0]]
    relevant = [frozenset({1}), frozenset({0}), frozenset({3})]
    # first relevant at rank 2, never, rank 1
    assert recall_curve(ranked, relevant, 3) == pytest.approx([1 / 3, 2 / 3, 2 / 3])


@pytest.mark.parametrize("mode", [[], ["--retrieval"]])
def test_plots_are_pngs_written_beside_the_usual_report(sample_encoder, tmp_path, mode):
    sample_encoder.save(tmp_path / "m")
    out = tmp_path / "plot.png"
    result = CliRunner().invoke(main, ["evaluate", str(SAMPLE_PAIRS), *mode, "--model", str(tmp_path / "m"),
                                       "--baselines", "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(PNG) and out.stat().st_size > 10_000
    assert f"wrote {out}" in result.stderr
    assert list(tmp_path.glob(".plot.png.*")) == []  # written atomically: no temporary left


def test_plot_errors_are_one_line_and_write_nothing(tmp_path, monkeypatch):
    result = CliRunner().invoke(main, ["evaluate", str(SAMPLE_PAIRS), "--plot", str(tmp_path / "plot.txt")])
    assert result.exit_code == 1 and "plots are written as PNG; name a .png file" in result.output
    (tmp_path / "sts.txt").write_text("a\tb\t5\nc\td\t0\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "sts.txt"), "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 1 and "plots of pairs need 0 and 1 labels" in result.output
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = CliRunner().invoke(main, ["evaluate", str(SAMPLE_PAIRS), "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: plots need matplotlib; install it with pip install 'siamsearch[plot]'"]
    assert list(tmp_path.glob("*.png")) == []
