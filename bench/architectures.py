"""Encoder architectures side by side: each candidate trained on the same data with the same budget.

    python bench/general_data.py                       # once: the data (bench/.work/general)
    python bench/architectures.py [--pairs 40000] [--unlabelled 20000] [--epochs 2]
    python bench/architectures.py --only cnn --no-write  # one candidate, e.g. in another sitting
    python bench/architectures.py --render

Data and budget (the same for every candidate): a seeded sample (``--pairs``, seed 0) of the
general model's training pairs and of its unlabelled sentences (``--unlabelled``), the
general model's recipe (``--preset general``: margin, char-mask 0.3, averaged weights) with
the ``use-m3`` teacher, for ``--epochs`` epochs, seed 0. A proxy of the full run (204,207 pairs,
292,840 sentences, 6 epochs): what it ranks is what a full run is then spent on.

Each trained model is kept under ``bench/.work/architectures/NAME`` (trained with a checkpoint
folder beside it, so a run cut short continues where it stopped), and its row of the table is
kept in ``bench/results/architectures.json``: candidates can be trained in separate sittings.

Figures, dev splits only (choices are made on them): Spearman ×100 on chinese_sts_b/sts-b-dev,
bq/dev, AFQMC's dev half, pawsx_zh/dev_2k and OPPO Xiaobu's held-out dev half (both halves:
``bench/general_data.py``); encoding sentences/s of every candidate and of the teacher on the
same 4,000 sentences, side by side in one process (with ``--only``, the rows measured in other
runs keep their own speed, so compare speeds within one run's columns); the vector's bytes per
document in a flat or HNSW index (float32 × dimension); mean seconds per training epoch; and
trainable parameters (the frozen character vectors are the same for all and not counted).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from general_data import ROOT, read_set, require_data  # noqa: E402
from report import RESULTS, add_output_options, provenance, publish, render  # noqa: E402

WORK = ROOT / "bench" / ".work"
CANDIDATES: dict[str, tuple[str, dict]] = {
    "bilstm-128-32": ("bilstm", {}),
    "bilstm-256-64": ("bilstm", {"lstm_units": [256, 64]}),
    "cnn-256": ("cnn", {}),
    "cnn-512": ("cnn", {"widths": [1, 2, 3, 4], "filters": 512, "output_dim": 256}),
}
"""Name → (architecture, settings): the recipe's BiLSTM, a wider one with a 128-d vector, and the
CNN at its defaults (3 × 256 filters → 128-d) and wider (4 widths × 512 → 256-d)."""
DEV_FILES = ["chinese_sts_b/sts-b-dev.txt", "bq/dev.tsv", "afqmc dev half", "pawsx_zh/dev_2k.tsv", "oppo dev half"]
SPEED_SENTENCES = 4000


def read(name: str):
    return read_set(name)


def budget(args) -> tuple:
    """The training pairs and unlabelled sentences every candidate learns from (seeded samples)."""
    from siamsearch import read_pairs

    general = WORK / "general"
    if not (general / "train.tsv").is_file():
        sys.exit(f"{general}/train.tsv: not found; run python bench/general_data.py first")
    pairs = read_pairs(general / "train.tsv")
    rng = np.random.default_rng(0)
    pairs = pairs.subset(np.sort(rng.permutation(len(pairs))[: args.pairs]))
    unlabelled = (general / "unlabelled.txt").read_text(encoding="utf-8").splitlines()
    unlabelled = [unlabelled[i] for i in np.sort(rng.permutation(len(unlabelled))[: args.unlabelled])]
    return pairs, unlabelled


def train_candidate(name: str, pairs, unlabelled, epochs: int):
    """The candidate's model, trained now (resuming its checkpoint if a run was cut short) or loaded."""
    from siamsearch import PRESETS, Encoder, train

    model_dir, checkpoint = WORK / "architectures" / name, WORK / "architectures" / f"{name}.checkpoint"
    if (model_dir / "config.json").is_file():
        return Encoder.load(model_dir)
    architecture, settings = CANDIDATES[name]
    config = replace(PRESETS["general"], epochs=epochs, architecture=architecture, encoder_settings=settings)

    def report(epoch: int, total: int, logs: dict) -> None:
        print(f"  {name}: epoch {epoch}/{total}, loss {logs['loss']:.4f}, {logs['seconds']:.0f} s", flush=True)

    encoder = train(pairs, config=config, teacher="use-m3", unlabelled=unlabelled, on_epoch_end=report,
                    checkpoint_dir=checkpoint, resume=(checkpoint / "checkpoint.npz").is_file())
    encoder.save(model_dir)
    return encoder


def parameters(encoder) -> int:
    model = encoder.keras_model()
    return int(sum(np.prod(v.shape) for v in model.trainable_variables if "embedding" not in v.path))


