"""Streamed builds (build.py): the same index as an in-memory build, in bounded memory, from
several files; and on a real local Ray cluster (ray_engine.py), the same index again, through
a worker killed mid-build and a bad line read by a worker."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from siamsearch import Encoder, InputError, SearchIndex
from siamsearch import build as build_module
from siamsearch import kinds as kinds_module
from siamsearch.architectures import ARCHITECTURES
from siamsearch.build import build_index, corpus_sources, make_engine
from siamsearch.cli import main
from siamsearch.data import read_corpus, stream_corpus
from siamsearch.demo import SAMPLE_FAQ
from siamsearch.fusion import MODES
from siamsearch.lexical import FORWARD_FILES, LEXICAL_FILES
from siamsearch.shard_map import QUANTISER_FILE
from siamsearch.shards import build_sharded

from .processes import LOOPBACK, descendants, listening_addresses

QUERIES = ["怎么注册账号", "退款多久到账", "发票怎么开", "运费谁出", "忘记密码怎么办"]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.load()


def generated(n: int, seed: int = 0) -> list[str]:
    """Short questions made from the sample FAQ's questions and characters (written for the
    project, so nothing of ../shared)."""
    faq = read_corpus(SAMPLE_FAQ, text_column="question").texts
    chars = sorted(set("".join(faq)))
    rng = np.random.default_rng(seed)
    return [faq[i % len(faq)] + "".join(rng.choice(chars, rng.integers(1, 6))) for i in range(n)]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "questions.txt"
    texts = generated(3000)
    texts[10] = "   "  # a blank line: skipped, and the line numbers after it still count it
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def generation(path: Path) -> Path:
    return path / f"gen-{json.loads((path / 'manifest.json').read_text())['generation']:06d}"


def documents(path: Path) -> list[tuple]:
    with sqlite3.connect(generation(path) / "documents.sqlite") as conn:
        return conn.execute("SELECT * FROM documents ORDER BY position").fetchall()


def assert_same_index(a: Path, b: Path) -> None:
    """The same FAISS file, vectors and lexical part byte for byte, the same documents, the
    same answers in every mode."""
    for name in ("index.faiss", "vectors.npy", *LEXICAL_FILES, *FORWARD_FILES):
        assert (generation(a) / name).read_bytes() == (generation(b) / name).read_bytes(), name
    assert documents(a) == documents(b)
    first, second = SearchIndex.load(a), SearchIndex.load(b)
    for mode in MODES:
        for x, y in zip(first.search_batch(QUERIES, k=10, mode=mode), second.search_batch(QUERIES, k=10, mode=mode)):
            assert [(h.id, h.score, h.lexical, h.metadata) for h in x] == \
                [(h.id, h.score, h.lexical, h.metadata) for h in y]


@pytest.mark.parametrize(("kind", "params"), [
    ("flat", {}),
    ("ivf", {}),  # trained on every vector (fewer than 64 a list)
    ("ivf", {"nlist": 8}),  # trained on the seeded sample; FAISS's "full" list layout
    ("ivf", {"nlist": 400, "nprobe": 40}),  # many empty lists: the "sprs" layout
    ("hnsw", {}),
])
def test_streamed_build_writes_the_in_memory_build_byte_for_byte(encoder, corpus_file, tmp_path, monkeypatch, kind,
                                                                 params):
    monkeypatch.setattr(kinds_module, "STREAM_BLOCK_ROWS", 700)  # several blocks, lists cut across them
    docs = read_corpus(corpus_file)
    SearchIndex.build(docs.texts, encoder, ids=docs.ids, kind=kind, **params).save(tmp_path / "memory")
    built = build_index(corpus_file, tmp_path / "streamed", encoder, kind=kind, chunk_size=450, **params)
    assert (built.documents, built.skipped, built.kind.name) == (2999, 1, kind)
    if kind == "hnsw":  # the graph depends on thread timing; the vectors and the answers do not
        for name in ("vectors.npy", *LEXICAL_FILES, *FORWARD_FILES):
            assert (generation(tmp_path / "memory") / name).read_bytes() == \
                (generation(tmp_path / "streamed") / name).read_bytes()
        return
    assert_same_index(tmp_path / "memory", tmp_path / "streamed")


def test_streamed_build_memory_follows_the_chunk_not_the_corpus(encoder, tmp_path, monkeypatch):
    """Python's allocations at their peak (tracemalloc, which NumPy reports to) while 2,000
    and 8,000 documents are built in chunks of 250 and blocks of 500 vectors: four times the
    corpus, not four times the memory (what does grow, 16 bytes a document for each row's
    list and the rows' order by list, is small beside a chunk)."""
    monkeypatch.setattr(kinds_module, "STREAM_BLOCK_ROWS", 500)
    monkeypatch.setattr(build_module, "ASSIGN_ROWS", 500)
    peaks = []
    for n in (2000, 8000):
        path = tmp_path / f"c{n}.txt"
        path.write_text("\n".join(generated(n, seed=n)) + "\n", encoding="utf-8")
        tracemalloc.start()
        build_index(path, tmp_path / f"i{n}", encoder, kind="ivf", nlist=16, chunk_size=250)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0], peaks


