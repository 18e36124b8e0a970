"""Hybrid search against its parts: retrieval quality on five sets, and latency and memory at 1M.

    python bench/hybrid.py                      # both parts; writes docs/benchmarks.md
    python bench/hybrid.py --part quality --no-write
    python bench/hybrid.py --render

Quality (the retrieval task of ``siamsearch.evaluation``, no distractors; MRR@10 and
recall@10), every system on the same queries, in one run:

* **dense**: the shipped default model's ``SearchIndex`` (FAISS candidates, exact re-rank);
* **BM25**: ``mode="lexical"``, the index's own BM25 over character terms (equal to
  ``evaluate --baselines``' bm25s figure, which tests/test_hybrid.py checks);
* **teacher**: ``use-m3`` zero-shot, exact cosine;
* **hybrid rrf**: ``mode="hybrid"`` with reciprocal rank fusion (k = 60), nothing fitted;
* **hybrid fitted (own dev)**: the fusion ``fit_fusion`` picks on the set's own dev split;
* **hybrid fitted (all dev)**: one fusion picked on the five dev splits pooled: what a
  general model would record.

Sets (test side / the dev side fusions are fitted on): bq test / bq dev; AFQMC's seeded test
half / its dev half (``bench/general_data.py``; the issue's "AFQMC dev" less the half fitted
on); PAWS-X test_2k / dev_2k; Chinese STS-B test / dev, a pair scored 3 or more counting as
a match (``bench/calibration.py``'s rule); OPPO Xiaobu's held-out test half / dev half.

Scale: ``corpus.py``'s 1M documents built once with ``build_index`` (kind auto), opened
memory-mapped; 1,000 queries one at a time, dense, lexical and hybrid alternating query by
query (p50, p99); the lexical files' bytes beside FAISS's; the process's resident memory
after each mode's queries; and the lexical top-10's recall against an exhaustive BM25
(bm25s over the same terms) on 200 queries, what ``lexical.HEAD`` costs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from general_data import require_data  # noqa: E402
from report import RESULTS, add_output_options, provenance, publish, render  # noqa: E402

SCALE_QUERIES, RECALL_QUERIES = 1000, 200


def sets() -> dict[str, tuple]:
    """name → (test pairs, dev pairs), with 0/1 labels (STS-B: ``calibration.read``'s rule)."""
    from calibration import read

    return {
        "bq test": (read("bq/test.tsv"), read("bq/dev.tsv")),
        "AFQMC test half": (read("afqmc test half"), read("afqmc dev half")),
        "PAWS-X test": (read("pawsx_zh/test_2k.tsv"), read("pawsx_zh/dev_2k.tsv")),
        "STS-B test (≥ 3)": (read("chinese_sts_b/sts-b-test.txt"), read("chinese_sts_b/sts-b-dev.txt")),
        "OPPO held-out test": (read("oppo test half"), read("oppo dev half")),
    }


def pooled(pairs: list):
    from siamsearch.data import Pairs

    return Pairs([s for p in pairs for s in p.left], [s for p in pairs for s in p.right],
                 np.concatenate([p.labels for p in pairs]), "all dev splits")


def quality() -> dict:
    from siamsearch import Encoder
    from siamsearch.baselines import TeacherRetriever
    from siamsearch.evaluation import EncoderRetriever, RetrievalEvaluator
    from siamsearch.fusion import Reciprocal
    from siamsearch.fusion_fit import fit_fusion
    from siamsearch.metrics import RetrievalTask

    encoder = Encoder.load()
    found = sets()
    started = time.perf_counter()
    general, general_report = fit_fusion(encoder, pooled([dev for _, dev in found.values()]))
    print(f"fusion fitted on all dev splits: {general.label} ({general_report['queries']} queries)", flush=True)
    teacher = TeacherRetriever()
    rows = []
    for name, (test, dev) in found.items():
        own, own_report = fit_fusion(encoder, dev)
        task = RetrievalTask.from_pairs(test)
        evaluate = RetrievalEvaluator(task)
        dense = EncoderRetriever(encoder, "dense")
        systems = {"dense": dense, "BM25": dense.sharing("BM25", "lexical"), "teacher": teacher,
                   "hybrid rrf": dense.sharing("hybrid rrf", "hybrid", Reciprocal()),
                   "hybrid fitted (own dev)": dense.sharing("own", "hybrid", own),
                   "hybrid fitted (all dev)": dense.sharing("all", "hybrid", general)}
        measured = {label: evaluate(system) for label, system in systems.items()}
        row = {"set": name, "queries": len(task.queries), "corpus": len(task.corpus), "own_fusion": own.label,
               "own_fit": own_report, **{label: {m: r[m] for m in ("mrr@10", "recall@10", "ms_per_query")}
                                         for label, r in measured.items()}}
        rows.append(row)
        print(f"{name}: " + ", ".join(f"{label} {r['mrr@10']:.3f}" for label, r in measured.items())
              + f" (own fusion {own.label})", flush=True)
    return {"sets": rows, "general_fusion": general.label, "general_fit": general_report,
            "seconds": time.perf_counter() - started}


def scale(size: int) -> dict:
    import bm25s
    from corpus import real_sentences
    from scale import corpus_file
    from search import peak_rss, percentiles, queries

    from siamsearch import Encoder, SearchIndex
    from siamsearch.build import build_index
    from siamsearch.index_folder import INDEX_FORMAT_VERSION, MANIFEST
    from siamsearch.lexical import FORWARD_FILES, LEXICAL_FILES, terms

    path = corpus_file(size)
    out = HERE / ".work" / "hybrid" / f"index-{size}"
    encoder = Encoder.load()
    build_seconds = None  # None: the folder an earlier run built is reused
    if (out / MANIFEST).exists() and \
            json.loads((out / MANIFEST).read_text(encoding="utf-8"))["format_version"] != INDEX_FORMAT_VERSION:
        shutil.rmtree(out)  # written by an older siamsearch: measure what this one writes
    if not (out / MANIFEST).exists():
        started = time.perf_counter()
        build_index(path, out, encoder)
        build_seconds = time.perf_counter() - started
    index = SearchIndex.load(out, mmap=True)
    generation = out / f"gen-{index.generation:06d}"
    qs = queries(real_sentences())[:SCALE_QUERIES]
    for mode in ("dense", "lexical", "hybrid"):  # warm: the first queries page the files in
        for q in qs[:20]:
            index.search(q, 10, mode=mode)
    seconds: dict[str, list[float]] = {"dense": [], "lexical": [], "hybrid": []}
    memory = {}
    for mode in seconds:  # resident memory once each mode has paged in what it reads
        for q in qs[:200]:
            index.search(q, 10, mode=mode)
        memory[mode] = peak_rss("VmRSS")
    for q in qs:
        for mode, taken in seconds.items():
            t = time.perf_counter()
            index.search(q, 10, mode=mode)
            taken.append(time.perf_counter() - t)
    texts = path.read_text(encoding="utf-8").splitlines()[:size]
    reference = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    reference.index([terms(t) for t in texts], show_progress=False)
    recall = []
    for q in qs[:RECALL_QUERIES]:
        scores = reference.get_scores(list(dict.fromkeys(terms(q))))
        best = set(np.argsort(-scores, kind="stable")[:10].tolist())
        got = {int(h.id) - 1 for h in index.search(q, 10, mode="lexical")}  # ids are line numbers from 1
        recall.append(len(best & got) / max(1, len(best)))
    size_of = {name: (generation / name).stat().st_size
               for name in ("index.faiss", "vectors.npy", *LEXICAL_FILES, *FORWARD_FILES)}
    return {"size": size, "kind": index.spec.to_dict(), "build_seconds": build_seconds,
            **{mode: percentiles(taken) for mode, taken in seconds.items()},
            "rss_after": memory, "bytes": size_of, "lexical_recall@10": float(np.mean(recall))}


def _ran(p: dict) -> str:
    return f"`{p['command']}` on {p['date']}, {p['cpu']}; {p['machine']}; commit {p['commit']}."


def markdown(r: dict) -> str:
    lines = ["<!-- hybrid-benchmarks:start (written by bench/hybrid.py; do not edit by hand) -->",
             "## Hybrid search: keyword and learned similarity fused (issue 35)", ""]
    if "quality" in r:
        q = r["quality"]
        lines += [_ran(q["provenance"]), ""]
        systems = ["dense", "BM25", "teacher", "hybrid rrf", "hybrid fitted (own dev)", "hybrid fitted (all dev)"]
        lines += ["MRR@10 (recall@10 in brackets), shipped default model, the test side of each set; the best of "
                  "dense, BM25 and the teacher, and hybrid's ratio to it (the target: ≥ 1.05):", "",
                  "| set | queries | " + " | ".join(systems) + " | best single | hybrid / best |",
                  "|---|---:|" + "---:|" * len(systems) + "---|---:|"]
        for row in q["sets"]:
            single = max(("dense", "BM25", "teacher"), key=lambda s: row[s]["mrr@10"])
            hybrid = max(("hybrid rrf", "hybrid fitted (own dev)", "hybrid fitted (all dev)"),
                         key=lambda s: row[s]["mrr@10"])
            lines.append(f"| {row['set']} | {row['queries']:,} | " + " | ".join(
                f"{row[s]['mrr@10']:.3f} ({row[s]['recall@10']:.3f})" for s in systems)
                + f" | {single} | {row['hybrid fitted (all dev)']['mrr@10'] / row[single]['mrr@10']:.3f} "
                  f"(best hybrid, {hybrid}: {row[hybrid]['mrr@10'] / row[single]['mrr@10']:.3f}) |")
        lines += ["", f"Fusions fitted (`siamsearch.fusion_fit`, MRR@10 on up to {q['general_fit']['queries']:,} dev "
                      f"queries): all dev splits pooled → **{q['general_fusion']}**; own dev: "
                  + ", ".join(f"{row['set']} {row['own_fusion']}" for row in q["sets"]) + f". {q['seconds']:.0f} s.",
                  ""]
    if "scale" in r:
        s = r["scale"]
        b = s["bytes"]
        lines += [_ran(s["provenance"]), ""]
        lexical = sum(v for k, v in b.items() if k.startswith("lexical_"))
        built = (f"built in {s['build_seconds']:.0f} s" if s["build_seconds"] is not None
                 else "built by an earlier run")
        lines += [f"At {s['size']:,} documents (`corpus.py`, kind {s['kind']['kind']}, "
                  f"{built}, opened memory-mapped), {SCALE_QUERIES:,} queries, the modes "
                  "alternating query by query:", "",
                  "| mode | p50 ms | p99 ms | p50 × dense | resident memory after its queries |",
                  "|---|---:|---:|---:|---:|"]
        for mode in ("dense", "lexical", "hybrid"):
            lines.append(f"| {mode} | {s[mode]['p50_ms']:.2f} | {s[mode]['p99_ms']:.2f} | "
                         f"{s[mode]['p50_ms'] / s['dense']['p50_ms']:.2f} | {s['rss_after'][mode] / 2**20:,.0f} MiB |")
        lines += ["", f"On disk: lexical files {lexical / 2**20:,.0f} MiB against index.faiss "
                      f"{b['index.faiss'] / 2**20:,.0f} MiB ({lexical / b['index.faiss']:.2f}×; with vectors.npy "
                      f"{(b['index.faiss'] + b['vectors.npy']) / 2**20:,.0f} MiB). Lexical top-10 recall against "
                      f"an exhaustive BM25: {s['lexical_recall@10']:.3f} on {RECALL_QUERIES} queries.", ""]
    return "\n".join([*lines, "<!-- hybrid-benchmarks:end -->", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["quality", "scale", "both"], default="both")
    parser.add_argument("--size", type=int, default=1_000_000)
    add_output_options(parser, "hybrid")
    args = parser.parse_args()
    if args.render:
        render("hybrid", markdown)
        return
    require_data()
    saved = RESULTS / "hybrid.json"  # a part run alone keeps the other part's last results
    results = json.loads(saved.read_text(encoding="utf-8")) if args.part != "both" and saved.exists() else {}
    if args.part in ("quality", "both"):
        results["quality"] = {"provenance": provenance(), **quality()}
    if args.part in ("scale", "both"):
        results["scale"] = {"provenance": provenance(), **scale(args.size)}
    publish("hybrid", results, markdown, not args.no_write)
    print(markdown(results))


if __name__ == "__main__":
    main()
