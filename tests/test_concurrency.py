"""What a service and a cluster need: many threads on one index while another process commits,
generations seen and reloaded, an encoder handed to another process, and modules that can be
imported without side effects and without import circles."""

import ast
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest

from siamsearch import Encoder, SearchIndex
from siamsearch.errors import InputError
from siamsearch.kinds import KINDS
from siamsearch.system import available_cpus

WRITER = Path(__file__).with_name("index_writer.py")
PACKAGE = Path(__file__).resolve().parents[1] / "siamsearch"
CHARS = "退款运费发票会员积分快递订单密码账号客服优惠券取消修改地址支付失败怎么多久能吗"
THREADS, QUERIES_PER_THREAD = 8, 500


def read_log(path: Path) -> list[dict]:
    records = []
    for line in path.read_bytes().split(b"\n"):
        try:
            records.append(json.loads(line.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError):
            break
    return records


def commits_in(log: Path) -> int:
    return sum("committed" in r and not r.get("ready") for r in read_log(log)) if log.exists() else 0


@pytest.fixture(scope="module")
def saved(sample_encoder, sample_faq, tmp_path_factory):
    """The sample FAQ saved once per kind (IVF with 4 of 8 lists probed: approximate, as in use)."""
    root = tmp_path_factory.mktemp("kinds")
    params = {"ivf": {"nlist": 8, "nprobe": 4}}
    for name in KINDS:
        SearchIndex.build(sample_faq.texts, sample_encoder, ids=sample_faq.ids, metadata=sample_faq.metadata,
                          kind=name, **params.get(name, {})).save(root / name)
    return root


@pytest.mark.parametrize("name", list(KINDS))
def test_eight_threads_get_exactly_the_sequential_results_while_another_process_commits(saved, tmp_path, name):
    path, log = tmp_path / "idx", tmp_path / "w.log"
    shutil.copytree(saved / name, path)
    rng = random.Random(5)
    queries = ["".join(rng.choice(CHARS) for _ in range(rng.randint(2, 14))) for _ in range(QUERIES_PER_THREAD)]
    index = SearchIndex.load(path, mmap=True)  # as a server would open it
    expected = [index.search(q, 5) for q in queries]
    loaded_generation = index.generation

    proc = subprocess.Popen([sys.executable, str(WRITER), str(path), str(log), "11", "10000"],
                            stderr=subprocess.PIPE, text=True)
    results: dict[int, list] = {}
    errors: list[BaseException] = []
    try:
        deadline = time.monotonic() + 60
        while commits_in(log) < 1:  # the threads start once the other process commits
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(0.02)
        start = threading.Barrier(THREADS)

        def worker(n: int) -> None:
            try:
                order = list(range(len(queries)))
                random.Random(n).shuffle(order)
                start.wait()
                got = {}
                for i in order[: len(order) // 2]:
                    got[i] = index.search(queries[i], 5)
                rest = order[len(order) // 2 :]
                for i, hits in zip(rest, index.search_batch([queries[i] for i in rest], 5)):
                    got[i] = hits
                results[n] = [got[i] for i in range(len(queries))]
            except BaseException as e:  # reported below, not lost in the thread
                errors.append(e)

        first = commits_in(log)
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        during = commits_in(log) - first
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert not errors, errors[0]
    assert sorted(results) == list(range(THREADS))
    for n in range(THREADS):
        assert results[n] == expected, f"thread {n} saw other results than a sequential run"
    assert during >= 1, "the other process committed nothing while the threads searched"
    assert index.generation == loaded_generation and index.is_stale()


def test_generations_are_seen_and_reloaded(saved, tmp_path):
    path = tmp_path / "idx"
    shutil.copytree(saved / "flat", path)
    reader, writer = SearchIndex.load(path, mmap=True), SearchIndex.load(path)
    assert not reader.is_stale() and reader.path == path.resolve()
    writer.add(["新加的问题：怎么修改绑定手机号"], ["new"])
    writer.save(path)
    assert reader.is_stale() and reader.get("new") is None and len(reader) == 200
    fresh = reader.reload(mmap=True)
    assert fresh.generation == writer.generation > reader.generation and not fresh.is_stale()
    assert fresh.get("new").text == "新加的问题：怎么修改绑定手机号" and len(fresh) == 201
    assert [d.id for d in fresh] == [d.id for d in writer] and len(list(fresh)) == 201
    assert reader.search("退款", 3) == SearchIndex.load(saved / "flat").search("退款", 3)  # the old one still answers


def test_an_unsaved_index_is_never_stale_and_cannot_reload(sample_encoder):
    index = SearchIndex.build(["怎么退款", "发票"], sample_encoder)
    assert index.generation is None and not index.is_stale()
    with pytest.raises(InputError, match="never saved or loaded"):
        index.reload()


def test_iterating_documents_reads_them_in_pages(sample_encoder):
    from siamsearch.documents import PAGE

    texts = [f"问题{n}" for n in range(PAGE * 2 + 7)]
    index = SearchIndex.build(texts, sample_encoder, metadata=[{"n": n} for n in range(len(texts))])
    documents = list(index)
    assert [d.text for d in documents] == texts and [d.metadata["n"] for d in documents] == list(range(len(texts)))
    assert [d.id for d in documents] == [str(n) for n in range(len(texts))]


def _encode_elsewhere(encoder: Encoder, texts: list[str]) -> np.ndarray:
    return encoder.encode(texts)


def test_the_encoder_pickles_and_encodes_the_same_in_another_process(sample_encoder, sample_faq):
    copy = pickle.loads(pickle.dumps(sample_encoder))
    assert copy.fingerprint == sample_encoder.fingerprint and copy.threshold == sample_encoder.threshold
    texts = sample_faq.texts[:50]
    assert np.array_equal(copy.encode(texts), sample_encoder.encode(texts))
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:  # a fresh interpreter, as a Ray actor
        assert np.array_equal(pool.submit(_encode_elsewhere, sample_encoder, texts).result(timeout=120),
                              sample_encoder.encode(texts))


def test_encoding_threads_default_to_the_cpus_this_process_may_use(sample_encoder, sample_faq):
    if hasattr(os, "sched_getaffinity"):
        assert available_cpus() == len(os.sched_getaffinity(0))
    texts = sample_faq.texts
    assert np.array_equal(sample_encoder.encode(texts, threads=1), sample_encoder.encode(texts))


def _imports(path: Path) -> set[str]:
    """The package modules a module imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("siamsearch."):
            found.add(node.module.split(".")[1])
    return found


def test_no_import_circle_in_the_package():
    modules = {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert "search" in modules and "training" in modules
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(modules.get(name, ())):
            if other not in modules:
                continue
            assert state.get(other) != 1, "import circle: " + " → ".join([*path, name, other])
            if other not in state:
                visit(other, [*path, name])
        state[name] = 2

    for name in sorted(modules):
        if name not in state:
            visit(name, [])


def test_importing_any_module_changes_nothing_outside_it():
    """Environment, fd 2 and TensorFlow's threads are untouched by importing siamsearch's modules;
    training's start (``keras_runtime.load``) is what sets them. The query path and training's
    settings load no TensorFlow at all. (TensorFlow's own import sets environment variables of
    its own, such as TF2_BEHAVIOR, so the Keras modules are compared with it imported first.)"""
    code = r"""
import importlib, json, os, pkgutil, sys
import siamsearch
env, fd2 = dict(os.environ), os.fstat(2)
light = ["search", "training", "evaluation", "demo", "cli", "index_folder", "kinds", "query", "mutations"]
for name in light:
    importlib.import_module("siamsearch." + name)
light_clean = "tensorflow" not in sys.modules and dict(os.environ) == env
import keras, tensorflow as tf
env = dict(os.environ)
for info in pkgutil.iter_modules(siamsearch.__path__):
    if info.name != "__main__":  # that one runs the command
        importlib.import_module("siamsearch." + info.name)
after = os.fstat(2)
pools = tf.config.threading
threads = (pools.get_inter_op_parallelism_threads(), pools.get_intra_op_parallelism_threads())
env_same = dict(os.environ) == env
from siamsearch.keras_runtime import load
load()
print(json.dumps({"light_clean": light_clean, "env_same": env_same,
                  "fd2_same": (after.st_dev, after.st_ino) == (fd2.st_dev, fd2.st_ino), "threads": threads,
                  "threads_after_load": tf.config.threading.get_intra_op_parallelism_threads()}))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"light_clean": True, "env_same": True, "fd2_same": True, "threads": [0, 0],
                    "threads_after_load": 1}