def test_several_files_and_folders_share_one_index(encoder, tmp_path):
    folder = tmp_path / "corpus"
    (folder / "part").mkdir(parents=True)
    (folder / "a.txt").write_text("怎么注册账号\n退款多久到账\n", encoding="utf-8")
    (folder / "part" / "b.jsonl").write_text(
        json.dumps({"id": "faq-1", "text": "发票怎么开", "topic": "发票"}, ensure_ascii=False) + "\n", encoding="utf-8")
    pd = pytest.importorskip("pandas")
    pd.DataFrame({"id": ["sku-9"], "text": ["运费谁出"], "price": [12.5]}).to_parquet(folder / "part" / "c.parquet")
    (folder / "_SUCCESS").write_text("", encoding="utf-8")  # a Spark marker: not a corpus file
    (folder / ".hidden.txt").write_text("不读\n", encoding="utf-8")
    assert [s.path.name for s in corpus_sources(folder)] == ["a.txt", "b.jsonl", "c.parquet"]
    built = build_index(folder, tmp_path / "index", encoder)
    index = SearchIndex.load(tmp_path / "index")
    assert built.documents == len(index) == 4
    assert [d.id for d in index] == ["a.txt:1", "a.txt:2", "faq-1", "sku-9"]
    assert index.get("faq-1").metadata == {"topic": "发票"} and index.get("sku-9").metadata == {"price": 12.5}
    assert index.search("发票怎么开", k=1)[0].id == "faq-1"


