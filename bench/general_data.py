"""The general model's data, assembled from ../shared/data (research-only: it stays out of the repo).

    python bench/general_data.py [--out bench/.work/general] [--warm-teacher]

Writes, under ``--out``:

``train.tsv``
    Every labelled training pair as sentence1<TAB>sentence2<TAB>0/1: bq/train.tsv; afqmc/train.txt;
    ATEC without its test part; Chinese STS-B train with scores 4-5 → 1 and 0-1 → 0 (2-3 dropped:
    "partly the same" is neither); the labelled Chinese NLI files (CMNLI dev,
    CSNLI dev and test, OCNLI dev) with entailment → 1 and contradiction → 0 (neutral dropped).
    OPPO Xiaobu dev.txt less its held-out part (below).
``valid.tsv``
    bq/dev.tsv: the decision threshold and the epoch kept (BQ's pair accuracy is a target).
``unlabelled.txt``
    Text for distillation beyond the pairs' own sentences: OPPO Xiaobu test_unlabelled.txt,
    CMNLI test_unlabelled and AFQMC test.txt (general-domain and finance text without labels),
    one sentence a line.
``oppo_dev.tsv``, ``oppo_test.tsv``
    OPPO Xiaobu's held-out part: 3,000 pairs drawn with ``numpy.random.default_rng(20261206)``
    from dev.txt's 10,000 (a permutation's first 3,000; the first 1,500 of them, in file order,
    are the dev half that choices are made on, the other 1,500 the test half), kept out of
    everything that trains: open-domain text for "bring your own pairs" (``bench/few_pairs.py``)
    and for the quality tables. The model shipped on 2026-12-02 trained on all of dev.txt, so
    its figures there are not held out.
``afqmc_dev_half.tsv``, ``afqmc_test_half.tsv``
    afqmc/dev.txt split in two by the same kind of seeded permutation (seed 2026): choose on
    the first, report on the second.
``atec_test.tsv``
    ATEC's test part: 5,000 pairs drawn with ``numpy.random.default_rng(2018)`` from
    atec_nlp_sim_train.csv's 39,346 rows (a permutation's first 5,000), kept out of everything
    that trains. ATEC has no official labelled split.

No evaluation file (bq/test, bq/dev's labels apart from validation, afqmc/dev, sts-b dev and test,
PAWS-X, the ATEC test part) contributes a sentence to training.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
ATEC_TEST_SIZE, ATEC_SEED = 5000, 2018
OPPO_HELD_OUT, OPPO_SEED = 3000, 20261206
AFQMC_SEED = 2026
NLI = {"entailment": 1, "contradiction": 0}


def require_data() -> None:
    """Exit with one line unless ../shared/data is beside the project (it is never shipped)."""
    if not DATA.is_dir():
        sys.exit(f"{DATA}: not found; this benchmark needs ../shared/data beside the project")


def _rows(path: Path) -> list[list[str]]:
    text = path.read_text(encoding="utf-8-sig").replace("\ufeff", "")
    return [[f.strip() for f in line.rstrip("\r").split("\t")] for line in text.split("\n") if line.strip()]


def atec_split() -> tuple[list[list[str]], list[list[str]]]:
    """ATEC's (training, test) rows as [s1, s2, label], the test part seeded and fixed."""
    rows = [r[1:4] for r in _rows(DATA / "atec" / "atec_nlp_sim_train.csv")]
    order = np.random.default_rng(ATEC_SEED).permutation(len(rows))
    test = set(order[:ATEC_TEST_SIZE].tolist())
    return [r for i, r in enumerate(rows) if i not in test], [rows[i] for i in sorted(test)]


def oppo_split() -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """OPPO Xiaobu dev.txt as (training rows, held-out dev half, held-out test half), seeded and fixed."""
    rows = _rows(DATA / "oppo_xiaobu" / "dev.txt")
    held = sorted(np.random.default_rng(OPPO_SEED).permutation(len(rows))[:OPPO_HELD_OUT].tolist())
    out = set(held)
    half = OPPO_HELD_OUT // 2
    return [r for i, r in enumerate(rows) if i not in out], [rows[i] for i in held[:half]], \
        [rows[i] for i in held[half:]]


def afqmc_halves() -> tuple[list[list[str]], list[list[str]]]:
    """afqmc/dev.txt as (dev half, test half), by a seeded permutation, each in file order."""
    rows = _rows(DATA / "afqmc" / "dev.txt")
    order = np.random.default_rng(AFQMC_SEED).permutation(len(rows))
    half = len(rows) // 2
    return [rows[i] for i in sorted(order[:half])], [rows[i] for i in sorted(order[half:])]


