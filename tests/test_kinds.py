"""Every index kind of the registry through the same checks, and how ``auto`` chooses one.

A new kind added to ``kinds.KINDS`` runs through every test parametrised by ``KIND_NAMES``
without a line here changing; ``TINY`` says how to build it small and exhaustive (a kind
missing there is built with its defaults).
"""

import json
import threading

import faiss
import numpy as np
import pytest

from siamsearch import SearchIndex
from siamsearch.choice import choose_kind, parse_bytes
from siamsearch.errors import IndexDirectoryError, InputError
from siamsearch.kinds import HNSW, IVF, KINDS, Flat, from_dict, make
from siamsearch.storage import sha256_file

from .conftest import keras_scores

QUERIES = ["我的退款什么时候能到账", "密码不记得了", "能开公司发票吗", "快递一直不更新"]
KIND_NAMES = list(KINDS)
TINY = {"ivf": {"nlist": 2, "nprobe": 2}}
"""Parameters that make a kind search the whole of a 200-document corpus (so it must agree with flat)."""
BAD = {"flat": [], "hnsw": [("hnsw_m", 1), ("ef_search", 0), ("ef_construction", -3)],
       "ivf": [("nlist", -1), ("nprobe", "many")]}


@pytest.fixture(scope="module")
def built(sample_encoder, sample_faq):
    return {name: SearchIndex.build(sample_faq.texts, sample_encoder, ids=sample_faq.ids, metadata=sample_faq.metadata,
                                    kind=name, **TINY.get(name, {})) for name in KIND_NAMES}


def gen(path):
    return path / f"gen-{json.loads((path / 'manifest.json').read_text())['generation']:06d}"


def exhaustive_ids(documents: np.ndarray, ids: list[str], query: np.ndarray, k: int) -> list[str]:
    """The k best documents by exp(-L1) over all of them, ties by id: numpy alone, no FAISS."""
    scores = np.exp(-np.abs(documents - query).sum(axis=1))
    return [ids[i] for i in sorted(range(len(scores)), key=lambda i: (-scores[i], ids[i]))[:k]]


@pytest.mark.parametrize("name", KIND_NAMES)
def test_each_kind_answers_like_an_exhaustive_search_and_keeps_the_contract(built, sample_encoder, sample_faq, name):
    index = built[name]
    assert index.kind == name and isinstance(index.spec, KINDS[name])
    documents = sample_encoder.encode(sample_faq.texts)
    for query, vector, hits in zip(QUERIES, sample_encoder.encode(QUERIES), index.search_batch(QUERIES, 10)):
        assert [h.id for h in hits] == exhaustive_ids(documents, sample_faq.ids, vector, 10)
        scores = np.array([h.score for h in hits])
        assert np.allclose(scores, keras_scores(sample_encoder, [query] * len(hits), [h.text for h in hits]),
                           atol=1e-5, rtol=0)


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("name", KIND_NAMES)
def test_each_kind_round_trips_through_its_manifest(built, tmp_path, name, mmap):
    index = built[name]
    index.save(tmp_path / name)
    recorded = json.loads((tmp_path / name / "manifest.json").read_text())["index"]
    assert recorded == index.spec.to_dict() and recorded["kind"] == name and from_dict(recorded) == index.spec
    loaded = SearchIndex.load(tmp_path / name, mmap=mmap)
    assert loaded.spec == index.spec and loaded.search_batch(QUERIES, 5) == index.search_batch(QUERIES, 5)


@pytest.mark.parametrize("name", KIND_NAMES)
def test_each_kind_changes_and_compacts_like_a_fresh_build(built, sample_encoder, sample_faq, tmp_path, name):
    index = built[name]
    index.save(tmp_path / name)
    changed = SearchIndex.load(tmp_path / name, mmap=True)  # mapped: copied to memory before the change
    changed.upsert(["新加的问题：怎么修改绑定手机号", "怎么退货"], ["new", sample_faq.ids[5]])
    changed.remove(sample_faq.ids[:10])
    assert changed.tombstones == 11 and changed.compact() == 11 and changed.tombstones == 0
    live = list(changed)
    fresh = SearchIndex.build([d.text for d in live], sample_encoder, ids=[d.id for d in live],
                              metadata=[d.metadata for d in live], kind="flat")
    assert changed.search_batch(QUERIES, 10) == fresh.search_batch(QUERIES, 10)


@pytest.mark.parametrize("name", KIND_NAMES)
def test_each_kind_validates_its_own_parameters(name):
    kind = KINDS[name]()
    assert make(name) == kind and kind.bytes_per_document(64) >= 4 * 64
    for argument, value in BAD[name]:
        with pytest.raises(InputError, match=argument) as caught:
            make(name, **{argument: value})
        assert caught.value.argument == argument
    others = sorted({p for k in KIND_NAMES if k != name for p in KINDS[k]().to_dict()} - set(kind.to_dict()))
    for argument in others:  # another kind's parameter is refused, naming it
        with pytest.raises(InputError, match=f"{argument} is not a parameter of a {name} index"):
            make(name, **{argument: 1})


