"""Lexical and hybrid search: BM25 inside the index folder, the three modes, the fusions and
their fitting, old index folders, and the contract (every hit's score is the model's)."""

from __future__ import annotations

import json

import bm25s
import numpy as np
import pytest
from click.testing import CliRunner

from siamsearch import SearchIndex, read_pairs
from siamsearch.cli import main
from siamsearch.demo import SAMPLE_PAIRS
from siamsearch.errors import InputError
from siamsearch.fusion import FUSIONS, MODES, Reciprocal, Weighted, fusion_from_dict
from siamsearch.fusion_fit import CANDIDATES, MIN_QUERIES, fit_fusion
from siamsearch.index_folder import MANIFEST
from siamsearch.lexical import FORWARD_FILES, LEXICAL_FILES, terms

QUERIES = ["退款多久到账", "怎么开发票", "会员积分", "iPhone 15 退货", "快递 丢了"]


@pytest.fixture(scope="module")
def index(sample_encoder, sample_faq):
    return SearchIndex.build(sample_faq.texts, sample_encoder, ids=sample_faq.ids, metadata=sample_faq.metadata)


def bm25s_scores(texts: list[str], query: str) -> np.ndarray:
    """The reference: bm25s's Lucene BM25 (k1 1.2, b 0.75) over the same terms."""
    reference = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    reference.index([terms(t) for t in texts], show_progress=False)
    return reference.get_scores(list(dict.fromkeys(terms(query))))


def test_lexical_scores_are_bm25s_lucene_bm25(index, sample_faq):
    for query in QUERIES:
        expected = bm25s_scores(sample_faq.texts, query)
        hits = index.search(query, k=len(sample_faq), mode="lexical")
        assert len(hits) == int((expected > 0).sum())  # only documents with a term in common
        position = {doc_id: i for i, doc_id in enumerate(sample_faq.ids)}
        for h in hits:
            assert h.lexical == pytest.approx(expected[position[h.id]], rel=1e-5, abs=1e-6)
            assert h.rank_score == h.lexical
        assert [h.lexical for h in hits] == sorted((h.lexical for h in hits), reverse=True)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_keeps_the_contract(index, sample_encoder, mode):
    """The score is the model's exp(-L1) for the pair in every mode; ordered by rank_score, ties by id."""
    for hits in index.search_batch(QUERIES, k=8, mode=mode):
        assert hits and [h.rank for h in hits] == list(range(1, len(hits) + 1))
        order = [(-(h.score if mode == "dense" else h.rank_score), h.id) for h in hits]
        assert order == sorted(order)
        assert all((h.lexical is None) == (mode == "dense") for h in hits)
    for query in QUERIES:
        for h in index.search(query, k=8, mode=mode):
            assert abs(h.score - sample_encoder.similarity(query, h.text)) < 1e-5
            assert h.match == pytest.approx(float(sample_encoder.calibration(np.array([h.score]))[0]))
    assert index.search_batch(QUERIES, k=8, mode=mode) == index.search_batch(QUERIES, k=8, mode=mode)


def test_a_hybrid_search_takes_candidates_from_both_sides(index, sample_faq):
    """A document BM25 ranks first is among the hybrid hits even where the model ranks it low."""
    for query in QUERIES:
        best_lexical = index.search(query, k=1, mode="lexical")[0].id
        assert best_lexical in {h.id for h in index.search(query, k=10, mode="hybrid", fusion=Weighted(0.0))}
    dense = [h.id for h in index.search(QUERIES[0], k=10)]
    assert [h.id for h in index.search(QUERIES[0], k=10, mode="hybrid", fusion=Weighted(1.0))] == dense


@pytest.mark.parametrize("mode", MODES)
def test_filters_min_match_and_k_work_in_every_mode(index, sample_faq, mode):
    topic = sample_faq.metadata[0]["topic"]
    hits = index.search(QUERIES[0], k=5, where={"topic": topic}, mode=mode)
    assert hits and all(h.metadata["topic"] == topic for h in hits) and len(hits) <= 5
    assert all(h.match >= 0.3 for h in index.search(QUERIES[0], k=10, min_match=0.3, mode=mode))
    with pytest.raises(InputError, match="no document has the metadata field .nofield."):
        index.search(QUERIES[0], where={"nofield": "1"}, mode=mode)
    assert len(index.search(QUERIES[0], k=3, mode=mode)) <= 3
    frame = index.search_frame(QUERIES[:2], k=3, mode=mode)
    assert set(frame["query"]) <= set(QUERIES[:2]) and (frame["rank"] <= 3).all()