PARTS = {"afqmc dev half": lambda: afqmc_halves()[0], "afqmc test half": lambda: afqmc_halves()[1],
         "oppo dev half": lambda: oppo_split()[1], "oppo test half": lambda: oppo_split()[2],
         "atec test part": lambda: atec_split()[1]}
"""The seeded held-out parts the benchmarks measure on, by the name their tables give them."""


def read_set(name: str):
    """A held-out part by its name (``PARTS``), or a pair file under ``DATA``, as ``Pairs``."""
    from siamsearch import read_pairs
    from siamsearch.data import Pairs

    if name in PARTS:
        rows = PARTS[name]()
        return Pairs([r[0] for r in rows], [r[1] for r in rows], np.array([float(r[2]) for r in rows], np.float32),
                     name)
    return read_pairs(DATA / name)


def labelled_training_pairs() -> dict[str, list[list[str]]]:
    """Source name → training rows [s1, s2, '0'|'1']."""
    sts = [[a, b, "1" if int(s) >= 4 else "0"] for a, b, s in _rows(DATA / "chinese_sts_b" / "sts-b-train.txt")
           if int(s) >= 4 or int(s) <= 1]
    nli = [[a, b, str(NLI[label])] for name in ("cmnli_dev", "csnli_dev", "csnli_test", "ocnli_dev")
           for a, b, label in _rows(DATA / "cnli" / f"{name}.txt") if label in NLI]
    return {
        "bq/train.tsv": _rows(DATA / "bq" / "train.tsv"),
        "afqmc/train.txt": _rows(DATA / "afqmc" / "train.txt"),
        "atec (without its test part)": atec_split()[0],
        "chinese_sts_b/sts-b-train.txt (4-5 → 1, 0-1 → 0)": sts,
        "oppo_xiaobu/dev.txt (without its held-out part)": oppo_split()[0],
        "cnli labelled files (entailment → 1, contradiction → 0)": nli,
    }


def unlabelled_sentences() -> list[str]:
    files = [DATA / "oppo_xiaobu" / "test_unlabelled.txt", DATA / "cnli" / "cmnli_test_unlabelled.txt",
             DATA / "afqmc" / "test.txt"]
    return list(dict.fromkeys(s for f in files for row in _rows(f) for s in row[:2] if s))


def write(out: Path) -> dict:
    """Write the files of the module docstring; returns their row counts by source."""
    out.mkdir(parents=True, exist_ok=True)
    sources = labelled_training_pairs()
    pairs = [r for rows in sources.values() for r in rows if r[0] and r[1]]
    (out / "train.tsv").write_text("".join("\t".join(r) + "\n" for r in pairs), encoding="utf-8")
    (out / "valid.tsv").write_bytes((DATA / "bq" / "dev.tsv").read_bytes())
    (out / "unlabelled.txt").write_text("".join(s + "\n" for s in unlabelled_sentences()), encoding="utf-8")
    held = {"atec_test.tsv": atec_split()[1], "oppo_dev.tsv": oppo_split()[1], "oppo_test.tsv": oppo_split()[2],
            "afqmc_dev_half.tsv": afqmc_halves()[0], "afqmc_test_half.tsv": afqmc_halves()[1]}
    for name, rows in held.items():
        (out / name).write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return {name: len(rows) for name, rows in sources.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / ".work" / "general")
    parser.add_argument("--warm-teacher", action="store_true",
                        help="Compute and cache the teacher's vectors of every training sentence.")
    args = parser.parse_args()
    require_data()
    counts = write(args.out)
    for name, n in counts.items():
        print(f"{n:>8,}  {name}")
    if args.warm_teacher:
        from siamsearch.data import read_pairs
        from siamsearch.teacher import TeacherCache, load_teacher

        pairs = read_pairs(args.out / "train.tsv")
        texts = list(dict.fromkeys(pairs.left + pairs.right
                                   + [r[0] for r in _rows(args.out / "unlabelled.txt")]))
        cache, started = TeacherCache(load_teacher("use-m3")), time.perf_counter()
        done = 0

        def progress(n: int) -> None:
            nonlocal done
            done += n
            if done % 10240 < n:
                print(f"  teacher: {done:,} sentences, {done / (time.perf_counter() - started):,.0f}/s", flush=True)

        cache.vectors(texts, progress)
        seconds = time.perf_counter() - started
        print(f"teacher vectors of {len(texts):,} sentences ({cache.computed:,} new) in {seconds:.0f} s")


if __name__ == "__main__":
    main()
