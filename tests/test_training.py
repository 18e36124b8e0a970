"""Training objectives: the in-batch loss against a NumPy transcription, and what train() records."""

import numpy as np
import pytest

from siamsearch import TrainConfig, read_pairs, train
from siamsearch.demo import SAMPLE_PAIRS
from siamsearch.errors import InputError


def numpy_in_batch_loss(a, b, labels, ga, gb, temperature, hard=None, gh=None):
    """The in-batch loss, one pair and one direction at a time: pair i's anchor against every
    candidate of the other side and every hard negative, paraphrases of the anchor left out."""
    hard = np.zeros((0, 1)) if hard is None else hard
    gh = np.zeros(0) if gh is None else gh
    n = len(a)
    losses = []
    for i in np.flatnonzero(labels >= 0.5):
        for anchor, own, others, other_groups in ((a[i], ga[i], b, gb), (b[i], gb[i], a, ga)):
            candidates = [(j, others[j]) for j in range(n) if j == i or other_groups[j] != own]
            candidates += [(None, h) for h, g in zip(hard, gh) if g != own]
            z = np.array([-np.abs(anchor - c).sum() / temperature for _, c in candidates])
            target = z[[j for j, _ in candidates].index(i)]
            losses.append((np.log(np.exp(z - z.max()).sum()) + z.max() - target) / 2)
    return np.sum(losses) / max(1, np.sum(labels >= 0.5))


def test_in_batch_loss_matches_the_definition():
    from siamsearch.trainer import in_batch_loss

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(5, 4)).astype(np.float32)
    labels = np.array([1, 1, 0, 1, 1], np.float32)
    # pairs 0 and 3 are paraphrases of each other (same group): neither is the other's negative;
    # pair 2 is a labelled negative, its right sentence stays a candidate (a hard negative)
    ga, gb = np.array([7, 8, 9, 7, 11]), np.array([7, 8, 10, 7, 11])
    for temperature in (1.0, 0.5):
        got = float(in_batch_loss(a, b, labels, ga, gb, temperature))
        assert got == pytest.approx(numpy_in_batch_loss(a, b, labels, ga, gb, temperature), rel=1e-5)
    # hard negatives: more candidates for both sides, except for the pairs of their own group
    hard, gh = rng.normal(size=(3, 4)).astype(np.float32), np.array([7, 10, 99])
    got = float(in_batch_loss(a, b, labels, ga, gb, 0.5, hard, gh))
    want = numpy_in_batch_loss(a, b, labels, ga, gb, 0.5, hard, gh)
    assert got == pytest.approx(want, rel=1e-5)
    assert want > numpy_in_batch_loss(a, b, labels, ga, gb, 0.5)


@pytest.mark.parametrize("units", [(8, 4), (6,), (8, 6, 4)])
def test_the_training_forward_computes_the_keras_encoder_and_its_gradients(units):
    """Training runs ``BiLSTM.forward``; the Keras model is what is saved and exported. They
    must be one function of the weights: same outputs, same gradients (vectors included),
    for any number of layers."""
    import tensorflow as tf

    from siamsearch.architectures import EMBEDDING_LAYER, BiLSTM, EncoderConfig
    from siamsearch.export import probe_ids
    from siamsearch.model import build_encoder

    config = EncoderConfig(vocab_size=50, embedding_dim=12, max_length=40, architecture=BiLSTM(units))
    model = build_encoder(config)
    embedding = model.get_layer(EMBEDDING_LAYER)
    rng = np.random.default_rng(1)
    embedding.set_weights([rng.normal(size=(50, 12)).astype(np.float32)])
    embedding.trainable = True
    model.set_weights([w + rng.normal(0, 0.3, size=w.shape).astype(np.float32) for w in model.get_weights()])
    ids = probe_ids(config)[::-1]  # rows of 40 down to 1 characters, right-padded
    weights = tf.constant(rng.normal(size=(len(ids), config.output_dim)).astype(np.float32))

    def value_and_gradients(forward):
        with tf.GradientTape() as tape:
            out = forward(ids)
            loss = tf.reduce_sum(out * weights)
        return out.numpy(), [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)]

    keras_out, keras_grads = value_and_gradients(lambda x: model(x, training=False))
    out, grads = value_and_gradients(lambda x: config.architecture.forward(model, x))
    assert len(model.trainable_variables) == 1 + len(units) * 2 * 3  # vectors; BiLSTMs × 2 directions × (W, U, b)
    np.testing.assert_allclose(out, keras_out, atol=1e-5)
    for got, want, variable in zip(grads, keras_grads, model.trainable_variables):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4, err_msg=variable.path)