def speeds(models: dict) -> dict:
    """Encoding sentences/s of each model and of the uncached teacher, same sentences, this process."""
    from siamsearch.teacher import load_teacher

    pairs = read(DEV_FILES[0])
    sentences = list(dict.fromkeys(pairs.left + pairs.right + read("bq/dev.tsv").left))[:SPEED_SENTENCES]
    teacher = load_teacher("use-m3")
    teacher.encode(sentences[:64])  # loads its weights
    rates = {}
    for name, encode in [*((m, e.encode) for m, e in models.items()), ("use-m3", teacher.encode)]:
        encode(sentences[:256])  # warm
        started = time.perf_counter()
        encode(sentences)
        rates[name] = len(sentences) / (time.perf_counter() - started)
    return rates


def markdown(r: dict) -> str:
    rows = r["candidates"]
    out = ["<!-- architectures-benchmarks:start (written by bench/architectures.py; do not edit by hand) -->",
           "## Encoder architectures: the same data and budget, dev splits", "",
           f"`{r['command']}` on {r['date']}, {r['cpu']}; {r['machine']}; commit {r['commit']}. Budget: "
           f"{r['pairs']:,} training pairs and {r['unlabelled']:,} unlabelled sentences (seeded samples of the "
           f"general model's), `--preset general` with `--teacher use-m3`, {r['epochs']} epochs, seed 0.", "",
           "| candidate | " + " | ".join(DEV_FILES) + " | mean | encode/s | × teacher | bytes/doc | s/epoch "
           "| parameters |", "|---|" + "---:|" * (len(DEV_FILES) + 6)]
    for name, row in rows.items():
        cells = [f"{100 * row['spearman'][f]:.1f}" for f in DEV_FILES]
        mean = 100 * np.mean([row["spearman"][f] for f in DEV_FILES])
        out.append(f"| {name} | " + " | ".join(cells) + f" | {mean:.1f} | {row['encode_per_second']:,.0f} | "
                   f"{row['encode_per_second'] / row['teacher_encode_per_second']:.1f} | {row['bytes_per_document']} "
                   f"| {row['seconds_per_epoch']:.0f} | {row['parameters']:,} |")
    teacher = r["teacher"]
    out.append("| use-m3 teacher (zero-shot, cosine) | " + " | ".join(f"{100 * teacher[f]:.1f}" for f in DEV_FILES)
               + f" | {100 * np.mean([teacher[f] for f in DEV_FILES]):.1f} | | 1.0 | 2,048 | | |")
    out += ["", "Encoding rates of rows measured in separate runs (`--only`) are each beside the teacher in "
            "their own run: compare the × teacher column across rows.", "",
            "<!-- architectures-benchmarks:end -->", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=40_000)
    parser.add_argument("--unlabelled", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--only", action="append", choices=list(CANDIDATES), help="train and measure only these")
    add_output_options(parser, "architectures")
    args = parser.parse_args()
    if args.render:
        return render("architectures", markdown)
    require_data()
    from siamsearch.baselines import TeacherRetriever
    from siamsearch.evaluation import PairEvaluator

    started = time.perf_counter()
    pairs, unlabelled = budget(args)
    names = args.only or list(CANDIDATES)
    models = {}
    for name in names:
        print(f"{name}: training on {len(pairs):,} pairs and {len(unlabelled):,} unlabelled sentences", flush=True)
        models[name] = train_candidate(name, pairs, unlabelled, args.epochs)
    evaluators = {f: PairEvaluator(read(f)) for f in DEV_FILES}
    previous = RESULTS / "architectures.json"
    results = json.loads(previous.read_text(encoding="utf-8")) if previous.is_file() else {"candidates": {}}
    teacher = TeacherRetriever("use-m3")
    results["teacher"] = {f: e.baseline(teacher)["spearman"] for f, e in evaluators.items()}
    rates = speeds(models)
    for name, encoder in models.items():
        results["candidates"][name] = {
            "architecture": encoder.config.to_dict(),
            "spearman": {f: e(encoder)["spearman"] for f, e in evaluators.items()},
            "encode_per_second": rates[name], "teacher_encode_per_second": rates["use-m3"],
            "bytes_per_document": 4 * encoder.dim,
            "seconds_per_epoch": float(np.mean([h["seconds"] for h in encoder.history])),
            "parameters": parameters(encoder)}
        print(f"  {name}: " + ", ".join(f"{f} {100 * v:.1f}" for f, v in
                                       results["candidates"][name]["spearman"].items()), flush=True)
    results["candidates"] = {n: results["candidates"][n] for n in CANDIDATES if n in results["candidates"]}
    results.update({"pairs": len(pairs), "unlabelled": len(unlabelled), "epochs": args.epochs, **provenance()})
    publish("architectures", results, markdown, write=not args.no_write)
    print(markdown(results))
    print(f"architectures benchmark: {len(models)} candidate(s) in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
