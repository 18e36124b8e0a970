"""Quality outside BQ: models against the pretrained teacher and keyword baselines, in one run.

    python bench/quality.py --model general=siamsearch/models/default --model bq=bench/.work/general/models/bq
    python bench/quality.py --split dev --model g1=bench/.work/general/models/g1 --no-write   # to choose
    python bench/quality.py --render

Figures (the C-MTEB / text2vec protocol; every system on the same pairs):

* Spearman ×100 between each pair's score and its gold label, over all pairs of a file:
  bq/test, chinese_sts_b/sts-b-test (graded 0-5), afqmc/dev, pawsx_zh/test_2k and ATEC's
  5,000-pair test part (``bench/general_data.py``; seed 2018). With ``--split dev``: bq/dev,
  sts-b-dev, pawsx dev_2k, the AFQMC dev half and the OPPO dev half (what choices are made on;
  the model shipped on 2026-12-02 trained on all of OPPO's dev.txt, so its OPPO figure is not held out).
* BQ test pair accuracy at each model's own threshold.
* Retrieval MRR@10 of ``siamsearch evaluate --retrieval`` (no distractors) on BQ test, AFQMC dev and
  PAWS-X test: the model's SearchIndex, the teacher (exact cosine) and character BM25.
* Speed, side by side in this process: encoding sentences/s of each model and of the teacher
  (uncached) on the same sentences; and the query path (``SearchIndex.search``, one query at a
  time, the models alternating query by query) as a ratio to the first model's median.

Systems: each ``--model NAME=DIR``; ``use-m3`` zero-shot (cosine); character BM25 (pairs: the
mean of both directions' scores); character uni+bigram Jaccard (pairs only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from general_data import read_set, require_data  # noqa: E402
from report import add_output_options, provenance, publish, render  # noqa: E402

SPEARMAN_FILES = {"test": ["bq/test.tsv", "chinese_sts_b/sts-b-test.txt", "afqmc/dev.txt", "pawsx_zh/test_2k.tsv",
                           "atec test part"],
                  "dev": ["bq/dev.tsv", "chinese_sts_b/sts-b-dev.txt", "pawsx_zh/dev_2k.tsv", "afqmc dev half",
                          "oppo dev half"]}
RETRIEVAL_FILES = {"test": ["bq/test.tsv", "afqmc/dev.txt", "pawsx_zh/test_2k.tsv"],
                   "dev": ["bq/dev.tsv", "pawsx_zh/dev_2k.tsv", "afqmc dev half"]}
ACCURACY_FILE = {"test": "bq/test.tsv", "dev": "bq/dev.tsv"}
SPEED_SENTENCES, SPEED_QUERIES = 4000, 400
TEXT2VEC = {"bq/test.tsv": 42.67, "chinese_sts_b/sts-b-test.txt": 79.30, "afqmc/dev.txt": 26.06,
            "pawsx_zh/test_2k.tsv": 17.21, "atec test part": 31.93}
"""text2vec-base-chinese's published Spearman ×100 (ATEC: on its own test split), the issue's anchor."""


def read(name: str):
    return read_set(name)


class Jaccard:
    name = "char Jaccard"

    def pair_scores(self, left, right) -> np.ndarray:
        from siamsearch.lexical import terms

        def score(a, b):
            x, y = set(terms(a)), set(terms(b))
            return len(x & y) / max(1, len(x | y))

        return np.array([score(a, b) for a, b in zip(left, right)])


def spearman_table(models: dict, split: str, baselines: list) -> dict:
    from siamsearch.evaluation import PairEvaluator

    table = {}
    for name in SPEARMAN_FILES[split]:
        evaluator = PairEvaluator(read(name))
        row = {m: evaluator(encoder)["spearman"] for m, encoder in models.items()}
        row.update({b.name: evaluator.baseline(b)["spearman"] for b in baselines})
        table[name] = row
        print(f"  spearman {name}: " + ", ".join(f"{k} {v * 100:.1f}" for k, v in row.items()), flush=True)
    return table


def retrieval_table(models: dict, split: str, baselines: list) -> dict:
    from siamsearch.evaluation import EncoderRetriever, RetrievalEvaluator
    from siamsearch.metrics import RetrievalTask

    table = {}
    for name in RETRIEVAL_FILES[split]:
        evaluate = RetrievalEvaluator(RetrievalTask.from_pairs(read(name)))
        row = {m: evaluate(EncoderRetriever(encoder, name=m))["mrr@10"] for m, encoder in models.items()}
        row.update({b.name: evaluate(b)["mrr@10"] for b in baselines})
        table[name] = row
        print(f"  mrr@10 {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    return table


def speed(models: dict, split: str) -> dict:
    """Encoding sentences/s (models and the uncached teacher, same sentences) and query-path
    median latency ratios, measured side by side in this process, on the split's STS-B and BQ files."""
    from siamsearch import SearchIndex
    from siamsearch.teacher import load_teacher

    pairs = read(SPEARMAN_FILES[split][1])
    bq = read(ACCURACY_FILE[split])
    sentences = list(dict.fromkeys(pairs.left + pairs.right + bq.left + bq.right))[:SPEED_SENTENCES]
    rates = {}
    teacher = load_teacher("use-m3")
    teacher.encode(sentences[:64])  # loads its weights
    for name, encode in [*((m, e.encode) for m, e in models.items()), ("use-m3", teacher.encode)]:
        started = time.perf_counter()
        encode(sentences)
        rates[name] = len(sentences) / (time.perf_counter() - started)
    corpus = list(dict.fromkeys(bq.left + bq.right))
    indexes = {m: SearchIndex.build(corpus, e) for m, e in models.items()}
    queries = corpus[:SPEED_QUERIES]
    seconds = {m: [] for m in models}
    for q in queries:
        for m, index in indexes.items():
            started = time.perf_counter()
            index.search(q, 10)
            seconds[m].append(time.perf_counter() - started)
    first = next(iter(models))
    medians = {m: float(np.median(s)) for m, s in seconds.items()}
    return {"sentences": len(sentences), "encode_per_second": rates,
            "query_median_ms": {m: 1000 * v for m, v in medians.items()},
            "query_ratio_to": first, "query_ratio": {m: v / medians[first] for m, v in medians.items()},
            "queries": len(queries), "corpus": len(corpus)}


