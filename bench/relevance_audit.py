"""How complete are the retrieval task's labels? A blind audit of top-1 results.

How often is a top-1 result that the labels count as a miss in fact a paraphrase of the query?

    python bench/relevance_audit.py sheet ../shared/data/bq/dev.tsv --out /tmp/audit.tsv > /tmp/sheet.txt
    # read /tmp/sheet.txt; in the TSV, replace each verdict '?' by 1 (same meaning) or 0
    python bench/relevance_audit.py score ../shared/data/bq/dev.tsv /tmp/audit.tsv  # writes docs/

The verdicts of docs/benchmarks.md: bench/audits/bq-dev.tsv (two draws, ``--n 40`` and
``--n 80``, seed 7, merged) and bench/audits/bq-test.tsv (``--n 80``, seed 7). ``score`` writes
one docs section per pair file.

Why: a query's relevant documents in the task of ``siamsearch.evaluation`` are the sentences
that positive pairs of the file link it to. BQ's annotators paired each question with a few
others, so other paraphrases of it in the corpus count as misses; how many is what bounds
the task's MRR@10 and recall, for every system alike.

``sheet`` draws ``--n`` queries of the task (``--seed``) and shows, for each, the top-1 of
the model (``--model``, the shipped one by default, through the real ``SearchIndex``) and of
character BM25, the query itself excluded: in random order, without saying which system
gave which, and once where both agree. The TSV it writes holds corpus positions and an
'?' verdict per shown document; no sentences (the data's licence), so a filled one may be
committed. ``score`` recomputes both systems' top-1, refuses a TSV they no longer match
(another model, file or seed), and reports per system: the labelled recall@1 on the sample,
the judged precision@1 (a labelled relevant document counts as judged relevant only if the
annotator said so), and the share of labelled misses judged to mean the same.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from report import machine, publish  # noqa: E402

if TYPE_CHECKING:
    from siamsearch.metrics import RetrievalTask

FIELDS = ("n", "query", "document", "verdict")
SYSTEMS = ("model", "bm25")


def top1(pairs_file: str, model: str | None) -> tuple[RetrievalTask, dict[str, np.ndarray]]:
    """The retrieval task of ``pairs_file`` and each system's best document per query (self excluded)."""
    from siamsearch import Encoder, read_pairs
    from siamsearch.baselines import BM25Retriever
    from siamsearch.evaluation import EncoderRetriever, RetrievalEvaluator
    from siamsearch.metrics import RetrievalTask

    task = RetrievalTask.from_pairs(read_pairs(pairs_file))
    evaluator, best = RetrievalEvaluator(task), {}
    for name, retriever in (("model", EncoderRetriever(Encoder.load(model))), ("bm25", BM25Retriever())):
        retriever.index(task.corpus)
        best[name] = np.array([docs[0] for docs in evaluator.rank(retriever, 1)])
    return task, best


