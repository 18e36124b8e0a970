"""Crash safety (kill -9 at random moments) and concurrent readers, against a real writer process."""

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from siamsearch import SearchIndex
from siamsearch.fusion import MODES

WRITER = Path(__file__).with_name("index_writer.py")
QUERIES = ["退款多久", "发票", "会员积分", "快递"]
TRIALS = 30


@pytest.fixture(scope="module")
def base_index(sample_encoder, sample_faq, tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "idx"
    SearchIndex.build(sample_faq.texts[:40], sample_encoder, ids=sample_faq.ids[:40]).save(path)
    return path


def read_log(path: Path) -> list[dict]:
    records = []
    for line in path.read_bytes().split(b"\n"):
        try:
            records.append(json.loads(line.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError):  # a line still being written, or cut by the kill
            break
    return records


def docs_of(index: SearchIndex) -> dict[str, str]:
    return {d.id: d.text for d in index}


def answers_match_a_fresh_build(index: SearchIndex, state: dict[str, str]) -> bool:
    """In every mode: the FAISS side and the lexical side both hold exactly the committed documents."""
    ids = sorted(state)
    fresh = SearchIndex.build([state[i] for i in ids], index.encoder, ids=ids, kind="flat")
    return all(index.search_batch(QUERIES, 5, mode=mode) == fresh.search_batch(QUERIES, 5, mode=mode)
               for mode in MODES)


def wait_until_ready(log: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and any(r.get("ready") for r in read_log(log)):
            return
        assert proc.poll() is None, f"writer exited early: {proc.stderr.read()}"
        time.sleep(0.05)
    raise TimeoutError("writer did not start")


def test_kill_9_at_random_moments_leaves_the_last_committed_state(base_index, tmp_path):
    rng = random.Random(20261124)
    outcomes = {"committed": 0, "pending": 0}
    killed_during_save = 0
    for trial in range(TRIALS):
        path, log = tmp_path / f"t{trial}", tmp_path / f"t{trial}.log"
        shutil.copytree(base_index, path)
        proc = subprocess.Popen([sys.executable, str(WRITER), str(path), str(log), str(trial), "1000"],
                                stderr=subprocess.PIPE, text=True)
        try:
            wait_until_ready(log, proc)
            time.sleep(rng.uniform(0, 1.5))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        records = read_log(log)
        last = max(i for i, r in enumerate(records) if "committed" in r)
        committed = records[last]["committed"]
        pending = next((r["pending"] for r in records[last + 1 :] if "pending" in r), None)
        killed_during_save += pending is not None

        index = SearchIndex.load(path)  # opens without error after any kill
        docs = docs_of(index)
        assert docs == committed or docs == pending, f"trial {trial}: state is neither committed nor pending"
        outcomes["committed" if docs == committed else "pending"] += 1
        assert answers_match_a_fresh_build(index, docs), f"trial {trial}: answers differ from a fresh build"
        index.add(["崩溃之后还能继续写入"])  # the lock died with the writer: the next writer can commit
        index.save(path)
        assert len(SearchIndex.load(path)) == len(docs) + 1
    assert sum(outcomes.values()) == TRIALS
    print(f"\n{TRIALS} kills: {killed_during_save} during a save; index found at the last committed state "
          f"{outcomes['committed']} times, at the state being saved {outcomes['pending']} times")


def test_readers_see_only_committed_states_while_a_writer_works(base_index, tmp_path):
    path, log = tmp_path / "idx", tmp_path / "w.log"
    shutil.copytree(base_index, path)
    proc = subprocess.Popen([sys.executable, str(WRITER), str(path), str(log), "7", "150"],
                            stderr=subprocess.PIPE, text=True)
    encoder = SearchIndex.load(base_index).encoder
    seen: dict[int, dict[str, str]] = {}
    loads = 0
    try:
        wait_until_ready(log, proc)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            # must never fail, whatever the writer is doing; every other load brings its own encoder
            index = SearchIndex.load(path, encoder if loads % 2 else None)
            index.search_batch(QUERIES, 5)
            seen.setdefault(index.generation, docs_of(index))
            loads += 1
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read()
    committed = {r["generation"]: r["committed"] for r in read_log(log) if "committed" in r}
    assert loads >= 20 and len(seen) >= 10, (loads, len(seen))
    for generation, docs in seen.items():
        assert docs == committed[generation], f"generation {generation} was seen in a state never committed"
