"""One training step of the recipe's encoder: Keras's layers against ``BiLSTM.forward``.

    python bench/training_step.py              # under a minute on 2 cores; writes docs/benchmarks.md
    python bench/training_step.py --no-write

Both compute the same function of the same weights (tests/test_training.py checks outputs and
gradients); training uses ``BiLSTM.forward``, and the Keras model is what is saved and
exported. A step here is ``_Trainer.train_step``, traced as ``siamsearch train`` traces it,
for the recipe's pair loss (binary cross-entropy of exp(-L1)) on 512 pairs of a batch of
distinct sentences, with Nadam's update; the Keras side is the same step with the encoder
called as a Keras model. For each batch shape (sentences × characters, padded on the right to
lengths drawn between a third of the width and the width), the two steps alternate, a few
steps each, and each reports the median over its rounds, so both see the same machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from report import add_output_options, machine, publish, render  # noqa: E402

SHAPES = ((1000, 8), (1000, 12), (700, 25), (500, 40))  # BQ seed_train: median sentence 10 characters, p99 39
PAIRS, VOCAB, ROUNDS, STEPS = 512, 1600, 5, 4


def measure() -> dict:
    from siamsearch.keras_runtime import load

    keras = load()
    import tensorflow as tf
    from keras import ops

    from siamsearch.architectures import EMBEDDING_LAYER, BiLSTM, EncoderConfig
    from siamsearch.model import build_encoder
    from siamsearch.trainer import BATCH_SPEC, Trainer

    class ThroughKerasLayers(Trainer):
        """The same training step with the encoder called as a Keras model."""

        def call(self, inputs, training=False):
            sentences, left, right = inputs
            encoded = self.encoder(sentences, training=training)
            return ops.take(encoded, left, axis=0), ops.take(encoded, right, axis=0)

    rng = np.random.default_rng(0)
    model = build_encoder(EncoderConfig(vocab_size=VOCAB, embedding_dim=300, max_length=100))
    model.get_layer(EMBEDDING_LAYER).set_weights([rng.normal(size=(VOCAB, 300)).astype(np.float32)])
    steps = {}
    for name, kind in (("keras", ThroughKerasLayers), ("encoder_forward", Trainer)):
        trainer = kind(model, BiLSTM(), "bce", 1.0)
        trainer.compile(optimizer=keras.optimizers.Nadam(0.002))
        trainer.optimizer.build(trainer.trainable_variables)
        steps[name] = tf.function(trainer.train_step, input_signature=[BATCH_SPEC])  # as trainer.fit traces it
    rows = []
    for n, width in SHAPES:
        ids = rng.integers(2, VOCAB, size=(n, width)).astype(np.int32)
        ids[np.arange(width)[None, :] >= rng.integers(max(1, width // 3), width + 1, size=n)[:, None]] = 0
        groups = np.arange(PAIRS, dtype=np.int64)
        batch = ((ids, rng.integers(0, n, PAIRS).astype(np.int32), rng.integers(0, n, PAIRS).astype(np.int32),
                  groups, groups), rng.integers(0, 2, PAIRS).astype(np.float32))
        times: dict[str, list[float]] = {name: [] for name in steps}
        for step in steps.values():
            step(batch)  # trace and warm up
        for _ in range(ROUNDS):
            for name, step in steps.items():
                started = time.perf_counter()
                for _ in range(STEPS):
                    float(step(batch)["loss"])
                times[name].append((time.perf_counter() - started) / STEPS)
        keras_ms, forward_ms = (1000 * float(np.median(times[name])) for name in steps)
        rows.append({"sentences": n, "characters": width, "keras_ms": round(keras_ms, 1),
                     "encoder_forward_ms": round(forward_ms, 1), "ratio": round(keras_ms / forward_ms, 2)})
        print(rows[-1], flush=True)
    return {"machine": machine(), "command": "python bench/training_step.py", "rows": rows}


def markdown(results: dict) -> str:
    lines = ["<!-- training_step-benchmarks:start (written by bench/training_step.py; do not edit by hand) -->",
             "## One training step: Keras's layers against `encoder_forward`", "",
             f"Command: `{results['command']}` on {results['machine']}. The recipe's encoder and pair loss, "
             f"Nadam's update, {PAIRS} pairs; median of {ROUNDS} rounds of {STEPS} steps, the two alternating.", "",
             "| sentences × characters | Keras layers, ms | `encoder_forward`, ms | ratio |",
             "|---|---:|---:|---:|"]
    lines += [f"| {r['sentences']} × {r['characters']} | {r['keras_ms']} | {r['encoder_forward_ms']} | "
              f"**{r['ratio']}×** |" for r in results["rows"]]
    return "\n".join(lines + ["", "<!-- training_step-benchmarks:end -->", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_output_options(parser, "training_step")
    args = parser.parse_args()
    if args.render:
        render("training_step", markdown)
    else:
        publish("training_step", measure(), markdown, write=not args.no_write)


if __name__ == "__main__":
    main()