def markdown(r: dict) -> str:
    models, split = r["models"], r["split"]
    systems = list(next(iter(r["spearman"].values())))
    out = ["<!-- quality-benchmarks:start (written by bench/quality.py; do not edit by hand) -->",
           f"## Quality outside BQ: Spearman, retrieval and speed against the teacher and keyword search ({split})",
           "", f"`{r['command']}` on {r['date']}, {r['cpu']}; {r['machine']}; commit {r['commit']}.", "",
           "Models: " + "; ".join(f"**{m}** = `{d}`" for m, d in models.items()) + ".", "",
           "### Spearman ×100 (pair score against the gold label, every pair of the file)", "",
           "| file | " + " | ".join(systems) + (" | text2vec-base-chinese (published) |" if split == "test" else " |"),
           "|---|" + "---:|" * (len(systems) + (split == "test"))]
    for f, row in r["spearman"].items():
        cells = ["—" if row[s] is None else f"{100 * row[s]:.1f}" for s in systems]
        out.append(f"| {f} | " + " | ".join(cells) + (f" | {TEXT2VEC[f]:.2f} |" if split == "test" else " |"))
    out += ["", f"Pair accuracy on {r['accuracy_file']} at each model's threshold: "
            + ", ".join(f"{m} {a:.4f}" for m, a in r["accuracy"].items()) + ".", "",
            "### Retrieval MRR@10 (`siamsearch evaluate --retrieval`, no distractors)", ""]
    rsystems = list(next(iter(r["retrieval"].values())))
    out += ["| file | " + " | ".join(rsystems) + " |", "|---|" + "---:|" * len(rsystems)]
    for f, row in r["retrieval"].items():
        out.append(f"| {f} | " + " | ".join(f"{row[s]:.3f}" for s in rsystems) + " |")
    s = r["speed"]
    out += ["", f"### Speed, side by side in one process ({s['sentences']:,} sentences; {s['queries']} queries "
            f"over {s['corpus']:,} documents)", "", "| system | encode sentences/s | × teacher | query median ms | "
            f"query × {s['query_ratio_to']} |", "|---|---:|---:|---:|---:|"]
    teacher = s["encode_per_second"]["use-m3"]
    for m, rate in s["encode_per_second"].items():
        q = (f"{s['query_median_ms'][m]:.3f} | {s['query_ratio'][m]:.2f}" if m in s["query_median_ms"] else "— | —")
        out.append(f"| {m} | {rate:,.0f} | {rate / teacher:.1f} | {q} |")
    out += ["", "<!-- quality-benchmarks:end -->", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", default=[], help="NAME=DIR; repeatable")
    parser.add_argument("--split", choices=["test", "dev"], default="test")
    add_output_options(parser, "quality")
    args = parser.parse_args()
    if args.render:
        return render("quality", markdown)
    require_data()
    from siamsearch import Encoder
    from siamsearch.baselines import BM25Retriever, TeacherRetriever
    from siamsearch.evaluation import PairEvaluator

    started = time.perf_counter()
    paths = dict(m.split("=", 1) for m in args.model) or {"default": "siamsearch/models/default"}
    models = {m: Encoder.load(d) for m, d in paths.items()}
    pair_baselines = [TeacherRetriever("use-m3"), BM25Retriever(), Jaccard()]
    results = {
        "split": args.split, "models": paths, **provenance(),
        "spearman": spearman_table(models, args.split, pair_baselines),
        "accuracy": {m: PairEvaluator(read(ACCURACY_FILE[args.split]))(e)["accuracy"] for m, e in models.items()},
        "accuracy_file": ACCURACY_FILE[args.split],
        "retrieval": retrieval_table(models, args.split, [TeacherRetriever("use-m3"), BM25Retriever()]),
        "speed": speed(models, args.split),
    }
    results["seconds"] = round(time.perf_counter() - started, 1)
    publish("quality" if args.split == "test" else "quality_dev", results, markdown,
            write=not args.no_write and args.split == "test")
    print(markdown(results))
    print(f"quality benchmark: {len(models)} model(s), {args.split} split, {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
