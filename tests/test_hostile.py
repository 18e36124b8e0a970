"""The catalogue of hostile inputs (docs/hostile-inputs.md), one test per row, plus fuzzing.

Each case either raises one clear SiamsearchError line or is accepted as documented; none
may raise anything else, hang, or run code from data. ``test_catalogue_matches_the_docs``
keeps this file and the table one to one.
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siamsearch import Encoder, SearchIndex
from siamsearch.build import build_index
from siamsearch.cli import main
from siamsearch.data import read_corpus, read_pairs
from siamsearch.errors import IndexDirectoryError, InputError, ModelDirectoryError, SiamsearchError
from siamsearch.query import MAX_QUERY_CHARS
from siamsearch.text import OOV_ID, Vocabulary, normalize

CATALOGUE = Path(__file__).resolve().parents[1] / "docs" / "hostile-inputs.md"
CASES: dict[str, object] = {}


def case(name):
    def register(fn):
        CASES[name] = fn
        return fn
    return register


def one_line_error(exc_type, fn, *args, match=None, **kwargs):
    with pytest.raises(exc_type, match=match) as e:
        fn(*args, **kwargs)
    assert "\n" not in str(e.value) and len(str(e.value)) < 600, str(e.value)
    return str(e.value)


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


@pytest.fixture(scope="module")
def model_dir(sample_encoder, tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "model"
    sample_encoder.save(path)
    return path


@pytest.fixture(scope="module")
def index_dir(sample_encoder, sample_faq, tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "index"
    SearchIndex.build(sample_faq.texts, sample_encoder, ids=sample_faq.ids).save(path)
    return path


@pytest.fixture(scope="module")
def small_index(sample_encoder):
    return SearchIndex.build(["怎么退货", "运费多少", "发票"], sample_encoder)


# -- files ------------------------------------------------------------------------------

@case("invalid-utf8")
def test_invalid_utf8(tmp_path):
    one_line_error(InputError, read_pairs, write(tmp_path / "p.tsv", b"a\tb\t1\nc\xff\xfed\te\t0\n"),
                   match="line 2: not valid UTF-8")
    one_line_error(InputError, read_corpus, write(tmp_path / "c.txt", b"ok\n\xc3\x28\n"),
                   match="line 2: not valid UTF-8")


@case("nul-and-control-characters")
def test_nul_and_control_characters(tmp_path, small_index):
    p = read_pairs(write(tmp_path / "p.tsv", "a\x00b\tc\x07\x1bd\t1\n"))
    assert p.left == ["a\x00b"] and p.right == ["c\x07\x1bd"]  # characters like any other
    c = read_corpus(write(tmp_path / "c.txt", "x\x00y\n"))
    assert c.texts == ["x\x00y"]
    assert len(small_index.search("\x00\x07退", 2)) == 2


@case("megabyte-lines")
def test_megabyte_lines(tmp_path, small_index, sample_encoder):
    big = "退" * (1 << 20)
    p = read_pairs(write(tmp_path / "p.tsv", f"{big}\t短句\t1\n"))
    assert len(p.left[0]) == 1 << 20
    c = read_corpus(write(tmp_path / "c.csv", f'text\n"{big}"\n'))
    assert len(c.texts[0]) == 1 << 20
    index = SearchIndex.build([big, "运费"], sample_encoder)  # encoded by its first max_length characters
    assert index.search(big[:MAX_QUERY_CHARS], 1)[0].text == big
    with pytest.raises(InputError, match="at most 1,000"):  # a 1 MB query is refused in one line
        small_index.search(big, 1)


@case("emoji-and-mixed-scripts")
def test_emoji_and_mixed_scripts(tmp_path, small_index, sample_encoder):
    text = "退款😀🇨🇳 Привет مرحبا e\u0301 ﷽"
    c = read_corpus(write(tmp_path / "c.txt", text + "\n"))
    assert c.texts == [text]
    ids = sample_encoder.vocab.ids(text, 100)
    assert OOV_ID in ids and len(ids) == len(text)
    assert SearchIndex.build([text], sample_encoder).search(text, 1)[0].score == 1.0


@case("blank-documents")
def test_blank_documents(tmp_path, sample_encoder):
    c = read_corpus(write(tmp_path / "c.txt", "一\n\n \t\n\ufeff\n二\n"))
    assert c.texts == ["一", "二"] and c.ids == ["1", "5"] and c.skipped == 3
    one_line_error(InputError, SearchIndex.build, ["ok", "  "], sample_encoder, match="document '1' is empty")


@case("duplicate-ids")
def test_duplicate_ids(tmp_path, sample_encoder):
    one_line_error(InputError, read_corpus, write(tmp_path / "c.tsv", "id\ttext\n7\ta\n7\tb\n"),
                   match="line 3: duplicate id '7' \\(first on line 2\\)")
    one_line_error(InputError, SearchIndex.build, ["a", "b"], sample_encoder, ids=["x", "x"], match="duplicate")
    a = write(tmp_path / "a.jsonl", '{"id": "x", "text": "一"}\n')
    b = write(tmp_path / "b.jsonl", '{"id": "y", "text": "二"}\n{"id": "x", "text": "三"}\n')
    one_line_error(InputError, build_index, [a, b], tmp_path / "index", sample_encoder,
                   match="b.jsonl line 2: duplicate id 'x'")
    assert not (tmp_path / "index" / "manifest.json").exists()


@case("ids-with-tabs-or-newlines")
def test_ids_with_tabs_or_newlines(tmp_path, sample_encoder):
    c = read_corpus(write(tmp_path / "c.jsonl", json.dumps({"id": "a\tb", "text": "x"}) + "\n"))
    one_line_error(InputError, SearchIndex.build, c.texts, sample_encoder, ids=c.ids, match="ids must be one line")
    one_line_error(InputError, SearchIndex.build, ["x"], sample_encoder, ids=["a\nb"], match="ids must be one line")


@case("label-spellings")
def test_label_spellings(tmp_path):
    ok = read_pairs(write(tmp_path / "ok.tsv", "a\tb\t1.0\nc\td\t 1\ne\tf\t0.0\ng\th\t0 \n"))
    assert ok.labels.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert not ok.graded
    for bad in ["yes", "true", "nan", "inf", ""]:
        one_line_error(InputError, read_pairs, write(tmp_path / "bad.tsv", f"a\tb\t1\nc\td\t{bad}\n"),
                       match="line 2: label .* is not 0 or 1 \\(nor a graded score")
    for graded in ["2", "-1", "0.5"]:  # scores, as Chinese STS-B's 0-5: evaluation correlates, training refuses
        assert read_pairs(write(tmp_path / "graded.tsv", f"a\tb\t1\nc\td\t{graded}\n")).graded


@case("header-lines")
def test_header_lines(tmp_path):
    named = read_pairs(write(tmp_path / "h.tsv", "sentence1\tsentence2\tlabel\n甲\t乙\t0\n"))
    assert named.left == ["甲"]
    message = one_line_error(InputError, read_pairs, write(tmp_path / "u.tsv", "first\tsecond\tsame\n甲\t乙\t0\n"),
                             match="line 1: label 'same' is not 0 or 1")
    assert "name the fields with columns" in message
    assert read_pairs(tmp_path / "u.tsv", ["first", "second", "same"]).right == ["乙"]


@case("quoted-csv-fields")
def test_quoted_csv_fields(tmp_path):
    c = read_corpus(write(tmp_path / "c.csv", 'id,text\n1,"tab\there, ""quote"" and\nnew line"\n'))
    assert c.texts == ['tab\there, "quote" and\nnew line']
    p = read_pairs(write(tmp_path / "p.csv", 'sentence1,sentence2,label\n"a\tb","c\nd",1\n'))
    assert (p.left, p.right) == (["a\tb"], ["c\nd"])
    one_line_error(InputError, read_corpus, write(tmp_path / "bad.csv", 'text\n"never closed\n'),
                   match="line 2: unexpected end of data")


@case("binary-pair-file")
def test_binary_pair_file(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    one_line_error(InputError, read_pairs, write(tmp_path / "p.tsv", png), match="not valid UTF-8")
    one_line_error(InputError, read_corpus, write(tmp_path / "c.txt", png), match="not valid UTF-8")


@case("corpus-of-0-or-1-documents")
def test_corpus_of_0_or_1_documents(tmp_path, sample_encoder):
    one_line_error(InputError, read_corpus, write(tmp_path / "c.txt", ""), match="no documents")
    one_line_error(InputError, SearchIndex.build, [], sample_encoder, match="the corpus is empty")
    index = SearchIndex.build(["唯一的文档"], sample_encoder)
    index.save(tmp_path / "one")
    assert [h.id for h in SearchIndex.load(tmp_path / "one").search("文档", 10)] == ["0"]


@case("k-larger-than-corpus")
def test_k_larger_than_corpus(small_index):
    assert len(small_index.search("退货", 1000)) == 3
    one_line_error(InputError, small_index.search, "退货", 0, match="k must be")


@case("queries-of-unknown-characters")
def test_queries_of_unknown_characters(small_index, sample_encoder):
    hits = small_index.search("ꙮꙮ𓀀", 3)
    assert len(hits) == 3 and all(0 < h.score <= 1 for h in hits)
    assert set(sample_encoder.vocab.ids("ꙮꙮ𓀀", 10)) == {OOV_ID}
    one_line_error(InputError, small_index.search, " \ufeff ", 3, match="empty or whitespace only")


@case("lexical-and-hybrid-queries-without-word-characters")
def test_lexical_and_hybrid_queries_without_word_characters(small_index, sample_encoder):
    for query in ("！？。，…", "😀🎉🙈", "refund please", "12345", "退货！！"):
        lexical = small_index.search(query, 3, mode="lexical")
        assert all(h.lexical > 0 for h in lexical)
        assert bool(lexical) == (query == "退货！！")  # only that one shares a term with a document
        hybrid = small_index.search(query, 3, mode="hybrid")
        assert len(hybrid) == 3
        for h in lexical + hybrid:
            assert abs(h.score - sample_encoder.similarity(query, h.text)) < 1e-5
        assert all(h.lexical == 0 for h in hybrid if query != "退货！！")


@case("a-character-in-every-document")
def test_a_character_in_every_document(sample_encoder):
    from siamsearch.lexical import HEAD

    rng = np.random.default_rng(7)
    pool = list("退款运费发票会员积分快递订单密码账号客服优惠券取消修改地址支付失败")
    texts = ["的" + "".join(rng.choice(pool, rng.integers(2, 12))) for _ in range(HEAD + 904)]
    index = SearchIndex.build(texts, sample_encoder)
    import bm25s

    from siamsearch.lexical import terms

    reference = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    reference.index([terms(t) for t in texts], show_progress=False)
    assert reference.get_scores(["的"]).min() > 0  # the idf of a term in every document
    for query in ("的", "的发票", "快递的订单"):
        exact = reference.get_scores(list(dict.fromkeys(terms(query))))
        for mode in ("dense", "lexical", "hybrid"):
            hits = index.search(query, 10, mode=mode)
            assert len(hits) == 10 and hits == index.search(query, 10, mode=mode)
            for h in hits if mode != "dense" else ():
                assert h.lexical == pytest.approx(exact[int(h.id)], rel=1e-5)
                assert abs(h.score - sample_encoder.similarity(query, h.text)) < 1e-5


# -- directories ---------------------------------------------------------------------

def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def damaged_copy(src: Path, dst: Path, how) -> Path:
    shutil.copytree(src, dst)
    how(dst)
    return dst


@case("model-directory-missing-truncated-or-swapped-file")
def test_model_directory_missing_truncated_or_swapped_file(model_dir, tmp_path, sample_encoder):
    other = tmp_path / "other"
    from siamsearch import TrainConfig, train
    from siamsearch import read_pairs as rp
    from siamsearch.demo import SAMPLE_PAIRS

    train(rp(SAMPLE_PAIRS), config=TrainConfig(epochs=1, seed=5, max_length=50)).save(other)
    cases = {
        "missing": (lambda d: (d / "encoder.onnx").unlink(), "encoder.onnx is missing"),
        "missing-weights": (lambda d: (d / "encoder.weights.h5").unlink(), "encoder.weights.h5 is missing"),
        "truncated": (lambda d: write(d / "encoder.onnx", (d / "encoder.onnx").read_bytes()[:4096]),
                      "encoder.onnx or the vocabulary do not match the fingerprint"),
        "truncated-weights": (lambda d: write(d / "encoder.weights.h5", (d / "encoder.weights.h5").read_bytes()[:4096]),
                              "encoder.weights.h5 does not match its checksum"),
        "swapped": (lambda d: shutil.copy(other / "encoder.onnx", d / "encoder.onnx"),
                    "do not match the fingerprint"),
        "swapped-config": (lambda d: shutil.copy(other / "config.json", d / "config.json"),
                           "do not match the fingerprint"),
    }
    for name, (how, message) in cases.items():
        one_line_error(ModelDirectoryError, Encoder.load, damaged_copy(model_dir, tmp_path / name, how), match=message)


@case("index-directory-missing-truncated-or-swapped-file")
def test_index_directory_missing_truncated_or_swapped_file(index_dir, tmp_path, sample_encoder, sample_faq):
    other = tmp_path / "other"
    texts = list(reversed(sample_faq.texts))
    SearchIndex.build(texts, sample_encoder, ids=sample_faq.ids).save(other)  # same size, other content
    gen = "gen-000001"
    cases = {
        "missing": (lambda d: (d / gen / "documents.sqlite").unlink(), "documents.sqlite is missing"),
        "truncated": (lambda d: write(d / gen / "index.faiss", (d / gen / "index.faiss").read_bytes()[:999]),
                      "index.faiss is 999 bytes, the manifest says"),
        "corrupted": (lambda d: write(d / gen / "index.faiss", flip_last_byte((d / gen / "index.faiss").read_bytes())),
                      "index.faiss does not match the checksum"),
        "swapped-vectors": (lambda d: shutil.copy(other / gen / "vectors.npy", d / gen / "vectors.npy"),
                            "vectors.npy does not match the checksum"),
        "swapped-manifest": (lambda d: shutil.copy(other / "manifest.json", d / "manifest.json"),
                             "does not match the checksum"),
        "missing-encoder-file": (lambda d: (d / gen / "encoder" / "config.json").unlink(), "encoder copy is damaged"),
    }
    for name, (how, message) in cases.items():
        one_line_error(IndexDirectoryError, SearchIndex.load, damaged_copy(index_dir, tmp_path / name, how),
                       match=message)


@case("lexical-index-damaged-on-disk")
def test_lexical_index_damaged_on_disk(index_dir, tmp_path):
    from siamsearch.lexical import FORWARD_FILES, FORWARD_STARTS_FILE, LEXICAL_FILES, POSTINGS_FILE, TERMS_FILE
    from siamsearch.storage import sha256_file

    gen = index_dir / "gen-000001"

    def fixed_checksum(d, name):  # a tamperer (or a bug) that keeps the manifest in step
        m = json.loads((d / "manifest.json").read_text())
        path = d / "gen-000001" / name
        m["files"][name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        (d / "manifest.json").write_text(json.dumps(m))

    def overrun(d):
        terms = np.load(gen / TERMS_FILE)
        terms[1:, 1] += 7  # every term's postings start past where they are
        np.save(d / "gen-000001" / TERMS_FILE, terms)
        fixed_checksum(d, TERMS_FILE)

    def shorter_postings(d):
        np.save(d / "gen-000001" / POSTINGS_FILE, np.load(gen / POSTINGS_FILE)[:-3])
        fixed_checksum(d, POSTINGS_FILE)

    def forward_overrun(d):
        starts = np.load(gen / FORWARD_STARTS_FILE)
        starts[1:-1] += 3  # rows whose entries run past the next row's
        starts[1] = starts[-1] + 1
        np.save(d / "gen-000001" / FORWARD_STARTS_FILE, starts)
        fixed_checksum(d, FORWARD_STARTS_FILE)

    cases = {"overrun": (overrun, "its lexical index cannot be read"),
             "shorter": (shorter_postings, "its lexical index cannot be read"),
             "forward-overrun": (forward_overrun, "its lexical index cannot be read")}
    for name in (*LEXICAL_FILES, *FORWARD_FILES):
        data = (gen / name).read_bytes()
        cases[f"missing-{name}"] = (lambda d, n=name: (d / "gen-000001" / n).unlink(), f"{name} is missing")
        cases[f"cut-{name}"] = (lambda d, n=name, b=data: write(d / "gen-000001" / n, b[:-5]),
                                f"{name} is {len(data) - 5:,} bytes, the manifest says")
        cases[f"flipped-{name}"] = (lambda d, n=name, b=data: write(d / "gen-000001" / n, flip_last_byte(b)),
                                    f"{name} does not match the checksum")
    for name, (how, message) in cases.items():
        one_line_error(IndexDirectoryError, SearchIndex.load, damaged_copy(index_dir, tmp_path / name, how),
                       match=message)

    def format_4(d):  # as written before the lexical part
        m = json.loads((d / "manifest.json").read_text())
        m["format_version"] = 4
        for n in (*LEXICAL_FILES, *FORWARD_FILES):
            del m["files"][n]
            (d / "gen-000001" / n).unlink()
        (d / "manifest.json").write_text(json.dumps(m))

    old = SearchIndex.load(damaged_copy(index_dir, tmp_path / "old", format_4))
    assert len(old.search("退货", 3)) == 3
    one_line_error(InputError, old.search, "退货", mode="hybrid", match=r"compact\(lexical=True\)")


@case("manifest-paths-outside-the-directory")
def test_manifest_paths_outside_the_directory(index_dir, tmp_path):
    def tamper(**changes):
        def how(d):
            m = json.loads((d / "manifest.json").read_text())
            (d / "manifest.json").write_text(json.dumps({**m, **changes}))
        return how

    for n, changes in enumerate([{"generation": "../../etc"}, {"generation": -1}, {"data": "/etc/passwd"},
                                 {"files": {"index.faiss": "../../../x"}}]):
        damaged = damaged_copy(index_dir, tmp_path / str(n), tamper(**changes))
        one_line_error(IndexDirectoryError, SearchIndex.load, damaged,
                       match="manifest.json is invalid")


@case("tampered-model-or-index")
def test_tampered_model_or_index(model_dir, index_dir, tmp_path):
    """No code from data: extra settings in config.json (a Lambda layer, say) or a pickled vectors file are refused."""
    def add_lambda(d):
        c = json.loads((d / "config.json").read_text())
        c["encoder"]["layers"] = [{"class_name": "Lambda", "config": {"function": "__import__('os').system('x')"}}]
        (d / "config.json").write_text(json.dumps(c))

    one_line_error(ModelDirectoryError, Encoder.load, damaged_copy(model_dir, tmp_path / "m", add_lambda),
                   match="invalid configuration")

    def pickled_vectors(d):
        np.save(d / "gen-000001" / "vectors.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
        m = json.loads((d / "manifest.json").read_text())
        from siamsearch.storage import sha256_file
        m["files"]["vectors.npy"] = {"sha256": sha256_file(d / "gen-000001" / "vectors.npy"),  # a tamperer fixes it
                                     "bytes": (d / "gen-000001" / "vectors.npy").stat().st_size}
        (d / "manifest.json").write_text(json.dumps(m))

    one_line_error(IndexDirectoryError, SearchIndex.load, damaged_copy(index_dir, tmp_path / "i", pickled_vectors),
                   match="a data file cannot be read")


# -- fuzzing -------------------------------------------------------------------------

@case("damaged-table-files")
def test_damaged_table_files(tmp_path):
    import pandas as pd

    write(tmp_path / "f.parquet", "not a parquet file\n")
    one_line_error(InputError, read_corpus, tmp_path / "f.parquet", match=r"f\.parquet: cannot read it as \.parquet")
    write(tmp_path / "g.xlsx", "id,text\n1,x\n")
    one_line_error(InputError, read_corpus, tmp_path / "g.xlsx", match=r"g\.xlsx: cannot read it as \.xlsx")
    pd.DataFrame({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": ["1", "maybe"]}).to_parquet(
        tmp_path / "p.parquet")
    one_line_error(InputError, read_pairs, tmp_path / "p.parquet", match=r"p\.parquet line 3: label 'maybe'")
    pd.DataFrame({"id": ["a", "a"], "text": ["x", "y"]}).to_excel(tmp_path / "c.xlsx", index=False)
    one_line_error(InputError, read_corpus, tmp_path / "c.xlsx", match=r"line 3: duplicate id 'a' \(first on line 2\)")
    twice = pd.DataFrame([["x", "y"]], columns=["text", "text"])
    one_line_error(InputError, read_corpus, twice, match="the table repeats a column name")


@case("tampered-calibration")
def test_tampered_calibration(model_dir, tmp_path):
    from siamsearch.calibration import fit

    for bad in ({"method": "isotonic"}, {"method": "logistic on L1", "intercept": "1", "slope": -1},
                {"method": "logistic on L1", "intercept": 1, "slope": float("nan")},
                {"method": "logistic on L1", "intercept": 1, "slope": 0.5}):
        copy = shutil.copytree(model_dir, tmp_path / f"m{len(list(tmp_path.iterdir()))}")
        config = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps({**config, "calibration": bad}))
        one_line_error(ModelDirectoryError, Encoder.load, copy, match="invalid calibration in config.json")
    one_line_error(InputError, fit, np.array([0.1, 0.2]), [0, 0], {}, match="needs pairs of both kinds")


@case("fuzz-text-to-ids")
@given(st.text(max_size=300), st.integers(1, 120))
def test_fuzz_text_to_ids(text, max_length):
    vocab = Vocabulary.fit(["退款运费abc", text[:20]])
    ids = vocab.ids(text, max_length)
    assert len(ids) == min(len(normalize(text)), max_length)
    assert all(1 <= i < len(vocab) for i in ids)
    assert normalize(normalize(text)) == normalize(text)


@case("fuzz-file-readers")
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150)
@given(data=st.one_of(st.binary(max_size=400), st.text(alphabet=st.sampled_from('ab退\t\n\r",01 \ufeff\x00{}:'),
                                                        max_size=200).map(str.encode)),
       suffix=st.sampled_from([".tsv", ".csv", ".txt", ".jsonl"]))
def test_fuzz_file_readers(tmp_path_factory, data, suffix):
    path = write(tmp_path_factory.mktemp("fuzz") / f"f{suffix}", data)
    for reader in (read_pairs, read_corpus):
        try:
            reader(path)
        except SiamsearchError as e:
            assert "\n" not in str(e)


@case("fuzz-search")
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(query=st.text(max_size=60), k=st.integers(-2, 8))
def test_fuzz_search(small_index, sample_encoder, query, k):
    try:
        hits = small_index.search(query, k)
    except InputError as e:
        assert not normalize(query) or k < 1, e
        return
    assert len(hits) == min(k, 3)
    for h in hits:
        assert abs(h.score - sample_encoder.similarity(query, h.text)) < 1e-5


@case("serve-ray-on-an-unsharded-folder")
def test_serve_ray_on_an_unsharded_folder(index_dir):
    from siamsearch.cluster import serve_on_ray
    from siamsearch.service import Settings

    one_line_error(InputError, serve_on_ray, Settings(str(index_dir)), match="not a sharded index")
    result = CliRunner().invoke(main, ["serve", "--index", str(index_dir), "--ray", "auto"])
    assert result.exit_code == 1 and "not a sharded index" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["serve", "--index", str(index_dir), "--replicas", "2"])
    assert result.exit_code == 2 and "add --ray" in result.output


def test_catalogue_matches_the_docs():
    documented = re.findall(r"^\| `([a-z0-9-]+)` \|", CATALOGUE.read_text(encoding="utf-8"), flags=re.M)
    assert sorted(documented) == sorted(CASES), "docs/hostile-inputs.md and tests/test_hostile.py differ"
    assert len(documented) == len(set(documented))


# -- HTTP (siamsearch serve) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def http(index_dir, tmp_path_factory):
    from fastapi.testclient import TestClient

    from siamsearch.service import Settings, create_app, token_digest

    token = tmp_path_factory.mktemp("hostile-http") / "token"
    token.write_text("a-write-token-for-the-hostile-cases")
    return TestClient(create_app(Settings(str(index_dir), token_digest(token))))


WRITE = {"Authorization": "Bearer a-write-token-for-the-hostile-cases"}


def http_error(response, status: int, match: str) -> str:
    """A 4xx with the one-line JSON error body, never a traceback."""
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert re.search(match, message), message
    assert "\n" not in message and "Traceback" not in response.text and len(message) < 600
    return message


@case("http-malformed-json")
def test_http_malformed_json(http):
    for body in (b"{bad", b'{"query": "x"', b'{"query": "\xff\xfe"}'):
        http_error(http.post("/v1/search", content=body, headers={"Content-Type": "application/json"}), 400,
                   "not valid JSON")
    http_error(http.post("/v1/search", content=b"", headers={"Content-Type": "application/json"}), 400,
               "the request body is empty")
    surrogate = '{"query": "\udc80"}'.encode("utf-8", "surrogatepass")
    http_error(http.post("/v1/search", content=surrogate, headers={"Content-Type": "application/json"}), 422,
               "^query: .*valid string")
    http_error(http.post("/v1/search", content=b'{"query": "x"}', headers={"Content-Type": "text/plain"}), 422,
               "must be a JSON object")
    http_error(http.post("/v1/search", json=["x"]), 422, "must be a JSON object")


@case("http-wrong-types")
def test_http_wrong_types(http):
    http_error(http.post("/v1/search", json={"query": 5}), 422, r"^query: ")
    http_error(http.post("/v1/search", json={"query": "x", "k": "ten"}), 422, r"^k: ")
    http_error(http.post("/v1/search", json={}), 422, r"^query: Field required")
    http_error(http.post("/v1/search/batch", json={"queries": "x"}), 422, r"^queries: ")
    http_error(http.put("/v1/documents", headers=WRITE, json={"documents": [{"id": 1, "text": "x"}]}), 422,
               r"^documents\.0\.id: ")


@case("http-empty-query")
def test_http_empty_query(http):
    for query in ("", "   ", "\ufeff\u3000"):
        http_error(http.post("/v1/search", json={"query": query}), 422, "empty or whitespace only")
    http_error(http.post("/v1/search/batch", json={"queries": ["退款", " "]}), 422, "query #2 is empty")
    assert http.post("/v1/search/batch", json={"queries": []}).json()["results"] == []


@case("http-k-out-of-range")
def test_http_k_out_of_range(http):
    from siamsearch.service import MAX_K

    for k in (0, -1, MAX_K + 1, 1.5, True):
        http_error(http.post("/v1/search", json={"query": "退款", "k": k}), 422, r"^k: ")
    assert len(http.post("/v1/search", json={"query": "退款", "k": MAX_K}).json()["hits"]) == MAX_K


@case("http-oversized-body")
def test_http_oversized_body(http):
    from siamsearch.service import MAX_BODY_BYTES

    big = b'{"query": "' + b"a" * (MAX_BODY_BYTES + 1) + b'"}'
    http_error(http.post("/v1/search", content=big, headers={"Content-Type": "application/json"}), 413, "over 16 MiB")
    chunks = (big[i : i + (1 << 20)] for i in range(0, len(big), 1 << 20))  # no Content-Length: sent chunked
    http_error(http.post("/v1/search", content=chunks, headers={"Content-Type": "application/json"}), 413,
               "over 16 MiB")


@case("http-oversized-query-or-batch")
def test_http_oversized_query_or_batch(http):
    from siamsearch.service import MAX_BATCH, MAX_DOCUMENTS, MAX_IDS, MAX_QUERY_CHARS, MAX_TEXT_CHARS

    http_error(http.post("/v1/search", json={"query": "退" * (MAX_QUERY_CHARS + 1)}), 422, r"^query: .*at most")
    http_error(http.post("/v1/search/batch", json={"queries": ["退款"] * (MAX_BATCH + 1)}), 422, r"^queries: ")
    docs = [{"id": str(i), "text": "x"} for i in range(MAX_DOCUMENTS + 1)]
    http_error(http.put("/v1/documents", headers=WRITE, json={"documents": docs}), 422, r"^documents: ")
    long = {"documents": [{"id": "x", "text": "x" * (MAX_TEXT_CHARS + 1)}]}
    http_error(http.put("/v1/documents", headers=WRITE, json=long), 422, r"^documents\.0\.text: ")
    http_error(http.request("DELETE", "/v1/documents", headers=WRITE, json={"ids": ["x"] * (MAX_IDS + 1)}), 422,
               r"^ids: ")


@case("http-unknown-id")
def test_http_unknown_id(http):
    before = http.get("/readyz").json()
    http_error(http.get("/v1/documents/no-such-id"), 404, "no document with id 'no-such-id'")
    http_error(http.request("DELETE", "/v1/documents", headers=WRITE, json={"ids": ["faq-001", "no-such-id"]}), 404,
               "no document with id 'no-such-id'; nothing was removed")
    assert http.get("/readyz").json() == before and http.get("/v1/documents/faq-001").status_code == 200


@case("http-invalid-filter")
def test_http_invalid_filter(http):
    for where, match in (({}, "the filter is empty"), ({"topic": []}, "empty list of values"),
                         ({'to"pic': "x"}, "is not a field name"), ({"topic": {"a": 1}}, r"^filter\.topic"),
                         ({"topic": None}, r"^filter\.topic"), ("topic=x", r"^filter: ")):
        message = http_error(http.post("/v1/search", json={"query": "退款", "filter": where}), 422, match)
        assert "filter" in message or http.post("/v1/search", json={"query": "退款", "filter": where}).json()[
            "error"]["argument"] == "filter"


@case("filter-unknown-field")
def test_filter_on_an_unknown_field_or_matching_nothing(sample_encoder, sample_faq, tmp_path):
    from fastapi.testclient import TestClient

    from siamsearch.service import Settings, create_app

    index_dir = tmp_path / "faq"
    SearchIndex.build(sample_faq.texts, sample_encoder, ids=sample_faq.ids, metadata=sample_faq.metadata).save(
        index_dir)
    http = TestClient(create_app(Settings(str(index_dir))))
    message = http_error(http.post("/v1/search", json={"query": "退款", "filter": {"nofield": 1}}), 400,
                         "no document has the metadata field 'nofield'; check the field name in the filter")
    assert message.count("\n") == 0
    found = http.post("/v1/search", json={"query": "退款", "filter": {"topic": "不存在"}})
    assert found.status_code == 200 and found.json()["hits"] == [] and found.json()["note"] == \
        "no documents match the filter"
    assert "note" not in http.post("/v1/search", json={"query": "退款", "filter": {"topic": "退款"}}).json()
    runner = CliRunner()
    unknown = runner.invoke(main, ["query", "--index", str(index_dir), "--where", "nofield=1", "退款"])
    assert unknown.exit_code == 1 and unknown.output.strip().splitlines()[-1] == (
        "Error: no document has the metadata field 'nofield'; check the field name in the filter")
    none = runner.invoke(main, ["query", "--index", str(index_dir), "--where", "topic=不存在", "退款"])
    assert none.exit_code == 0 and none.output.splitlines() == ["query: 退款", "  no documents match the filter"]
    dropped = runner.invoke(main, ["query", "--index", str(index_dir), "--min-match", "0.999", "退款"])
    assert dropped.exit_code == 0 and dropped.stdout.splitlines()[-1] == "  no hits"
    assert dropped.stderr.startswith("note: --min-match 0.999 left out ")


@case("http-missing-or-wrong-token")
def test_http_missing_or_wrong_token(http):
    doc = {"documents": [{"id": "t", "text": "x"}]}
    http_error(http.put("/v1/documents", json=doc), 401, "needs a bearer token")
    http_error(http.put("/v1/documents", json=doc, headers={"Authorization": "Bearer wrong"}), 403, "not valid")
    http_error(http.put("/v1/documents", json=doc, headers={"Authorization": "Basic eDp5"}), 401, "needs a bearer")
    http_error(http.post("/v1/compact", headers={"Authorization": "Bearer " + "x" * 10_000}), 403, "not valid")


@case("http-unknown-route-or-method")
def test_http_unknown_route_or_method(http):
    http_error(http.get("/v2/search"), 404, "Not Found")
    http_error(http.get("/v1/search"), 405, "Method Not Allowed")
