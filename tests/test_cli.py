"""The command line, in process (click's runner) and once as a real subprocess."""

import json
import re
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from siamsearch.cli import main
from siamsearch.demo import SAMPLE_FAQ, SAMPLE_PAIRS


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def model(workdir):
    out = workdir / "models" / "faq"
    result = run("train", SAMPLE_PAIRS, "--valid", SAMPLE_PAIRS, "--out", out, "--epochs", 2, "--seed", 3)
    assert result.exit_code == 0, result.output
    return out, result


@pytest.fixture(scope="module")
def index(workdir, model):
    out = workdir / "indexes" / "faq"
    result = run("build-index", SAMPLE_FAQ, "--model", model[0], "--text-column", "question", "--out", out)
    assert result.exit_code == 0, result.output
    return out, result


def test_train_preset_gives_the_settings_and_options_override_them(tmp_path):
    out = tmp_path / "m"
    result = run("train", SAMPLE_PAIRS, "--out", out, "--preset", "search", "--temperature", 0.3, "--epochs", 1)
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "config.json").read_text())["training"]["settings"]
    assert (settings["objective"], settings["dropout"], settings["char_mask"], settings["temperature"],
            settings["epochs"]) == ("margin", 0.2, 0.3, 0.3, 1)


def test_train_reports_epochs_and_validation_accuracy(model):
    out, result = model
    assert "epoch 1/2" in result.output and "epoch 2/2" in result.output
    assert "validation accuracy" in result.output and "pairs/s" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["valid"]["accuracy"] <= 1 and metrics["valid"]["n"] == 1000
    fitted = metrics["valid"]["fusion"]  # the hybrid fusion, fitted on the validation pairs as the match is
    assert json.loads((out / "config.json").read_text())["fusion"] == fitted["fusion"]
    assert re.search(r"hybrid fusion (rrf k=60|weighted [\d.]+): MRR@10 [\d.]+ on [\d,]+ queries", result.output)


def test_build_index_summary(index):
    _, result = index
    assert re.search(r"indexed 200 documents in (under 0\.1 s|[\d.]+ s \([\d,]+ docs/s\)) → ", result.output)
    assert "(flat)" in result.output


def test_query_table_and_json(index):
    out, _ = index
    table = run("query", "--index", out, "-k", 3, "退款多久到账", "怎么开发票")
    assert table.exit_code == 0, table.output
    assert table.output.count("query: ") == 2 and "rank" in table.output and "faq-" in table.output
    lines = run("query", "--index", out, "--json", "-k", 2, "退款多久到账").output.strip().splitlines()
    record = json.loads(lines[0])
    assert record["query"] == "退款多久到账" and len(record["hits"]) == 2
    assert set(record["hits"][0]) == {"rank", "id", "text", "score", "match", "metadata"}


def test_query_reads_stdin(index):
    out, _ = index
    result = run("query", "--index", out, "--json", "-k", 1, "-", input="怎么退货\n\n运费多少\n")
    assert [json.loads(x)["query"] for x in result.output.strip().splitlines()] == ["怎么退货", "运费多少"]


def test_similarity_prints_the_pair_score(model, index):
    from siamsearch import Encoder, SearchIndex

    result = run("similarity", "--model", model[0], "怎么退货", "如何退货")
    assert result.exit_code == 0
    expected = Encoder.load(model[0]).similarity("怎么退货", "如何退货")
    assert float(result.output) == pytest.approx(expected, rel=1e-6)
    hit = SearchIndex.load(index[0]).search("怎么退货", 1)[0]
    assert abs(Encoder.load(model[0]).similarity("怎么退货", hit.text) - hit.score) < 1e-5


