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
``oppo``
    Open-domain dialogue: OPPO Xiaobu's dev.txt less its held-out part (``general_data.oppo_split``,
    seed 20261206): all 7,000 of those pairs train (fewer than 8,000); the held-out part's dev
    half (1,500) chooses and its test half (1,500) is reported. The shipped default never trains
    on the held-out part (from the model of 2026-12-07 on).

Variants (each ``siamsearch train`` in its own process, then scored on the report file):
``recipe`` (``--preset recipe``), ``search`` (``--preset search``), ``teacher`` (``--preset search
--teacher use-m3``: from scratch with the teacher), ``init`` (``--preset search --init default``) and
``init-teacher`` (``--preset search --init default --teacher use-m3``), where the teacher's unlabelled text
is the training pairs' own sentences, and ``init-corpus`` (the same with a user's corpus as ``--unlabelled``:
20,000 sentences of the set that are neither in the training sample nor in the reported file; for
AFQMC and BQ the rest of their training file, for OPPO its test_unlabelled.txt). Nothing of the
report file is learned from.

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
from general_data import DATA, ROOT, oppo_split, require_data  # noqa: E402
from report import RESULTS, add_output_options, machine, publish, render  # noqa: E402

WORK = ROOT / "bench" / ".work" / "few_pairs"
SAMPLE = 8000
VARIANTS = {
    "recipe": ["--preset", "recipe"],
    "search": ["--preset", "search"],
    "teacher": ["--preset", "search", "--teacher", "use-m3"],
    "init": ["--preset", "search", "--init", "default"],
    "init-teacher": ["--preset", "search", "--init", "default", "--teacher", "use-m3"],
    "init-corpus": ["--preset", "search", "--init", "default", "--teacher", "use-m3"],
}
CORPUS = 20_000
"""Sentences of the user's own corpus the ``init-corpus`` variant distils on."""
DATASETS = ("afqmc", "bq", "oppo")


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8-sig").split("\n") if line.strip()]


def prepare(data: str) -> tuple[Path, Path, Path]:
    """The (train, choose, report) files of a dataset, written under bench/.work/few_pairs/DATA,
    with ``sentences.txt`` (the training pairs' sentences) and ``corpus.txt`` (``CORPUS`` others)."""
    out = WORK / data
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if data == "oppo":
        rest, choose_rows, report_rows = oppo_split()
        sample = ["\t".join(r) for r in rest]
        choose, report = ["\t".join(r) for r in choose_rows], ["\t".join(r) for r in report_rows]
        unused = [line.split("\t")[0] for line in _lines(DATA / "oppo_xiaobu/test_unlabelled.txt")]
    else:
        train = _lines(DATA / ("afqmc/train.txt" if data == "afqmc" else "bq/train.tsv"))
        chosen = np.sort(rng.choice(len(train), SAMPLE, replace=False))
        sample = [train[i] for i in chosen]
        if data == "afqmc":
            dev = _lines(DATA / "afqmc/dev.txt")
            order = rng.permutation(len(dev))
            half = len(dev) // 2
            choose, report = [dev[i] for i in np.sort(order[:half])], [dev[i] for i in np.sort(order[half:])]
        else:
            choose, report = _lines(DATA / "bq/dev.tsv"), _lines(DATA / "bq/test.tsv")
        taken = set(chosen.tolist())
        unused = [s for i, line in enumerate(train) if i not in taken for s in line.split("\t")[:2]]
    seen = {s for line in sample + report for s in line.split("\t")[:2]}
    unused = list(dict.fromkeys(s for s in unused if s.strip() and s not in seen))
    corpus = [unused[i] for i in np.sort(np.random.default_rng(1).choice(len(unused), min(CORPUS, len(unused)),
                                                                          replace=False))]
    for name, rows in (("train.tsv", sample), ("choose.tsv", choose), ("report.tsv", report),
                       ("corpus.txt", corpus)):
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
    today = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = {"use-m3 zero-shot": {**scores(TeacherRetriever("use-m3"), report), "date": today},
            "BM25 (chars)": {**scores(BM25Retriever(), report), "date": today},
            "shipped model, untouched": {**scores(Encoder.load(), report), "date": today}}
    for variant in variants:
        out = WORK / data / "models" / variant
        command = [sys.executable, "-m", "siamsearch", "train", str(train), "--valid", str(choose), "--out", str(out),
                   *VARIANTS[variant]]
        if "--teacher" in VARIANTS[variant]:
            unlabelled = "corpus.txt" if variant == "init-corpus" else "sentences.txt"
            command += ["--unlabelled", str(WORK / data / unlabelled)]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        rows[variant] = {**scores(Encoder.load(out), report), "train_seconds": round(seconds, 1),
                         "flags": " ".join(VARIANTS[variant]),
                         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        print(f"  {data} {variant}: {rows[variant]}", flush=True)
    return rows


TITLES = {"afqmc": "AFQMC", "bq": "BQ", "oppo": "OPPO"}
REPORTED = {"afqmc": "the held-out half of AFQMC dev (chosen on the other half)",
            "bq": "BQ test (chosen on BQ dev)",
            "oppo": "the test half of OPPO Xiaobu's held-out part (chosen on its dev half)"}


def markdown(r: dict) -> str:
    datasets = [d for d in DATASETS if d in r["results"]]
    out = ["<!-- few_pairs-benchmarks:start (written by bench/few_pairs.py; do not edit by hand) -->",
           "## Bring your own pairs: 8,000 labelled pairs, trained as the CLI trains", "",
           f"`{r['command']}`; {r['machine']}. Reported on " + "; on ".join(REPORTED[d] for d in datasets)
           + ". Each row's date is when it was measured.", "",
           "| system | flags | " + " | ".join(f"{TITLES[d]} Spearman ×100 | {TITLES[d]} MRR@10" for d in datasets)
           + " | train s | measured |",
           "|---|---|" + "---:|---:|" * len(datasets) + "---:|---|"]
    names = list(dict.fromkeys(n for rows in r["results"].values() for n in rows))
    for n in names:
        rows = [r["results"][d].get(n) for d in datasets]

        def cells(x):
            return ("—", "—") if x is None else (f"{100 * x['spearman']:.1f}", f"{x['mrr@10']:.3f}")

        flags = next((x.get("flags", "") for x in rows if x), "")
        if n == "init-corpus":
            flags += " --unlabelled corpus.txt"
        secs = ", ".join(f"{x['train_seconds']:.0f}" for x in rows if x and "train_seconds" in x) or "—"
        dates = ", ".join(dict.fromkeys(x["date"][:10] for x in rows if x and "date" in x)) or "—"
        out.append(f"| {n} | {f'`{flags}`' if flags else '—'} | "
                   + " | ".join(c for x in rows for c in cells(x)) + f" | {secs} | {dates} |")
    out += ["", "<!-- few_pairs-benchmarks:end -->", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=DATASETS, action="append")
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
    for data in args.data or DATASETS:  # runs of other variants saved earlier stay, with their dates
        results["results"].setdefault(data, {}).update(run(data, args.variants.split(",")))
    results["seconds"] = round(time.perf_counter() - started, 1)
    publish("few_pairs", results, markdown, write=not args.no_write)
    print(markdown(results))
    print(f"few-pairs benchmark: {len(results['results'])} dataset(s) in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