def test_changes_keep_the_lexical_part_equal_to_a_fresh_build(sample_encoder, sample_faq, tmp_path):
    """add, remove, upsert, compact, save and load: lexical answers (ids, BM25) as a fresh build's."""
    index = SearchIndex.build(sample_faq.texts[:60], sample_encoder, ids=sample_faq.ids[:60])
    index.save(tmp_path / "idx")
    index = SearchIndex.load(tmp_path / "idx")
    index.add(["iPhone 15 退货要多久", "发票抬头写错了"], ids=["new1", "new2"])
    index.remove(sample_faq.ids[:5])
    index.upsert(["快递丢了怎么办"], ids=[sample_faq.ids[10]])
    for step in ("changed", "saved", "compacted"):
        if step == "saved":
            index.save(tmp_path / "idx")
            index = SearchIndex.load(tmp_path / "idx")
        elif step == "compacted":
            index.compact()
            index.save(tmp_path / "idx")
            index = SearchIndex.load(tmp_path / "idx", mmap=True)
        documents = {d.id: d.text for d in index}
        ids = sorted(documents)
        fresh = SearchIndex.build([documents[i] for i in ids], sample_encoder, ids=ids, kind="flat")
        for mode in ("lexical", "hybrid"):
            got, want = index.search_batch(QUERIES, 10, mode=mode), fresh.search_batch(QUERIES, 10, mode=mode)
            for x, y in zip(got, want):
                assert [h.id for h in x] == [h.id for h in y], (step, mode)
                assert [h.lexical for h in x] == pytest.approx([h.lexical for h in y], rel=1e-9), (step, mode)