def test_every_command_has_help_with_an_example():
    for command in ("train", "build-index", "query", "similarity", "evaluate", "demo"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Example:" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "missing.tsv", "--out", "m"], "missing.tsv: no such file"),
        (["query", "--index", "{index}", "-k", "0", "x"], "0 is not in the range x>=1"),
        (["query", "--index", "{index}", "   "], "query #1 is empty or whitespace only"),
        (["query", "--index", "{index}"], "give at least one query"),
        (["query", "--index", "{workdir}/none", "x"], "no such index"),
        (["query", "--index", "{index}", "--model", "{workdir}/models/other", "x"], "not with the given model"),
        (["build-index", "{workdir}/empty.txt", "--model", "{model}"], "the corpus has no documents"),
        (["build-index", "{workdir}/bad.tsv", "--model", "{model}"], "line 2: 3 fields, but the header has 2"),
        (["similarity", "--model", "{model}", "", "x"], "TEXT_A is empty"),
        (["similarity", "--model", "{workdir}", "a", "b"], "config.json is missing"),
        (["train", "{workdir}/badlabel.tsv", "--out", "m"], "line 2: label 'yes' is not 0 or 1"),
        (["train", "{workdir}/badlabel.tsv", "--out", "{workdir}"], "is not a siamsearch model directory"),
        (["build-index", SAMPLE_FAQ, "--model", "{model}", "--out", "{workdir}"], "is not a siamsearch index"),
        (["build-index", "{workdir}/empty.txt", "--model", "{model}", "--kind", "pq"], "'pq' is not one of"),
        (["build-index", SAMPLE_FAQ, "--model", "{model}", "--max-memory", "lots"], "'lots' is not understood"),
        (["build-index", SAMPLE_FAQ, "--model", "{model}", "--text-column", "question", "--max-memory", "10K",
          "--out", "{workdir}/small"], "more than --max-memory 10.0 KiB"),
        (["build-index", SAMPLE_FAQ, "--model", "{model}", "--text-column", "question", "--kind", "ivf",
          "--nlist", "500", "--out", "{workdir}/ivf"], "needs at least 500 documents to train on"),
        (["evaluate", "missing.tsv", "--model", "{model}"], "missing.tsv: no such file"),
        (["evaluate", "{workdir}/badlabel.tsv", "--model", "{model}"], "line 2: label 'yes' is not 0 or 1"),
        (["evaluate", "--retrieval", "{workdir}/negatives.tsv", "--model", "{model}"], "no positive pairs"),
        (["evaluate", "--retrieval", SAMPLE_PAIRS, "--model", "{model}", "--distractors", "nope.tsv"],
         "nope.tsv: no such file"),
        (["evaluate", SAMPLE_PAIRS, "--distractors", SAMPLE_PAIRS], "--distractors applies to --retrieval only"),
        (["train", SAMPLE_PAIRS, "--out", "m", "--objective", "triplet"], "'triplet' is not one of"),
        (["train", SAMPLE_PAIRS, "--out", "m", "--temperature", "0"], "0.0 is not in the range x>0"),
        # the library names its arguments; the command names its flags for them
        (["train", "{workdir}/header.tsv", "--out", "m"], "line 1: label 'same' is not 0 or 1; if line 1 is a "
                                                         "header, name the fields with --columns"),
        (["build-index", "{workdir}/notext.tsv", "--model", "{model}"],
         "no column 'text'; choose one with --text-column (columns: id, body)"),
        (["build-index", SAMPLE_FAQ, "--model", "{model}", "--text-column", "question", "--kind", "flat",
          "--hnsw-m", "16", "--out", "{workdir}/f"], "--hnsw-m is not a parameter of a flat index"),
    ],
)
def test_user_errors_are_one_line_with_nonzero_exit(workdir, model, index, args, message):
    (workdir / "empty.txt").write_text("\n")
    (workdir / "bad.tsv").write_text("id\ttext\n1\tx\ty\n")
    (workdir / "badlabel.tsv").write_text("a\tb\t1\nc\td\tyes\n")
    (workdir / "negatives.tsv").write_text("a\tb\t0\nc\tc\t1\n")
    (workdir / "header.tsv").write_text("first\tsecond\tsame\n甲\t乙\t0\n")
    (workdir / "notext.tsv").write_text("id\tbody\na\tx\n")
    other = workdir / "models" / "other"
    if not other.exists():
        assert run("train", SAMPLE_PAIRS, "--out", other, "--epochs", 1, "--seed", 9).exit_code == 0
    fill = {"index": index[0], "model": model[0], "workdir": workdir}
    result = run(*[str(a).format(**fill) for a in args])
    assert result.exit_code in (1, 2)  # 1: our errors, 2: click's usage errors
    assert isinstance(result.exception, SystemExit), result.exception  # not an escaped exception
    assert message in result.output, result.output
    assert "Traceback" not in result.output


def test_failed_build_keeps_the_existing_index(workdir, model, index):
    out, _ = index
    before = sorted(p.name for p in out.iterdir())
    result = run("build-index", workdir / "bad.tsv", "--model", model[0], "--out", out)
    assert result.exit_code == 1 and sorted(p.name for p in out.iterdir()) == before
    assert run("query", "--index", out, "退货").exit_code == 0