@pytest.mark.parametrize("name", KIND_NAMES)
def test_each_kind_refuses_another_kinds_file(built, tmp_path, name):
    other = next(k for k in KIND_NAMES if k != name)
    built[name].save(tmp_path / "a")
    built[other].save(tmp_path / "b")
    (gen(tmp_path / "a") / "index.faiss").write_bytes((gen(tmp_path / "b") / "index.faiss").read_bytes())
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    faiss_bytes = (gen(tmp_path / "a") / "index.faiss").stat().st_size
    manifest["files"]["index.faiss"] = {"sha256": sha256_file(gen(tmp_path / "a") / "index.faiss"),
                                        "bytes": faiss_bytes}
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexDirectoryError, match=f"no {name} index"):
        SearchIndex.load(tmp_path / "a")


def test_a_manifest_with_bad_kind_settings_is_damaged(built, tmp_path):
    built["hnsw"].save(tmp_path / "x")
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    manifest["index"]["hnsw_m"] = 0
    (tmp_path / "x" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexDirectoryError, match="invalid index settings .*hnsw_m"):
        SearchIndex.load(tmp_path / "x")


def test_format_version_2_manifests_still_open(built, tmp_path):
    """Version 2 recorded every kind's parameters for every kind; they are read as the kind's own."""
    built["flat"].save(tmp_path / "v2")
    manifest = json.loads((tmp_path / "v2" / "manifest.json").read_text())
    manifest["format_version"] = 2
    manifest["index"] = {"kind": "flat", "hnsw_m": 32, "ef_construction": 200, "ef_search": 192, "nlist": 0,
                         "nprobe": 0}
    (tmp_path / "v2" / "manifest.json").write_text(json.dumps(manifest))
    assert SearchIndex.load(tmp_path / "v2").search_batch(QUERIES, 3) == built["flat"].search_batch(QUERIES, 3)


def test_search_parameters_go_with_each_call_not_onto_the_index(built, tmp_path):
    """HNSW's efSearch and IVF's nprobe are per-call parameters: the shared FAISS index keeps its own."""
    hnsw, ivf = built["hnsw"], built["ivf"]
    assert hnsw.spec.search_parameters(500).efSearch == 500 and hnsw.spec.search_parameters(5).efSearch == 192
    assert ivf.spec.search_parameters(5).nprobe == 2

    def stored(index, name):  # what FAISS holds on the index itself, as it would write it
        index.save(tmp_path / name)
        return index.spec.read(str(gen(tmp_path / name) / "index.faiss"), mmap=False)

    before = stored(hnsw, "h1").hnsw.efSearch, stored(ivf, "i1").nprobe
    hnsw.search_batch(QUERIES, 100)
    ivf.search(QUERIES[0], 100)
    assert (stored(hnsw, "h2").hnsw.efSearch, stored(ivf, "i2").nprobe) == before


def test_one_ivf_query_changes_no_other_threads_openmp_setting(built):
    """A single IVF query runs on one OpenMP thread by setting the calling thread's own count."""
    seen = []
    before = faiss.omp_get_max_threads()

    def other():
        seen.append(faiss.omp_get_max_threads())

    barrier = threading.Event()

    def searcher():
        for _ in range(50):
            built["ivf"].search(QUERIES[0], 5)
        barrier.set()

    t = threading.Thread(target=searcher)
    t.start()
    while not barrier.is_set():
        other()
    t.join()
    assert set(seen) == {before} and faiss.omp_get_max_threads() == before


# -- auto: which kind ---------------------------------------------------------------------

def test_auto_kind_follows_the_documented_table():
    assert [choose_kind(n, 64) for n in (10, 99_999, 100_000, 2_000_000, 2_000_001)] == \
        ["flat", "flat", "hnsw", "hnsw", "ivf"]
    million = 1_000_000
    assert choose_kind(million, 64, max_memory=600 * million) == "hnsw"  # 524 B/doc fits
    assert choose_kind(million, 64, max_memory=300 * million) == "ivf"   # 264 B/doc fits
    assert choose_kind(million, 64, max_memory=260 * million) == "flat"  # only 256 B/doc fits
    with pytest.raises(InputError, match="need at least 244.1 MiB") as caught:
        choose_kind(million, 64, max_memory=100 * million)
    assert caught.value.argument == "max_memory" and "--" not in str(caught.value)


def test_auto_keeps_the_parameters_of_the_kind_it_chose(sample_encoder, sample_faq):
    index = SearchIndex.build(sample_faq.texts, sample_encoder, kind="auto", hnsw_m=16, nlist=4)
    assert index.spec == Flat()
    with pytest.raises(InputError, match="bogus is not a parameter of any index kind"):
        SearchIndex.build(sample_faq.texts, sample_encoder, kind="auto", bogus=1)


@pytest.mark.parametrize("text, value", [("512M", 512 << 20), ("2G", 2 << 30), ("1.5GiB", 3 << 29),
                                         ("800000", 800000), ("10kb", 10 << 10)])
def test_memory_sizes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0", "G"])
def test_bad_memory_sizes(text):
    with pytest.raises(InputError, match="is not understood"):
        parse_bytes(text)


def test_ivf_parameters_follow_the_corpus_size():
    assert IVF().for_corpus(1_000_000) == IVF(nlist=4000, nprobe=125)
    assert IVF().for_corpus(10_000) == IVF(nlist=156, nprobe=16)
    assert IVF(nlist=64, nprobe=3).for_corpus(10_000) == IVF(nlist=64, nprobe=3)
    assert HNSW().for_corpus(10) == HNSW()
