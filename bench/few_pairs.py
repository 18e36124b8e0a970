"""Bring your own pairs: a user with 8,000 labelled pairs, trained as the CLI trains, against
the teacher zero-shot and keyword search.

    python bench/few_pairs.py                       # every dataset and variant; writes docs/benchmarks.md
    python bench/few_pairs.py --data bq --variants init-teacher
    python bench/few_pairs.py --render

Datasets (seeded, ``numpy.random.default_rng(0)``):

``afqmc``
    8,000 pairs drawn from afqmc/train.txt; afqmc/dev.txt split in two halves by a permutation:
    the first half chooses (``--valid``: threshold and early stopping), the second is reported.
``bq``
    8,000 pairs drawn from bq/train.tsv; bq/dev.tsv chooses, bq/test.tsv is reported.

Variants (each ``siamsearch train`` in its own process, then scored on the report file):
``recipe`` (``--preset recipe``), ``search`` (``--preset search``), ``teacher`` (``--preset search
--teacher use-m3``: from scratch with the teacher), ``init`` (``--preset search --init default``) and
``init-teacher`` (``--preset search --init default --teacher use-m3``). The teacher's unlabelled text
is the training pairs' own sentences: nothing of the report file is learned from.

Reported: Spearman ×100 and retrieval MRR@10 (``evaluate --retrieval``, no distractors) on the
report file, beside the teacher zero-shot, character BM25 and the shipped model untouched.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from general_data import DATA, ROOT, require_data  # noqa: E402
from report import RESULTS, add_output_options, machine, publish, render  # noqa: E402

WORK = ROOT / "bench" / ".work" / "few_pairs"
SAMPLE = 8000
VARIANTS = {
    "recipe": ["--preset", "recipe"],
    "search": ["--preset", "search"],
    "teacher": ["--preset", "search", "--teacher", "use-m3"],
    "init": ["--preset", "search", "--init", "default"],
    "init-teacher": ["--preset", "search", "--init", "default", "--teacher", "use-m3"],
}


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8-sig").split("\n") if line.strip()]


def prepare(data: str) -> tuple[Path, Path, Path]:
    """The (train, choose, report) files of a dataset, written under bench/.work/few_pairs/DATA."""
    out = WORK / data
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    train = _lines(DATA / ("afqmc/train.txt" if data == "afqmc" else "bq/train.tsv"))
    sample = [train[i] for i in np.sort(rng.choice(len(train), SAMPLE, replace=False))]
    if data == "afqmc":
        dev = _lines(DATA / "afqmc/dev.txt")
        order = rng.permutation(len(dev))
        half = len(dev) // 2
        choose, report = [dev[i] for i in np.sort(order[:half])], [dev[i] for i in np.sort(order[half:])]
    else:
        choose, report = _lines(DATA / "bq/dev.tsv"), _lines(DATA / "bq/test.tsv")
    for name, rows in (("train.tsv", sample), ("choose.tsv", choose), ("report.tsv", report)):
        (out / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    (out / "sentences.txt").write_text("\n".join(r.split("\t", 2)[0] + "\t" + r.split("\t", 2)[1] for r in sample)
                                       + "\n", encoding="utf-8")
    return out / "train.tsv", out / "choose.tsv", out / "report.tsv"


def scores(encoder_or_baseline, report) -> dict:
    from siamsearch.evaluation import EncoderRetriever, PairEvaluator, RetrievalEvaluator
    from siamsearch.metrics import RetrievalTask

    pairs = PairEvaluator(report)
    task = RetrievalEvaluator(RetrievalTask.from_pairs(report))
    if hasattr(encoder_or_baseline, "encode"):
        return {"spearman": pairs(encoder_or_baseline)["spearman"],
                "mrr@10": task(EncoderRetriever(encoder_or_baseline))["mrr@10"]}
    return {"spearman": pairs.baseline(encoder_or_baseline)["spearman"], "mrr@10": task(encoder_or_baseline)["mrr@10"]}


def run(data: str, variants: list[str]) -> dict:
    from siamsearch import Encoder, read_pairs
    from siamsearch.baselines import BM25Retriever, TeacherRetriever

    train, choose, report_file = prepare(data)
    report = read_pairs(report_file)
    rows = {"use-m3 zero-shot": scores(TeacherRetriever("use-m3"), report),
            "BM25 (chars)": scores(BM25Retriever(), report),
            "shipped model, untouched": scores(Encoder.load(), report)}
    for variant in variants:
        out = WORK / data / "models" / variant
        command = [sys.executable, "-m", "siamsearch", "train", str(train), "--valid", str(choose), "--out", str(out),
                   *VARIANTS[variant]]
        if "--teacher" in VARIANTS[variant]:
            command += ["--unlabelled", str(WORK / data / "sentences.txt")]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        rows[variant] = {**scores(Encoder.load(out), report), "train_seconds": round(seconds, 1),
                         "flags": " ".join(VARIANTS[variant]),
                         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        print(f"  {data} {variant}: {rows[variant]}", flush=True)
    return rows


def markdown(r: dict) -> str:
    out = ["<!-- few_pairs-benchmarks:start (written by bench/few_pairs.py; do not edit by hand) -->",
           "## Bring your own pairs: 8,000 labelled pairs, trained as the CLI trains", "",
           f"`{r['command']}` on {r['date']}; {r['machine']}. Reported on the held-out half of AFQMC dev and on "
           "BQ test; chosen on the other half and on BQ dev.", "",
           "| system | flags | AFQMC Spearman ×100 | AFQMC MRR@10 | BQ Spearman ×100 | BQ MRR@10 "
           "| train s (AFQMC, BQ) |",
           "|---|---|---:|---:|---:|---:|---:|"]
    names = list(dict.fromkeys(n for rows in r["results"].values() for n in rows))
    for n in names:
        a, b = r["results"].get("afqmc", {}).get(n), r["results"].get("bq", {}).get(n)

        def cells(x):
            return ("—", "—") if x is None else (f"{100 * x['spearman']:.1f}", f"{x['mrr@10']:.3f}")

        flags = (a or b).get("flags", "")
        secs = ", ".join(f"{x['train_seconds']:.0f}" for x in (a, b) if x and "train_seconds" in x) or "—"
        out.append(f"| {n} | `{flags}` | {' | '.join(cells(a))} | {' | '.join(cells(b))} | {secs} |"
                   if flags else f"| {n} | — | {' | '.join(cells(a))} | {' | '.join(cells(b))} | {secs} |")
    out += ["", "<!-- few_pairs-benchmarks:end -->", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=["afqmc", "bq"], action="append")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--fresh", action="store_true", help="forget the runs saved in bench/results/few_pairs.json")
    add_output_options(parser, "few_pairs")
    args = parser.parse_args()
    if args.render:
        return render("few_pairs", markdown)
    require_data()
    started = time.perf_counter()
    saved = RESULTS / "few_pairs.json"
    results = json.loads(saved.read_text(encoding="utf-8")) if saved.exists() and not args.fresh else {"results": {}}
    results.update(command="python bench/few_pairs.py", date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   machine=machine())
    for data in args.data or ["afqmc", "bq"]:  # runs of other variants saved earlier stay, with their dates
        results["results"].setdefault(data, {}).update(run(data, args.variants.split(",")))
    results["seconds"] = round(time.perf_counter() - started, 1)
    publish("few_pairs", results, markdown, write=not args.no_write)
    print(markdown(results))
    print(f"few-pairs benchmark: {len(results['results'])} dataset(s) in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