def test_real_process_prints_one_error_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "siamsearch", "query", "--index", str(tmp_path / "x"), "hi"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert errors == [f"Error: {tmp_path / 'x'}: no such index; build one with 'siamsearch build-index'"]
    assert "Traceback" not in proc.stderr


def test_demo_runs_end_to_end_with_the_shipped_model_without_training(tmp_path):
    result = run("demo", "--workdir", tmp_path)
    assert result.exit_code == 0, result.output
    assert result.output.count("query: ") == 6 and "answer:" in result.output and "demo finished" in result.output
    assert "epoch" not in result.output and not (tmp_path / "models").exists()
    assert (tmp_path / "indexes" / "demo" / "manifest.json").is_file()
    assert run("query", "--index", tmp_path / "indexes" / "demo", "退货").exit_code == 0


def test_the_demo_with_the_shipped_model_never_imports_tensorflow(tmp_path):
    code = ("import sys; from siamsearch.demo import run_demo; r = run_demo(sys.argv[1]); "
            "assert r.results and r.results[0][1]; print('tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_demo_can_train_on_the_sample_pairs_first(tmp_path):
    result = run("demo", "--workdir", tmp_path, "--train", "--epochs", 2)
    assert result.exit_code == 0, result.output
    assert "epoch 2/2" in result.output and "demo finished" in result.output
    shutil.rmtree(tmp_path / "models")
    assert run("query", "--index", tmp_path / "indexes" / "demo", "退货").exit_code == 0  # needs no model dir


def test_train_with_the_damaged_real_vectors_file_warns_and_completes(tmp_path):
    from .conftest import shared_file

    vectors = shared_file("token_vec_300_truncated/token_vec_300.bin")
    result = run("train", SAMPLE_PAIRS, "--vectors", vectors, "--out", tmp_path / "m", "--epochs", 1)
    assert result.exit_code == 0, result.output
    assert "warning: " in result.output and "promises 20,028 vectors, 912 rows are complete" in result.output
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["training"]["vectors"] == {"file": "token_vec_300.bin", "dim": 300, "rows": 912}


def test_train_with_a_garbage_vectors_file_is_one_error_line(tmp_path):
    (tmp_path / "v.bin").write_bytes(b"\x00\x01\x02 not vectors")
    result = run("train", SAMPLE_PAIRS, "--vectors", tmp_path / "v.bin", "--out", tmp_path / "m")
    assert result.exit_code == 1 and "damaged or not a word2vec file" in result.output
    assert not (tmp_path / "m").exists()


def test_add_remove_compact(workdir, model, tmp_path):
    out = tmp_path / "idx"
    assert run("build-index", SAMPLE_FAQ, "--model", model[0], "--text-column", "question", "--out", out).exit_code == 0
    (tmp_path / "more.tsv").write_text("id\tquestion\tanswer\nfaq-001\t改过的注册问题\t新答案\nnew-1\t全新的问题\t答\n")
    result = run("add", "--index", out, tmp_path / "more.tsv", "--text-column", "question")
    assert result.exit_code == 0, result.output
    assert "added 1 and replaced 1 documents" in result.output and "now holds 201" in result.output
    (tmp_path / "plain.txt").write_text("没有编号的新问题\n")
    assert "added 1 and replaced 0" in run("add", "--index", out, tmp_path / "plain.txt").output
    hit = json.loads(run("query", "--index", out, "--json", "-k", 1, "改过的注册问题").output)["hits"][0]
    assert (hit["id"], hit["metadata"]["answer"]) == ("faq-001", "新答案")

    (tmp_path / "ids.txt").write_text("faq-003\n\nfaq-004\n")
    result = run("remove", "--index", out, "faq-002", "--ids-file", tmp_path / "ids.txt")
    assert result.exit_code == 0 and "removed 3 documents" in result.output and "199" in result.output
    result = run("remove", "--index", out, "faq-005", "no-such-id")
    assert result.exit_code == 1 and "no document with id 'no-such-id'; nothing was removed" in result.output
    assert "dropped 4 tombstones" in run("compact", "--index", out).output
    ids = {h["id"] for h in json.loads(run("query", "--index", out, "--json", "-k", 300, "问题").output)["hits"]}
    assert len(ids) == 199 and "faq-005" in ids and not {"faq-002", "faq-003", "faq-004"} & ids


def test_build_progress_off_a_terminal_is_one_line_per_stage_never_a_bare_label(tmp_path):
    """Piped to a file, a progress bar used to leave 'encoding ' and 'indexing ' with nothing on them."""
    from siamsearch.demo import SAMPLE_FAQ

    result = CliRunner().invoke(main, ["build-index", str(SAMPLE_FAQ), "--text-column", "question", "--out",
                                       str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(re.fullmatch(r"encoding: 200( \(.*/s\))?", line) for line in lines), lines  # streamed: no total
    assert any(line.startswith("indexing: 200/200 (100 %") for line in lines), lines
    assert all(line.strip() not in ("encoding", "indexing", "") for line in lines), lines
    # a rate is shown only for a stage timed long enough to mean something: 200 documents in
    # at least 0.1 s is at most 2,000/s (it used to say 63,938,626/s for a stage of 3 µs)
    rates = [int(m.replace(",", "")) for line in lines for m in re.findall(r"([\d,]+)/s", line)]
    assert all(rate <= 2_000 for rate in rates), lines


def test_ctrl_c_says_in_one_line_what_was_kept(tmp_path, monkeypatch):
    """Ctrl-C used to print a bare 'Aborted!'; a stopped build leaves no folder and says so."""
    import siamsearch.build
    from siamsearch.demo import SAMPLE_FAQ

    real = siamsearch.build.build_index

    def stopped_while_encoding(*args, progress=None, **kwargs):
        def ctrl_c(*_):
            raise KeyboardInterrupt
        return real(*args, progress=ctrl_c, **kwargs)

    monkeypatch.setattr(siamsearch.build, "build_index", stopped_while_encoding)
    out = tmp_path / "idx"
    result = CliRunner().invoke(main, ["build-index", str(SAMPLE_FAQ), "--text-column", "question", "--out", str(out)])
    assert result.exit_code == 130, result.output
    assert result.output.strip() == "Error: interrupted: no index was written; an index already at --out is unchanged"
    assert not out.exists() and "Aborted" not in result.output


def test_the_cli_offers_what_the_registries_hold(monkeypatch):
    """A kind or a teacher added to its registry is offered by the CLI with no change there."""
    from siamsearch.kinds import KINDS, Flat
    from siamsearch.teacher import TEACHERS

    class Toy(Flat):
        name = "toy"

    monkeypatch.setitem(KINDS, "toy", Toy)
    monkeypatch.setitem(TEACHERS, "toy-teacher", lambda: None)
    runner = CliRunner()
    assert "[auto|flat|hnsw|ivf|toy]" in runner.invoke(main, ["build-index", "--help"]).output
    assert "[use-m3|toy-teacher]" in runner.invoke(main, ["train", "--help"]).output
    result = runner.invoke(main, ["train", "p.tsv", "--out", "m", "--teacher", "nope"])
    assert result.exit_code == 2 and "'nope' is not one of 'use-m3', 'toy-teacher'" in result.output


def test_train_without_the_train_extra_is_one_line_naming_it(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("tensorflow", "gensim")
                        else real(name, *a))
    result = CliRunner().invoke(main, ["train", str(SAMPLE_PAIRS), "--out", str(tmp_path / "m")])
    assert result.exit_code == 1 and not (tmp_path / "m").exists()
    assert result.output.strip().splitlines()[-1] == (
        "Error: training needs TensorFlow, gensim, which are not installed; install them with "
        "pip install 'siamsearch[train]'")


def test_one_rule_for_long_queries(tmp_path, sample_encoder):
    """Up to 1,000 characters everywhere; past the model's max_length, a note says what it read."""
    from siamsearch import SearchIndex

    SearchIndex.build(["怎么退货", "运费多少"], sample_encoder).save(tmp_path / "ix")
    runner = CliRunner()
    long = "怎么退货" * 75  # 300 characters, the model reads 100
    result = runner.invoke(main, ["query", "--index", str(tmp_path / "ix"), long])
    assert result.exit_code == 0
    assert result.stderr.strip() == "note: the model reads the first 100 of this query's 300 characters"
    assert result.stdout.splitlines()[0] == f"query: {long[:60]}… (300 characters)"
    too_long = runner.invoke(main, ["query", "--index", str(tmp_path / "ix"), "退" * 10_000])
    assert too_long.exit_code == 1 and too_long.output.strip() == (
        "Error: query #1 has 10,000 characters; a query may have at most 1,000")