def test_on_a_gpu_training_computes_what_the_cpu_computes():
    """With a GPU, ``BiLSTM.forward`` hands over to Keras's layers (cuDNN's fused kernels): the
    vectors and gradients must be those of the CPU's own forward pass. Runs only where
    TensorFlow sees a GPU (none here: CI and the lent GPU machines have no TensorFlow GPU build)."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        pytest.skip("TensorFlow sees no GPU here; this compares cuDNN's LSTMs with the CPU path")
    from siamsearch.architectures import BiLSTM, EncoderConfig
    from siamsearch.export import probe_ids
    from siamsearch.model import build_encoder

    config = EncoderConfig(vocab_size=50, embedding_dim=12, max_length=40, architecture=BiLSTM((8, 4)))
    ids = probe_ids(config)
    results = {}
    for device in ("/CPU:0", gpus[0].name):
        with tf.device(device):
            tf.keras.utils.set_random_seed(3)
            model = build_encoder(config)
            with tf.GradientTape() as tape:
                out = config.architecture.forward(model, ids)
                loss = tf.reduce_sum(out * out)
            results[device] = (np.asarray(out), [np.asarray(g) for g in tape.gradient(loss, model.trainable_variables)])
    (cpu, cpu_grads), (gpu, gpu_grads) = results.values()
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)
    for got, want in zip(gpu_grads, cpu_grads):
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3)


def test_contrastive_trains_on_positive_pairs_and_records_its_settings():
    pairs = read_pairs(SAMPLE_PAIRS)
    encoder = train(pairs, pairs, TrainConfig(epochs=3, objective="contrastive", temperature=0.5, patience=1, seed=4,
                                              dropout=0.25))
    assert encoder.config.dropout == 0.25
    assert encoder.training["settings"]["objective"] == "contrastive"
    assert encoder.training["pairs"]["used"] == int((pairs.labels >= 0.5).sum()) < len(pairs)
    assert encoder.training["settings"]["temperature"] == 0.5
    val_losses = [h["val_loss"] for h in encoder.history]
    assert encoder.training["epoch_kept"] == 1 + int(np.argmin(val_losses))


def test_margin_learns_its_margin_and_without_validation_decides_at_it():
    pairs = read_pairs(SAMPLE_PAIRS)
    encoder = train(pairs, None, TrainConfig(epochs=2, objective="margin", hard_negatives=1, seed=4))
    learned = encoder.training["learned"]
    assert learned["margin"] != 5.0 and learned["scale"] != 1.0  # both moved from their starting values
    assert encoder.threshold == pytest.approx(np.exp(-learned["margin"]))
    assert encoder.training["pairs"]["used"] == len(pairs)  # every labelled pair, not just the positives


def test_early_stopping_on_validation_auc_keeps_the_epoch_of_the_highest_auc():
    pairs = read_pairs(SAMPLE_PAIRS)
    encoder = train(pairs, pairs, TrainConfig(epochs=3, objective="margin", monitor="val_auc", patience=1,
                                              average=0.9, seed=4))
    assert encoder.training["settings"]["monitor"] == "val_auc"
    assert not encoder.training["weights_averaged"]  # 3 epochs × 2 batches, and 0.9 needs 50 steps
    assert encoder.training["epoch_kept"] == 1 + int(np.argmax([h["val_auc"] for h in encoder.history]))
    with pytest.raises(InputError, match="both positive and negative"):
        train(pairs, pairs.subset(pairs.labels >= 0.5), TrainConfig(epochs=1, monitor="val_auc", patience=1))


def test_weights_are_averaged_only_over_enough_training_steps():
    """An average over few steps would keep mostly the first step's weights: below
    AVERAGE_MIN_SPAN spans of 1 / (1 - momentum) steps it is left off."""
    from siamsearch.training import AVERAGE_MIN_SPAN, applied_average

    config = TrainConfig(average=0.9)
    assert applied_average(config, steps=10 * AVERAGE_MIN_SPAN) == 0.9
    assert applied_average(config, steps=10 * AVERAGE_MIN_SPAN - 1) == 0.0
    assert applied_average(TrainConfig(), steps=10**6) == 0.0
    pairs = read_pairs(SAMPLE_PAIRS)  # 1,000 pairs: 4 batches of 256 an epoch
    encoder = train(pairs, None, TrainConfig(epochs=13, batch_size=256, average=0.9, seed=4))
    assert encoder.training["weights_averaged"]


@pytest.mark.parametrize("bad", [{"objective": "triplet"}, {"temperature": 0}, {"patience": -1}, {"dropout": 1},
                                 {"hard_negatives": -1}, {"hard_negatives": 1, "objective": "bce"},
                                 {"char_mask": 1}, {"char_mask": -0.1}, {"monitor": "val_accuracy"},
                                 {"average": 1}, {"average": -0.5}])
def test_bad_training_settings_are_refused(bad):
    """Each with one line naming the argument, as the library's rule is, never a CLI flag."""
    with pytest.raises(InputError) as refused:
        TrainConfig(**bad)
    assert refused.value.argument in bad and "--" not in str(refused.value)


