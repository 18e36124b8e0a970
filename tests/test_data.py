import json

import pytest

from siamsearch.data import read_corpus, read_pairs
from siamsearch.errors import InputError

from .conftest import shared_file


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_plain_three_column_pairs(tmp_path):
    p = read_pairs(write(tmp_path / "p.tsv", "怎么退货\t如何退货\t1\n运费多少\t积分有用吗\t0\n"))
    assert p.left == ["怎么退货", "运费多少"] and p.right == ["如何退货", "积分有用吗"]
    assert p.labels.tolist() == [1.0, 0.0]


def test_bom_crlf_and_label_spellings_are_accepted(tmp_path):
    p = read_pairs(write(tmp_path / "p.tsv", "\ufeffa\tb\t1.0\r\nc\td\t 0\r\n"))
    assert p.left == ["a", "c"] and p.labels.tolist() == [1.0, 0.0]


def test_header_names_the_columns(tmp_path):
    p = read_pairs(write(tmp_path / "p.tsv", "id\tsentence1\tsentence2\tlabel\n7\t甲\t乙\t1\n"))
    assert (p.left, p.right, p.labels.tolist()) == (["甲"], ["乙"], [1.0])


def test_quotes_inside_tsv_sentences_are_text(tmp_path):
    p = read_pairs(write(tmp_path / "p.tsv", '"引号\t另一句"\t0\n'))
    assert p.left == ['"引号'] and p.right == ['另一句"']


def test_comma_separated_csv_with_quoting(tmp_path):
    p = read_pairs(write(tmp_path / "p.csv", 'sentence1,sentence2,label\n"a, b","c\nd",1\n'))
    assert p.left == ["a, b"] and p.right == ["c\nd"]