def test_a_repeated_id_names_its_file_and_line_and_changes_nothing(encoder, tmp_path):
    out = tmp_path / "index"
    build_index(SAMPLE_FAQ, out, encoder, text_column="question")
    committed = (out / "manifest.json").read_bytes()
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"id": "x", "text": "怎么注册"}\n', encoding="utf-8")
    b.write_text('{"id": "y", "text": "怎么退款"}\n{"id": "x", "text": "怎么开票"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"b\.jsonl line 2: duplicate id 'x'"):
        build_index([a, b], out, encoder)
    assert (out / "manifest.json").read_bytes() == committed
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == ["manifest.json", generation(out).name]
    assert len(SearchIndex.load(out)) == 200


def test_stream_corpus_reads_in_chunks_with_the_rules_of_read_corpus(tmp_path):
    path = tmp_path / "faq.csv"
    path.write_text('id,text,topic\n1,"怎么\n注册",账户\n2,,账户\n3,退款,退款\n', encoding="utf-8")
    chunks = list(stream_corpus(path, chunk_size=1))
    assert [c.ids for c in chunks] == [["1"], ["3"]]
    assert [c.lines for c in chunks] == [[2], [5]]
    assert sum(c.skipped for c in chunks) == 1
    whole = read_corpus(path)
    assert whole.ids == ["1", "3"] and whole.texts == [chunks[0].texts[0], "退款"] and whole.skipped == 1


def test_cli_builds_from_a_folder_with_progress_and_a_summary(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "one.txt").write_text("怎么注册账号\n", encoding="utf-8")
    (folder / "two.txt").write_text("退款多久到账\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["build-index", str(folder), "--out", str(tmp_path / "index")])
    assert result.exit_code == 0, result.output
    assert "encoding: 2" in result.output and "indexing: 2/2 (100 %" in result.output
    assert "indexed 2 documents in" in result.output and "(flat)" in result.output
    result = CliRunner().invoke(main, ["build-index", str(folder), "--out", str(tmp_path / "x"), "--workers", "2"])
    assert result.exit_code == 2 and "--workers applies to a build on Ray" in result.output


# -- Ray: a real local cluster, started here on 127.0.0.1 with 2 CPUs ----------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    """Ray 2.60 turns a loopback node address into the machine's own unless clusters are off,
    which is what RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 says (read when ray is imported, so set
    first); then every Ray process listens on 127.0.0.1 alone (checked below)."""
    if "ray" in sys.modules:
        pytest.fail("ray was imported before the fixture could keep its cluster on 127.0.0.1")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray = pytest.importorskip("ray", reason="the Ray build needs pip install 'siamsearch[ray]' (in the test extras)")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()
    del os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"]


def test_the_test_cluster_listens_on_loopback_only(ray_cluster):
    ray_cluster.get(ray_cluster.remote(lambda: 1).remote())  # a worker is up too
    addresses = listening_addresses(os.getpid())
    assert addresses and addresses <= LOOPBACK, addresses


def in_thread(fn):
    """Start ``fn`` on a thread; returns the thread and the dict that gets its result or error."""
    out: dict = {}

    def target():
        try:
            out["result"] = fn()
        except Exception as e:  # handed to the test
            out["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_ray_build_of_each_architecture_equals_the_one_process_build(ray_cluster, architecture_encoder, corpus_file,
                                                                     tmp_path, name):
    encoder = architecture_encoder(name)
    build_index(corpus_file, tmp_path / "local", encoder, kind="flat", chunk_size=450)
    build_index(corpus_file, tmp_path / "ray", encoder, kind="flat", chunk_size=450,
                engine=make_engine("ray", workers=2))
    assert_same_index(tmp_path / "local", tmp_path / "ray")


def test_ray_build_equals_the_one_process_build(ray_cluster, encoder, corpus_file, tmp_path):
    for kind, params in (("ivf", {"nlist": 8}), ("flat", {})):
        local = build_index(corpus_file, tmp_path / f"local-{kind}", encoder, kind=kind, chunk_size=450, **params)
        remote = build_index(corpus_file, tmp_path / f"ray-{kind}", encoder, kind=kind, chunk_size=450,
                             engine=make_engine("ray", workers=2), **params)
        assert (remote.documents, remote.skipped) == (local.documents, local.skipped) == (2999, 1)
        assert_same_index(tmp_path / f"local-{kind}", tmp_path / f"ray-{kind}")
    index = SearchIndex.load(tmp_path / "ray-ivf")  # an ordinary index folder: every change works on it
    index.upsert(["怎么注销账号"], ids=["new"])
    index.remove(["1", "2"])
    assert index.compact() == 2
    index.save(tmp_path / "ray-ivf")
    assert SearchIndex.load(tmp_path / "ray-ivf").search("怎么注销账号", k=1)[0].id == "new"


def test_ray_sharded_build_equals_the_one_process_sharded_build(ray_cluster, encoder, corpus_file, tmp_path):
    local = build_sharded(corpus_file, tmp_path / "local", encoder, 2, kind="ivf", chunk_size=450, nlist=8)
    remote = build_sharded(corpus_file, tmp_path / "ray", encoder, 2, kind="ivf", chunk_size=450, nlist=8,
                           engine=make_engine("ray", workers=2))
    assert (remote.documents, remote.skipped, remote.per_shard) == (local.documents, local.skipped, local.per_shard)
    assert (local.documents, local.skipped) == (2999, 1)
    for shard in ("shard-000", "shard-001"):
        assert_same_index(tmp_path / "local" / shard, tmp_path / "ray" / shard)
    assert (tmp_path / "local" / QUANTISER_FILE).read_bytes() == (tmp_path / "ray" / QUANTISER_FILE).read_bytes()


def _encoding_actors() -> list[int]:
    """This test cluster's encoding actors: descendants of this process only, so that a build
    running on another Ray cluster of the same machine is never the one killed."""
    found = []
    for pid in descendants(os.getpid()):
        try:
            if b"MapBatches(_Encode)" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


def test_ray_build_survives_a_killed_worker_and_never_shows_a_partial_index(ray_cluster, encoder, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("\n".join(generated(30000, seed=7)) + "\n", encoding="utf-8")
    out = tmp_path / "index"
    build_index(SAMPLE_FAQ, out, encoder, text_column="question")  # the committed generation to protect
    encoded = []
    thread, outcome = in_thread(lambda: build_index(
        big, out, encoder, kind="ivf", nlist=16, chunk_size=300, engine=make_engine("ray", workers=2),
        progress=lambda stage, n, total: encoded.append(n) if stage == "encode" else None))
    deadline = time.monotonic() + 120
    while not encoded and time.monotonic() < deadline:
        time.sleep(0.2)
    actors = _encoding_actors()
    assert encoded and actors, "the build never started encoding"
    os.kill(actors[0], signal.SIGKILL)
    assert len(SearchIndex.load(out)) == 200  # mid-build: the committed generation, never a partial one
    thread.join(300)
    assert not thread.is_alive(), "the build hung after its worker was killed"
    assert "error" not in outcome, f"the build failed instead of retrying: {outcome.get('error')}"
    assert outcome["result"].documents == 30000
    build_index(big, tmp_path / "local", encoder, kind="ivf", nlist=16, chunk_size=300)
    assert_same_index(tmp_path / "local", out)


class _Blocks:
    """Vectors handed out a block at a time, as ``VectorFile.blocks`` does, made on the fly;
    the blocks have the size given here, whatever ``rows`` the engine asks for."""

    def __init__(self, blocks: int, rows: int, dim: int = 64):
        self.rows, self.dim, self._blocks = blocks * rows, dim, blocks

    def blocks(self, rows: int):
        size = self.rows // self._blocks
        for n in range(self._blocks):
            yield n * size, np.random.default_rng(n).random((size, self.dim), dtype=np.float32)


def _shared_memory_mib() -> float:
    """This process's resident shared memory (Ray's object store pages it has touched), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssShmem:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssShmem in /proc/self/status")


def test_ray_assignment_holds_the_blocks_in_flight_not_every_block(ray_cluster):
    """The driver hands each block of vectors to a task; a finished task's reference must go,
    or Ray keeps its block in the object store to rerun it, and the driver's memory grows with
    the corpus (3.94 GiB at 10M documents before this was fixed)."""
    vectors = _Blocks(128, 32768)  # 1 GiB in 8 MiB blocks; at most 5 in flight
    centroids = np.random.default_rng(99).random((32, 64), dtype=np.float32)
    before, peak, done = _shared_memory_mib(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _shared_memory_mib())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    engine = make_engine("ray", workers=2)
    try:
        lists = engine.assign(centroids, vectors)
    finally:
        done.set()
        sampler.join()
        engine.close()
    assert np.array_equal(lists, make_engine("local").assign(centroids, vectors))
    grown = peak[0] - before  # every block held: all of it; since the fix 70-230 MiB were measured (allocator slack)
    assert grown < 512, f"the driver's object store pages grew by {grown:.0f} MiB for 1,024 MiB of vectors"


def test_a_bad_line_read_on_a_ray_worker_is_one_line_and_changes_nothing(ray_cluster, encoder, tmp_path):
    out = tmp_path / "index"
    build_index(SAMPLE_FAQ, out, encoder, text_column="question")
    committed = (out / "manifest.json").read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "怎么注册"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(InputError) as caught:
        build_index(bad, out, encoder, engine=make_engine("ray"))
    assert str(caught.value).startswith(f"{bad} line 2: not valid JSON") and "\n" not in str(caught.value)
    assert (out / "manifest.json").read_bytes() == committed
    assert len(SearchIndex.load(out)) == 200


def test_ray_missing_is_one_line_naming_the_extra(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"
            "from siamsearch.cli import main\n"
            f"main(['build-index', {str(SAMPLE_FAQ)!r}, '--text-column', 'question', '--out', {str(tmp_path / 'i')!r},"
            " '--ray'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == ("Error: building on Ray needs the ray package; install it with "
                                                     "pip install 'siamsearch[ray]'")
    assert not (tmp_path / "i").exists()


def test_a_build_that_fails_leaves_no_new_folder_and_an_old_index_untouched(tmp_path, encoder, corpus_file):
    runner = CliRunner()
    result = runner.invoke(main, ["build-index", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "a" / "idx")])
    assert result.exit_code == 1 and "no such file" in result.output
    assert not (tmp_path / "a").exists()  # neither the folder nor the parent the build would have made
    build_index(corpus_file, tmp_path / "old", encoder, chunk_size=1000)
    before = sorted(p.name for p in (tmp_path / "old").iterdir())
    result = runner.invoke(main, ["build-index", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "old")])
    assert result.exit_code == 1 and sorted(p.name for p in (tmp_path / "old").iterdir()) == before
    assert len(SearchIndex.load(tmp_path / "old")) == 2999
