"""Retrieval quality by training objective, beside character BM25 and TF-IDF.

    python bench/retrieval.py    # train bce, contrastive, both, margin on BQ train; evaluate; write docs
    python bench/retrieval.py --model both=models/y  # use this model for 'both', train the others
    python bench/retrieval.py --render              # rewrite docs/ from bench/results/retrieval.json

Models are trained on ../shared/data/bq/train.tsv with bq/dev.tsv as validation (the
threshold and the epoch kept are chosen there) and are then measured once on:

* pair classification: bq/test.tsv at the model's threshold;
* retrieval (the task of ``siamsearch.evaluation``): bq/test.tsv alone; bq/test.tsv with
  bq/train.tsv + bq/dev.tsv as distractors; and, across domains, afqmc/dev.txt and
  pawsx_zh/test_2k.tsv.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from report import add_output_options, machine, publish, render  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
WORK = HERE / ".work" / "retrieval"
CONFIGS = {  # objective: TrainConfig settings beyond the defaults; bce is the recipe as published (all 20 epochs)
    "bce": {},
    "contrastive": {"patience": 3},
    "both": {"patience": 3},
    "margin": {"patience": 3},
}
TASKS = {  # name: (main file, distractor files)
    "BQ test": ("bq/test.tsv", ()),
    "BQ test + train/dev distractors": ("bq/test.tsv", ("bq/train.tsv", "bq/dev.tsv")),
    "AFQMC dev (cross-domain)": ("afqmc/dev.txt", ()),
    "PAWS-X zh test (cross-domain)": ("pawsx_zh/test_2k.tsv", ()),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_models(objectives: list[str]) -> dict[str, Path]:
    from siamsearch import TrainConfig, read_pairs, train

    pairs, dev = read_pairs(DATA / "bq/train.tsv"), read_pairs(DATA / "bq/dev.tsv")
    models = {}
    for objective in objectives:
        log(f"training {objective}")
        encoder = train(pairs, dev, TrainConfig(objective=objective, **CONFIGS[objective]),
                        on_epoch_end=lambda e, n, logs: log(f"  epoch {e}/{n} {json.dumps(logs)}"))
        models[objective] = WORK / "models" / objective
        encoder.save(models[objective])
    return models


def evaluate(models: dict[str, Path]) -> dict:
    from siamsearch import Encoder, read_pairs
    from siamsearch.baselines import BM25Retriever, TfidfRetriever
    from siamsearch.evaluation import EncoderRetriever, PairEvaluator, RetrievalEvaluator
    from siamsearch.metrics import RetrievalTask

    encoders = {name: Encoder.load(path) for name, path in models.items()}
    on_test = PairEvaluator(read_pairs(DATA / "bq/test.tsv"))
    pairs = {}
    for name, enc in encoders.items():
        pairs[name] = {**on_test(enc),
                       "valid": enc.metrics.get("valid"), "training": enc.training,
                       "epochs_run": len(enc.history)}
        log(f"pairs {name}: {json.dumps(pairs[name]['accuracy'])}")
    retrieval = {}
    for task_name, (main, extra) in TASKS.items():
        task = RetrievalTask.from_pairs(read_pairs(DATA / main), [read_pairs(DATA / e) for e in extra])
        run = RetrievalEvaluator(task)
        rows = [run(BM25Retriever()), run(TfidfRetriever())]
        rows += [run(EncoderRetriever(enc, name=name)) for name, enc in encoders.items()]
        retrieval[task_name] = {"corpus": len(task.corpus), "queries": len(task.queries), "rows": rows}
        log(f"{task_name}: " + ", ".join(f"{r['name']} {r['mrr@10']:.3f}" for r in rows))
    return {"pairs": pairs, "retrieval": retrieval}


def markdown(results: dict) -> str:
    lines = [
        "<!-- retrieval-benchmarks:start (written by bench/retrieval.py; do not edit by hand) -->",
        "## Retrieval quality by training objective, beside keyword search",
        "",
        f"Command: `{results['command']}` on {results['machine']}; the whole run took "
        f"{results['seconds'] / 60:.1f} min.",
        "",
        "Models: trained on bq/train.tsv (100,000 pairs) with bq/dev.tsv as validation, the recipe's settings "
        "otherwise (20 epochs, batch 512, Nadam 0.002, seed 0); `bce` keeps the last epoch as the recipe does, "
        "`contrastive`, `both` and `margin` keep the epoch with the lowest dev loss (patience 3, temperature 1). "
        "Other rows "
        "are named by their settings (commands in the section above). The pair threshold is the best-accuracy one on "
        "dev. Retrieval task (`siamsearch evaluate --retrieval`): the corpus is every distinct "
        "sentence of the files; each distinct sentence1 of a positive pair is a query; its relevant documents are "
        "the sentences that positive pairs of the main file link it to, transitively, itself excluded. "
        "recall@k = share of queries with a relevant document in the top k. The encoder runs through the real "
        "`SearchIndex` (FAISS candidates, exact exp(-L1) re-rank). BM25: bm25s (Lucene idf), k1 1.2, b 0.75, "
        "character unigrams + bigrams, query terms once; TF-IDF: scikit-learn on the same terms, cosine.",
        "",
        "**Pair classification on bq/test.tsv** (10,000 pairs, at each model's dev-chosen threshold):",
        "",
        "| objective | accuracy | precision | recall | F1 | ROC-AUC | threshold | dev accuracy | epochs run | kept "
        "| train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in results["pairs"].items():
        valid = m.get("valid") or {}
        lines.append(f"| {name} | {m['accuracy']:.4f} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} "
                     f"| {m['roc_auc']:.4f} | {m['threshold']:.4g} | {valid.get('accuracy', float('nan')):.4f} "
                     f"| {m['epochs_run']} | {m['training'].get('epoch_kept', '?')} "
                     f"| {m['training'].get('seconds', float('nan')):.0f} |")
    for task_name, t in results["retrieval"].items():
        lines += ["", f"**Retrieval, {task_name}** ({t['corpus']:,} sentences, {t['queries']:,} queries):", "",
                  "| method | recall@1 | recall@10 | MRR@10 | MRR vs BM25 | ms/query |",
                  "|---|---:|---:|---:|---:|---:|"]
        bm25 = t["rows"][0]["mrr@10"]
        for r in t["rows"]:
            lines.append(f"| {r['name']} | {r['recall@1']:.3f} | {r['recall@10']:.3f} | {r['mrr@10']:.3f} "
                         f"| {r['mrr@10'] / bm25:.2f}× | {r['ms_per_query']:.2f} |")
    lines += ["", "<!-- retrieval-benchmarks:end -->"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                        help="use this model directory instead of training NAME (repeat)")
    parser.add_argument("--objectives", default=",".join(CONFIGS))
    add_output_options(parser, "retrieval")
    args = parser.parse_args()
    if args.render:
        render("retrieval", markdown)
        return
    started = time.perf_counter()
    models = {name: Path(path) for name, path in (m.split("=", 1) for m in args.model)}
    models |= train_models([o for o in args.objectives.split(",") if o and o not in models])
    order = {name: n for n, name in enumerate(CONFIGS)}
    models = {name: models[name] for name in sorted(models, key=lambda n: order.get(n, 99))}
    results = {**evaluate(models), "command": "python " + shlex.join(sys.argv),
               "seconds": time.perf_counter() - started, "machine": machine()}
    print(json.dumps(results, ensure_ascii=False))
    publish("retrieval", results, markdown, write=not args.no_write)


if __name__ == "__main__":
    main()
