"""A match probability for several domains: the model's calibration fitted on held-out pairs of each.

    python bench/general_data.py          # once: the held-out halves (bench/.work/general)
    python bench/calibration.py [--model default] [--save] [--no-write]
    python bench/calibration.py --render

Fits (``calibration.fit``: a logistic curve on L1), each on pairs the model did not train on:

* ``BQ dev``: bq/dev.tsv alone (how the shipped default was calibrated on 2026-12-02);
* ``mixed``: the dev pairs of every domain at hand, the same number from each (the smallest
  file's, a seeded sample of the others), so that no domain's base rate dominates: bq/dev,
  AFQMC's dev half, pawsx_zh/dev_2k and chinese_sts_b/sts-b-dev (score ≥ 3 → a match). OPPO
  Xiaobu's dev half is left out of the fit when the model trained on OPPO's dev.txt (the
  shipped default did; ``--oppo`` adds it for a model that did not).

Each fit's expected calibration error (10 equal-width bins) on the test side of every set:
bq/test.tsv, AFQMC's test half, pawsx_zh/test_2k.tsv, sts-b-test (≥ 3) and OPPO's test half.
``--save`` writes the mixed fit into the model directory's config.json (``Encoder.save_settings``:
weights and fingerprint unchanged).
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

STS_MATCH_AT = 3
FIT_FILES = ["bq/dev.tsv", "afqmc dev half", "pawsx_zh/dev_2k.tsv", "chinese_sts_b/sts-b-dev.txt"]
TEST_FILES = ["bq/test.tsv", "afqmc test half", "pawsx_zh/test_2k.tsv", "chinese_sts_b/sts-b-test.txt",
              "oppo test half"]


def read(name: str):
    """The pairs of ``name`` with 0/1 labels (STS-B: score ≥ 3 → 1)."""
    from siamsearch.data import Pairs

    pairs = read_set(name)
    if pairs.graded:
        return Pairs(pairs.left, pairs.right, (pairs.labels >= STS_MATCH_AT).astype(np.float32), name)
    return pairs


def markdown(r: dict) -> str:
    fits = list(r["fits"])
    out = ["<!-- calibration-benchmarks:start (written by bench/calibration.py; do not edit by hand) -->",
           "## The match probability on several domains", "",
           f"`{r['command']}` on {r['date']}, {r['cpu']}; commit {r['commit']}; model `{r['model']}` "
           f"(fingerprint {r['fingerprint'][:12]}).", "",
           "| fit | fitted on | intercept | slope |", "|---|---|---:|---:|"]
    for name, f in r["fits"].items():
        out.append(f"| {name} | {f['on']} | {f['intercept']:.3f} | {f['slope']:.3f} |")
    out += ["", "Expected calibration error on held-out test pairs (10 bins; target ≤ 0.10):", "",
            "| test set | pairs | matches | " + " | ".join(fits) + " |", "|---|---:|---:|" + "---:|" * len(fits)]
    for name, row in r["ece"].items():
        out.append(f"| {name} | {row['pairs']:,} | {row['share']:.2f} | "
                   + " | ".join(f"{row[f]:.3f}" for f in fits) + " |")
    out += ["", "<!-- calibration-benchmarks:end -->", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="a model directory or a shipped model's name")
    parser.add_argument("--oppo", action="store_true", help="fit on OPPO's dev half too (a model that did not "
                                                            "train on it)")
    parser.add_argument("--save", action="store_true", help="write the mixed fit into the model's config.json")
    add_output_options(parser, "calibration")
    args = parser.parse_args()
    if args.render:
        return render("calibration", markdown)
    require_data()
    from siamsearch import Encoder
    from siamsearch.calibration import fit, report
    from siamsearch.shipped import model_path

    started = time.perf_counter()
    encoder = Encoder.load(args.model)
    fit_files = FIT_FILES + (["oppo dev half"] if args.oppo else [])
    scored = {}
    for name in fit_files + TEST_FILES:
        pairs = read(name)
        scored[name] = (encoder.pair_scores(pairs), pairs.labels)
    smallest = min(len(scored[f][1]) for f in fit_files)
    rng = np.random.default_rng(0)
    picks = {f: np.sort(rng.permutation(len(scored[f][1]))[:smallest]) for f in fit_files}
    mixed_scores = np.concatenate([scored[f][0][picks[f]] for f in fit_files])
    mixed_labels = np.concatenate([scored[f][1][picks[f]] for f in fit_files])
    fits = {"BQ dev": fit(*scored["bq/dev.tsv"], {"file": "dev.tsv", "held_out": True}),
            "mixed": fit(mixed_scores, mixed_labels, {"file": f"{len(fit_files)} dev sets, {smallest:,} pairs each: "
                                                              + ", ".join(fit_files), "held_out": True})}
    results = {"model": args.model, "fingerprint": encoder.fingerprint, **provenance(),
               "fits": {n: {"on": c.fitted_on["file"], "intercept": c.intercept, "slope": c.slope}
                        for n, c in fits.items()},
               "ece": {}}
    for name in TEST_FILES:
        scores, labels = scored[name]
        results["ece"][name] = {"pairs": len(labels), "share": float(np.mean(labels)),
                                **{n: report(c, scores, labels)["ece"] for n, c in fits.items()}}
        print(f"  {name}: " + ", ".join(f"{n} {results['ece'][name][n]:.3f}" for n in fits), flush=True)
    if args.save:
        encoder.calibration = fits["mixed"]
        encoder.save_settings(model_path(args.model))
    publish("calibration", results, markdown, write=not args.no_write)
    print(markdown(results))
    print(f"calibration benchmark: {len(scored)} files in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