@pytest.mark.parametrize("group_shared", [False, True])
def test_batches_encode_each_distinct_sentence_once_and_cover_every_pair_once(group_shared):
    from siamsearch.batching import PairIds, epoch_batches
    from siamsearch.text import Vocabulary

    pairs = read_pairs(SAMPLE_PAIRS)
    vocab = Vocabulary.fit(pairs.left + pairs.right)
    table, rng = PairIds.of(pairs, vocab, 100), np.random.default_rng(3)
    for _ in range(2):  # two epochs: each re-draws the order, and still covers every pair exactly once
        seen = []
        for (sentences, left, right, *_), labels in epoch_batches(table, 8, rng, group_shared=group_shared):
            assert len({tuple(row) for row in sentences}) == len(sentences)  # no sentence encoded twice
            unpad = [tuple(int(i) for i in row if i) for row in sentences]
            seen += [(unpad[a], unpad[b], float(y)) for a, b, y in zip(left, right, labels)]
        expected = [(tuple(vocab.ids(a, 100)), tuple(vocab.ids(b, 100)), float(y))
                    for a, b, y in zip(pairs.left, pairs.right, pairs.labels)]
        assert sorted(seen) == sorted(expected)


def test_the_training_loop_trains_every_batch_stops_early_and_restores_the_best_epoch():
    """fit drives Keras's callbacks as fit did: EarlyStopping stops the loop and puts back
    the weights of the epoch with the lowest val_loss."""
    import keras

    from siamsearch.architectures import EncoderConfig
    from siamsearch.batching import PairIds, epoch_batches
    from siamsearch.model import build_encoder
    from siamsearch.text import Vocabulary
    from siamsearch.trainer import Trainer, fit

    pairs = read_pairs(SAMPLE_PAIRS)
    vocab = Vocabulary.fit(pairs.left + pairs.right)
    keras.utils.set_random_seed(1)
    config = EncoderConfig(vocab_size=len(vocab), embedding_dim=8, max_length=100, dropout=0.5)
    trainer = Trainer(build_encoder(config), config.architecture, "bce", 1.0)
    trainer.compile(optimizer=keras.optimizers.Nadam(0.01))
    table, rng = PairIds.of(pairs, vocab, 100), np.random.default_rng(0)
    weights = []

    class FixedValidation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = [3.0, 1.0, 2.0, 4.0, 0.5, 0.1][epoch]  # lowest at epoch 2, then 2 epochs worse
            weights.append(trainer.get_weights())

    fit(trainer, lambda rng: epoch_batches(table, 16, rng), 6,
        [FixedValidation(), keras.callbacks.EarlyStopping("val_loss", patience=2, restore_best_weights=True)], rng)
    assert len(weights) == 4
    assert int(trainer.optimizer.iterations) == 4 * -(-len(pairs) // 16)  # one step for every batch of every epoch
    assert not all(np.array_equal(a, b) for a, b in zip(weights[1], weights[3]))
    assert all(np.array_equal(a, b) for a, b in zip(trainer.get_weights(), weights[1]))


def test_averaging_shows_the_moving_average_after_each_epoch_and_trains_on_from_the_steps_weights():
    """With average = m, what an epoch's end sees (validation, early stopping, the saved model)
    is the average a = m·a + (1 - m)·w over every step's weights w so far (the first step's to
    start), and the next epoch's first step starts from the last step's own weights."""
    import keras

    from siamsearch.architectures import EncoderConfig
    from siamsearch.batching import PairIds, epoch_batches
    from siamsearch.model import build_encoder
    from siamsearch.text import Vocabulary
    from siamsearch.trainer import AveragedWeights, Trainer, fit

    pairs = read_pairs(SAMPLE_PAIRS)
    vocab = Vocabulary.fit(pairs.left + pairs.right)
    keras.utils.set_random_seed(2)
    config = EncoderConfig(vocab_size=len(vocab), embedding_dim=8, max_length=100, dropout=0.5)
    trainer = Trainer(build_encoder(config), config.architecture, "bce", 1.0)
    trainer.compile(optimizer=keras.optimizers.Nadam(0.01, use_ema=True, ema_momentum=0.5))
    table, rng = PairIds.of(pairs, vocab, 100), np.random.default_rng(0)
    before, after, at_epoch_end = [], [], []

    def weights():
        return [v.numpy() for v in trainer.trainable_variables]

    def batches(rng):
        for batch in epoch_batches(table, 16, rng):
            before.append(weights())
            yield batch
            after.append(weights())  # runs once the step on this batch is done

    class Seen(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            at_epoch_end.append((len(after), weights()))

    fit(trainer, batches, 2, [AveragedWeights(trainer), Seen()], rng)
    steps = len(after) // 2
    assert steps > 1
    for done, seen in at_epoch_end:
        average = after[0]
        for w in after[1:done]:
            average = [0.5 * a + 0.5 * x for a, x in zip(average, w)]
        for s, a in zip(seen, average):
            np.testing.assert_allclose(s, a, rtol=1e-5, atol=1e-6)
        assert not all(np.allclose(s, last) for s, last in zip(seen, after[done - 1]))
    assert all(np.array_equal(b, a) for b, a in zip(before[steps], after[steps - 1]))


@pytest.mark.parametrize("objective", ["bce", "both", "contrastive", "margin"])
def test_validation_equals_the_loss_of_each_pair_batch_encoded_on_its_own(objective):
    """Validation encodes every distinct sentence once for all batches; its loss, ROC-AUC and
    accuracy must be those of encoding each batch's sentences by themselves, as evaluate()
    would. Accuracy at 0.5 is reported only where the objective fits scores to the labels."""
    import keras
    from sklearn.metrics import roc_auc_score

    from siamsearch.architectures import EncoderConfig
    from siamsearch.batching import PairIds
    from siamsearch.model import build_encoder
    from siamsearch.text import Vocabulary, pad
    from siamsearch.trainer import Trainer, Validation

    pairs = read_pairs(SAMPLE_PAIRS)
    vocab = Vocabulary.fit(pairs.left + pairs.right)
    keras.utils.set_random_seed(1)
    config = EncoderConfig(vocab_size=len(vocab), embedding_dim=8, max_length=100, dropout=0.5)
    trainer = Trainer(build_encoder(config), config.architecture, objective, 0.5)
    table = PairIds.of(pairs, vocab, 100)
    validation = Validation(trainer, table, batch_size=16)
    logs = {}
    validation.on_epoch_end(0, logs)

    losses, correct, scores = [], 0, np.empty(len(pairs))
    for b in validation.pair_batches:
        left, right = (validation.encode(pad([table.ids[i] for i in side[b]])) for side in (table.left, table.right))
        loss, score = trainer.objective_loss(left, right, table.labels[b], table.groups[table.left[b]],
                                             table.groups[table.right[b]])
        losses.append(float(loss))
        scores[b] = score
        correct += int(np.sum((np.asarray(score) > 0.5) == (table.labels[b] >= 0.5)))
    assert sorted(np.concatenate(validation.pair_batches)) == list(range(len(pairs)))
    assert logs["val_loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert logs["val_auc"] == pytest.approx(roc_auc_score(table.labels >= 0.5, scores), rel=1e-6)
    if objective in ("contrastive", "margin"):
        assert "val_accuracy" not in logs and "accuracy" not in {m.name for m in trainer.metrics}
    else:
        assert logs["val_accuracy"] == correct / len(pairs)


def test_presets_recipe_is_the_default_and_general_is_the_shipped_models_settings():
    import json

    from siamsearch import PRESETS
    from siamsearch.encoder import DEFAULT_MODEL

    assert PRESETS["recipe"] == TrainConfig()
    shipped = json.loads((DEFAULT_MODEL / "config.json").read_text())["training"]
    assert TrainConfig(**shipped["settings"]) == PRESETS["general"]
    assert shipped["teacher"]["name"] == "use-m3"


def test_the_command_line_offers_exactly_the_presets_objectives_and_settings():
    """The command line names its choices itself (importing training would import TensorFlow)."""
    from dataclasses import fields

    from siamsearch import PRESETS
    from siamsearch.cli import train as train_command
    from siamsearch.training import MONITORS, OBJECTIVES

    options = {p.name: p for p in train_command.params}
    assert list(options["preset"].type.choices) == list(PRESETS)
    assert list(options["objective"].type.choices) == list(OBJECTIVES)
    assert list(options["monitor"].type.choices) == list(MONITORS)
    assert {f.name for f in fields(TrainConfig)} - set(options) == {"embedding_dim", "learning_rate"}


def test_hard_negatives_are_labelled_negatives_of_the_pairs_group_and_no_longer_than_its_batch():
    """Each pair's hard negative is a sentence labelled "not the same" as some member of its
    paraphrase group (never one of the group), short enough not to widen the batch."""
    from siamsearch.batching import PairIds
    from siamsearch.data import Pairs
    from siamsearch.text import RESERVED, Vocabulary

    rows = [("aa", "ab", 1), ("ab", "ac", 1), ("ba", "bb", 1),  # groups {aa, ab, ac} and {ba, bb}
            ("aa", "xxxx", 0), ("ac", "y", 0), ("ab", "ba", 0),  # the first group's negatives: xxxx, y, ba
            ("bb", "z", 0), ("aa", "ac", 0)]  # the second's: ab, z; aa-ac contradicts the positives: skipped
    pairs = Pairs(*map(list, zip(*[(a, b) for a, b, _ in rows])), np.array([y for *_, y in rows], np.float32))
    vocab = Vocabulary.fit(pairs.left + pairs.right)
    positives = pairs.subset(pairs.labels >= 0.5)
    table = PairIds.of(positives, vocab, 100, negatives=pairs)
    texts = list(dict.fromkeys(positives.left + positives.right))
    text_of = lambda row: "".join(vocab.chars[i - RESERVED] for i in table.ids[row])  # noqa: E731
    assert texts == [text_of(i) for i in range(len(texts))]  # the pairs' own rows come first, as without negatives
    rng = np.random.default_rng(0)
    drawn = {0: set(), 2: set()}
    for _ in range(200):
        for pair in (0, 2):
            drawn[pair] |= {text_of(r) for r in table.draw_hard_negatives(np.array([pair]), rng)}
    assert drawn == {0: {"y", "ba"}, 2: {"ab", "z"}}  # xxxx is longer than pair 0's batch
    assert {text_of(r) for _ in range(200) for r in table.draw_hard_negatives(np.array([0, 1]), rng)} \
        == {"y", "ba"}
    assert len(table.draw_hard_negatives(np.array([0, 2]), rng)) == 2  # one a pair, while each has some


def test_char_mask_hides_a_share_of_the_characters_and_nothing_else():
    """One epoch's batches with and without the mask (same seed: the same pairs, in the same
    order): masked batches differ only where a character became the unknown-character id."""
    from siamsearch.batching import PairIds, epoch_batches
    from siamsearch.text import OOV_ID, Vocabulary

    pairs = read_pairs(SAMPLE_PAIRS)
    vocab = Vocabulary.fit(pairs.left + pairs.right)
    table = PairIds.of(pairs, vocab, 100)
    plain = list(epoch_batches(table, 32, np.random.default_rng(5)))
    masked = list(epoch_batches(table, 32, np.random.default_rng(5), char_mask=0.3))
    changed = characters = 0
    for ((ids, *rows), labels), ((masked_ids, *masked_rows), masked_labels) in zip(plain, masked, strict=True):
        for a, b in zip(rows + [labels], masked_rows + [masked_labels]):
            np.testing.assert_array_equal(a, b)
        differs = ids != masked_ids
        assert np.all(masked_ids[differs] == OOV_ID) and np.all(ids[differs] > OOV_ID)
        changed, characters = changed + differs.sum(), characters + (ids > 0).sum()
    assert 0.27 < changed / characters < 0.33