def as_written_before_lexical(path) -> None:
    """The folder as siamsearch wrote it before it kept a lexical part (index format 4)."""
    manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    manifest["format_version"] = 4
    for name in (*LEXICAL_FILES, *FORWARD_FILES):
        del manifest["files"][name]
        (path / f"gen-{manifest['generation']:06d}" / name).unlink()
    (path / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")


def test_an_old_index_searches_dense_and_says_how_to_add_the_lexical_part(index, tmp_path):
    index.save(tmp_path / "old")
    as_written_before_lexical(tmp_path / "old")
    old = SearchIndex.load(tmp_path / "old")
    assert not old.has_lexical and old.search(QUERIES[0], 3) == index.search(QUERIES[0], 3)
    with pytest.raises(InputError, match=r"a hybrid search needs a lexical part.*compact\(lexical=True\)"):
        old.search(QUERIES[0], mode="hybrid")
    runner = CliRunner()
    refused = runner.invoke(main, ["query", "--index", str(tmp_path / "old"), "--mode", "lexical", "发票"])
    assert refused.exit_code == 1 and refused.output.strip().splitlines() == [
        "Error: a lexical search needs a lexical part, and this index was written without one (by an older "
        "siamsearch); add it with 'siamsearch compact --lexical'"]
    from fastapi.testclient import TestClient

    from siamsearch.service import Settings, create_app

    answer = TestClient(create_app(Settings(str(tmp_path / "old")))).post("/v1/search", json={"query": "发票",
                                                                                              "mode": "hybrid"})
    assert answer.status_code == 422 and "compact(lexical=True)" in answer.json()["error"]["message"]
    info = runner.invoke(main, ["info", str(tmp_path / "old")])
    assert "dense only (add it with 'siamsearch compact --lexical')" in info.output
    added = runner.invoke(main, ["compact", "--index", str(tmp_path / "old"), "--lexical"])
    assert added.exit_code == 0 and "added its lexical part" in added.output
    upgraded = SearchIndex.load(tmp_path / "old")
    assert upgraded.has_lexical
    assert upgraded.search_batch(QUERIES, 5, mode="hybrid") == index.search_batch(QUERIES, 5, mode="hybrid")


def test_the_cli_and_its_table_in_each_mode(index, tmp_path):
    index.save(tmp_path / "idx")
    runner = CliRunner()
    for mode in MODES:
        result = runner.invoke(main, ["query", "--index", str(tmp_path / "idx"), "--mode", mode, "-k", "3", "发票"])
        assert result.exit_code == 0, result.output
        header = result.output.splitlines()[1]
        assert ("bm25" in header) == (mode != "dense")
        found = json.loads(runner.invoke(main, ["query", "--index", str(tmp_path / "idx"), "--mode", mode, "--json",
                                                "发票"]).stdout)
        assert all(("rank_score" in h) == (mode != "dense") for h in found["hits"])
    wrong = runner.invoke(main, ["query", "--index", str(tmp_path / "idx"), "--mode", "sparse", "发票"])
    assert wrong.exit_code == 2 and "'sparse' is not one of 'dense', 'lexical', 'hybrid'" in wrong.output


def test_the_http_mode_field(index, tmp_path):
    from fastapi.testclient import TestClient

    from siamsearch.service import Settings, create_app

    index.save(tmp_path / "idx")
    http = TestClient(create_app(Settings(str(tmp_path / "idx"))))
    for mode in MODES:
        hits = http.post("/v1/search", json={"query": "发票", "k": 3, "mode": mode}).json()["hits"]
        assert hits == [h.to_dict() for h in index.search("发票", 3, mode=mode)]
        batch = http.post("/v1/search/batch", json={"queries": ["发票", "退款"], "mode": mode}).json()["results"]
        assert [r["hits"] for r in batch] == [[h.to_dict() for h in hs]
                                              for hs in index.search_batch(["发票", "退款"], 10, mode=mode)]
    wrong = http.post("/v1/search", json={"query": "发票", "mode": "sparse"})
    assert wrong.status_code == 422
    assert wrong.json()["error"]["message"] == "mode: Input should be 'dense', 'lexical' or 'hybrid'"
    schema = http.get("/openapi.json").json()["components"]["schemas"]["SearchRequest"]["properties"]["mode"]
    assert schema["enum"] == list(MODES)


def test_fusions_order_by_their_rank_score_and_read_back():
    dense, lexical = np.array([0.9, 0.5, 0.1, 0.5]), np.array([0.0, 3.0, 1.0, 2.0])
    rrf = Reciprocal(k=60).rank_scores(dense, lexical)
    assert rrf[0] == pytest.approx(1 / 61) and rrf[1] == pytest.approx(1 / 62 + 1 / 61)
    assert rrf[3] == pytest.approx(1 / 62 + 1 / 62)  # equal dense scores share a rank
    assert np.allclose(Weighted(1.0).rank_scores(dense, lexical), (dense - 0.1) / 0.8)
    assert np.allclose(Weighted(0.0).rank_scores(dense, lexical), lexical / 3)
    for fusion in (Reciprocal(), Reciprocal(k=10), Weighted(0.3)):
        assert fusion_from_dict(fusion.to_dict()) == fusion
    assert set(FUSIONS) == {"rrf", "weighted"}
    for bad, message in (({"name": "max"}, "unknown fusion 'max'"), ({"name": "weighted", "weight": 2},
                         "weight is from 0 to 1"), ({"name": "rrf", "k": 0}, "k is a whole number")):
        with pytest.raises(InputError, match=message):
            fusion_from_dict(bad)


def test_fitting_picks_the_best_fusion_and_the_model_keeps_it(sample_encoder, tmp_path):
    pairs = read_pairs(SAMPLE_PAIRS)
    fusion, report = fit_fusion(sample_encoder, pairs)
    assert report["queries"] >= MIN_QUERIES and set(report["mrr@10"]) == {f.label for f in CANDIDATES}
    assert report["mrr@10"][fusion.label] == max(report["mrr@10"].values())
    few, skipped = fit_fusion(sample_encoder, pairs.subset(np.arange(6)))
    assert few is None and "fewer than" in skipped["skipped"]
    sample_encoder.save(tmp_path / "m")
    result = CliRunner().invoke(main, ["calibrate", "--model", str(tmp_path / "m"), str(SAMPLE_PAIRS)])
    assert result.exit_code == 0, result.output
    assert f"hybrid fusion {fusion.label}: MRR@10" in result.output
    from siamsearch import Encoder

    assert Encoder.load(tmp_path / "m").fusion == fusion
    index = SearchIndex.build(["发票怎么开", "退款多久到账"], Encoder.load(tmp_path / "m"))
    assert index.search("发票", 2, mode="hybrid") == index.search("发票", 2, mode="hybrid", fusion=fusion)


def test_a_format_5_index_derives_its_forward_files_and_compact_writes_them(sample_encoder, sample_faq, tmp_path):
    """An index written before the forward files answers lexical and hybrid searches as one
    written with them; a save that only adds a delta keeps linking the old base, compact writes them."""
    built = SearchIndex.build(sample_faq.texts, sample_encoder, ids=sample_faq.ids)
    built.save(tmp_path / "old")
    manifest = json.loads((tmp_path / "old" / MANIFEST).read_text(encoding="utf-8"))
    manifest["format_version"] = 5
    for name in FORWARD_FILES:
        del manifest["files"][name]
        (tmp_path / "old" / "gen-000001" / name).unlink()
    (tmp_path / "old" / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    old = SearchIndex.load(tmp_path / "old", mmap=True)
    for mode in ("lexical", "hybrid"):
        assert old.search_batch(QUERIES, 10, mode=mode) == built.search_batch(QUERIES, 10, mode=mode)
    old.add(["发票抬头写错了"], ids=["new"])
    old.save(tmp_path / "old")
    files = json.loads((tmp_path / "old" / MANIFEST).read_text(encoding="utf-8"))["files"]
    assert not set(FORWARD_FILES) & set(files)
    old = SearchIndex.load(tmp_path / "old")
    old.compact()
    old.save(tmp_path / "old")
    assert set(FORWARD_FILES) <= set(json.loads((tmp_path / "old" / MANIFEST).read_text(encoding="utf-8"))["files"])
    reopened = SearchIndex.load(tmp_path / "old", mmap=True)
    assert reopened.search_batch(QUERIES, 10, mode="hybrid") == old.search_batch(QUERIES, 10, mode="hybrid")