def test_columns_option_picks_fields_by_number_or_name(tmp_path):
    f = write(tmp_path / "p.csv", "1\t甲\t乙\t1\n2\t丙\t丁\t0\n")
    assert read_pairs(f, [2, 3, 4]).left == ["甲", "丙"]
    g = write(tmp_path / "q.tsv", "a\tb\tis_same\nx\ty\t1\n")
    assert read_pairs(g, ["a", "b", "is_same"]).right == ["y"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("a\tb\t1\nc\td\n", "line 2: expected 3 fields"),
        ("1\ta\tb\t1\n", "found 4; choose them with columns (e.g. columns 2,3,4)"),
        ("a\tb\t1\nc\td\tyes\n", "line 2: label 'yes' is not 0 or 1"),
        ("a\tb\t1\nc\td\tnan\n", "line 2: label 'nan' is not 0 or 1 (nor a graded score such as 0-5)"),
        ("a\t \t1\n", "line 1: sentence2 is empty"),
        ("", "no pairs found"),
        ("\n\n", "no pairs found"),
    ],
)
def test_bad_pair_files_name_file_and_line(tmp_path, content, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        read_pairs(write(tmp_path / "bad.tsv", content))
    assert str(tmp_path / "bad.tsv") in str(e.value) or "columns" in str(e.value)
    assert e.value.path == str(tmp_path / "bad.tsv") and "--" not in str(e.value)  # the library names no CLI flag
    if "line " in message:
        assert e.value.line == int(message.split("line ")[1].split(":")[0])
        assert e.value.fields() == {"message": str(e.value), "path": e.value.path, "line": e.value.line,
                                    **({"argument": "columns"} if "columns" in str(e.value) else {})}


def test_missing_file_directory_and_invalid_utf8(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_pairs(tmp_path / "nope.tsv")
    with pytest.raises(InputError, match="is a directory"):
        read_pairs(tmp_path)
    (tmp_path / "bin.tsv").write_bytes(b"a\tb\t1\n\xff\xfe\x00\x01\n")
    with pytest.raises(InputError, match="line 2: not valid UTF-8"):
        read_pairs(tmp_path / "bin.tsv")


def test_plain_text_corpus_skips_blank_lines_and_ids_are_line_numbers(tmp_path):
    c = read_corpus(write(tmp_path / "docs.txt", "第一条\n\n  \n第四条\u2028还是第四条\n"))
    assert c.ids == ["1", "4"] and c.texts == ["第一条", "第四条\u2028还是第四条"] and c.skipped == 2


def test_tsv_corpus_with_id_text_and_metadata_columns(tmp_path):
    faq = write(tmp_path / "faq.tsv", "id\tquestion\tanswer\nq1\t怎么退货\t在订单页\n")
    c = read_corpus(faq, text_column="question")
    assert (c.ids, c.texts, c.metadata) == (["q1"], ["怎么退货"], [{"answer": "在订单页"}])


def test_csv_corpus_without_id_column_uses_record_numbers(tmp_path):
    c = read_corpus(write(tmp_path / "c.csv", 'text,topic\n"one, with comma",a\n"two\nlines",b\n'))
    assert c.ids == ["1", "2"] and c.texts == ["one, with comma", "two\nlines"]


def test_jsonl_corpus(tmp_path):
    lines = [json.dumps({"doc": "d1", "text": "发票", "n": 3}, ensure_ascii=False), "",
             json.dumps({"doc": "d2", "text": "运费"})]
    c = read_corpus(write(tmp_path / "c.jsonl", "\n".join(lines)), id_column="doc")
    assert c.ids == ["d1", "d2"] and c.metadata[0] == {"n": 3}


@pytest.mark.parametrize(
    "name, content, kwargs, message",
    [
        ("c.tsv", "id\ttext\na\tx\na\ty\n", {}, "duplicate id 'a' \\(first on line 2\\)"),
        ("c.tsv", "id\tbody\na\tx\n", {}, "no column 'text'; choose one with text_column \\(columns: id, body\\)"),
        ("c.txt", "\n \n", {}, "the corpus has no documents"),
        ("c.txt", "", {}, "the corpus has no documents"),
        ("c.tsv", "id\ttext\n", {}, "the corpus has no documents"),
        ("c.jsonl", '{"text": "a"}\n{oops\n', {}, "line 2: not valid JSON"),
        ("c.tsv", "id\ttext\na\tx\textra\n", {}, "line 2: 3 fields, but the header has 2"),
        ("c.txt", "x\n", {"text_column": "q"}, "apply to .csv, .tsv and .jsonl"),
    ],
)
def test_bad_corpora(tmp_path, name, content, kwargs, message):
    with pytest.raises(InputError, match=message) as e:
        read_corpus(write(tmp_path / name, content), **kwargs)
    assert e.value.path == str(tmp_path / name) and "--" not in str(e.value)


def test_real_pawsx_file_with_header():
    p = read_pairs(shared_file("pawsx_zh/test_2k.tsv"))
    assert len(p) == 2000 and set(p.labels.tolist()) == {0.0, 1.0}


def test_real_atec_file_bom_crlf_four_columns():
    path = shared_file("atec/atec_nlp_sim_train.csv")
    with pytest.raises(InputError, match="columns 2,3,4") as e:
        read_pairs(path)
    assert (e.value.argument, e.value.line) == ("columns", 1)
    p = read_pairs(path, [2, 3, 4])
    assert len(p) == 39346
    assert not any("\ufeff" in s or "\r" in s for s in p.left[:100] + p.right[:100])


def test_pairs_subset_and_distinct_sentences():
    import numpy as np

    from siamsearch.data import Pairs

    pairs = Pairs(["a", "b", "a", "c"], ["b", "c", "d", "a"], np.array([1, 0, 1, 0], np.float32), "p.tsv")
    texts, left, right = pairs.distinct()
    assert texts == ["a", "b", "c", "d"]
    assert [texts[i] for i in left] == pairs.left and [texts[i] for i in right] == pairs.right
    positives = pairs.subset(pairs.positive)
    assert (positives.left, positives.right, positives.labels.tolist(), positives.source) == (
        ["a", "a"], ["b", "d"], [1.0, 1.0], "p.tsv")
    assert pairs.subset(slice(1, 3)).left == ["b", "a"]


def test_graded_labels_are_read_as_scores(tmp_path):
    (tmp_path / "sts.txt").write_text("一只猫\t一只小猫\t5\n一只猫\t下雨了\t0\n一只猫\t两只猫\t2.5\n", encoding="utf-8")
    pairs = read_pairs(tmp_path / "sts.txt")
    assert pairs.graded and pairs.labels.tolist() == [5.0, 0.0, 2.5]
    (tmp_path / "binary.tsv").write_text("a\tb\t1\nc\td\t0\n", encoding="utf-8")
    assert not read_pairs(tmp_path / "binary.tsv").graded