def sheet(args: argparse.Namespace) -> None:
    if Path(args.out).exists():
        sys.exit(f"{args.out} exists (it may hold verdicts); choose another --out")
    task, best = top1(args.pairs, args.model)
    rng = np.random.default_rng(args.seed + 1)
    rows = []
    drawn = np.random.default_rng(args.seed).choice(len(task.queries), min(args.n, len(task.queries)), replace=False)
    for n, i in enumerate(drawn):
        shown = list(dict.fromkeys(int(best[name][i]) for name in SYSTEMS))
        rng.shuffle(shown)
        print(f"{n:3d} Q: {task.corpus[task.queries[i]]}")
        for letter, doc in zip("AB", shown):
            print(f"     {letter}: {task.corpus[doc]}")
            rows.append({"n": n, "query": task.queries[i], "document": doc, "verdict": "?"})
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, FIELDS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def score(args: argparse.Namespace) -> None:
    with open(args.audit, newline="", encoding="utf-8") as f:
        verdicts = {(int(r["query"]), int(r["document"])): r["verdict"] for r in csv.DictReader(f, delimiter="\t")}
    if set(verdicts.values()) - {"0", "1"}:
        sys.exit(f"{args.audit}: every verdict must be 1 or 0; fill in the '?' first")
    task, best = top1(args.pairs, args.model)
    queries = sorted({q for q, _ in verdicts})
    position = {q: i for i, q in enumerate(task.queries)}
    results = {"name": f"relevance_audit_{Path(args.pairs).stem}",  # one docs section per pair file
               "machine": machine(), "pairs": Path(args.pairs).name, "audit": args.audit, "queries": len(queries),
               "command": " ".join(["python bench/relevance_audit.py score", *sys.argv[2:]]), "systems": {}}
    for name in SYSTEMS:
        docs = [(q, int(best[name][position[q]])) for q in queries]
        missing = [pair for pair in docs if pair not in verdicts]
        if missing:
            sys.exit(f"{args.audit}: {name}'s top-1 is not in the audit for {len(missing)} of its queries "
                     "(another model, pair file or seed?); make a new sheet")
        judged = np.array([verdicts[pair] == "1" for pair in docs])
        labelled = np.array([doc in task.relevant[position[q]] for q, doc in docs])
        results["systems"][name] = {
            "labelled_recall@1": float(labelled.mean()),
            "judged_precision@1": float(judged.mean()),
            "labelled_misses": int((~labelled).sum()),
            "misses_judged_same": float(judged[~labelled].mean()) if (~labelled).any() else None,  # no misses
            "labelled_but_judged_different": int((labelled & ~judged).sum()),
            "labelled_recall@1_all_queries": float(np.mean([b in r for b, r in zip(best[name], task.relevant)])),
        }
    publish(results["name"], results, markdown, write=not args.no_write)
    print(markdown(results))


def markdown(results: dict) -> str:
    names = {"model": "the shipped model", "bm25": "character BM25"}
    marker = f"{results['name']}-benchmarks"
    lines = [f"<!-- {marker}:start (written by bench/relevance_audit.py; do not edit by hand) -->",
             f"## How complete are the retrieval task's labels? A blind audit of top-1 results on {results['pairs']}",
             "",
             f"Command: `{results['command']}` on {results['machine']}. {results['queries']} queries of "
             f"{results['pairs']}'s retrieval task, drawn at random; each system's top-1 (the query excluded) "
             "was judged same meaning or not, blind to the system (bench/relevance_audit.py says how).", "",
             "| system | labelled recall@1, all queries | labelled recall@1, sample | judged precision@1, sample "
             "| labelled misses in sample | of them judged same meaning | labelled relevant, judged different |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results["systems"].items():
        same = "—" if r["misses_judged_same"] is None else f"{r['misses_judged_same']:.2f}"
        lines.append(f"| {names[name]} | {r['labelled_recall@1_all_queries']:.3f} | {r['labelled_recall@1']:.3f} | "
                     f"**{r['judged_precision@1']:.3f}** | {r['labelled_misses']} | {same} | "
                     f"{r['labelled_but_judged_different']} |")
    return "\n".join(lines + ["", f"<!-- {marker}:end -->", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("sheet", help="draw queries; print the blind sheet; write the audit TSV to fill in")
    make.add_argument("pairs")
    make.add_argument("--out", required=True, help="the audit TSV to write")
    make.add_argument("--n", type=int, default=40, help="queries to draw")
    make.add_argument("--seed", type=int, default=7)
    judge = commands.add_parser("score", help="score a filled-in audit TSV; write docs/benchmarks.md")
    judge.add_argument("pairs")
    judge.add_argument("audit")
    judge.add_argument("--no-write", action="store_true", help="leave docs/ alone")
    for command in (make, judge):
        command.add_argument("--model", help="model directory (default: the shipped model)")
    args = parser.parse_args()
    if args.command == "sheet":
        sheet(args)
    else:
        score(args)


if __name__ == "__main__":
    main()
