"""Training that survives its process: a stop mid-run, then a resume, reaches the weights an
uninterrupted run reaches (same seed), for the settings whose state is the hardest to carry
over: averaged weights, early stopping with its best epoch, masked characters, a teacher."""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import numpy as np
import pytest

from siamsearch import InputError, TrainConfig, read_pairs, train
from siamsearch.checkpoint import CHECKPOINT, TrainingInterrupted
from siamsearch.demo import SAMPLE_PAIRS

from .conftest import CharTeacher

CONFIG = TrainConfig(epochs=3, batch_size=64, objective="margin", char_mask=0.2, average=0.9, patience=2,
                     monitor="val_auc", seed=5)


def weights(encoder) -> list[np.ndarray]:
    return encoder.keras_model().get_weights()


def stop_at(epoch: int, batch: int | None):
    """A progress callback that asks the process to stop (SIGTERM to itself) after batch
    ``batch`` of epoch ``epoch`` (from 0; None: its last batch)."""
    seen = {"n": 0}

    def progress(stage: str, n: int, total: int) -> None:
        seen["n"] += n
        if seen["n"] == epoch * total + (total if batch is None else batch):
            os.kill(os.getpid(), signal.SIGTERM)

    return progress


@pytest.fixture(scope="module")
def data():
    pairs = read_pairs(SAMPLE_PAIRS)
    return pairs.subset(slice(0, 400)), pairs.subset(slice(400, 600))


@pytest.fixture(scope="module")
def uninterrupted(data):
    pairs, valid = data
    return train(pairs, valid, CONFIG, teacher=CharTeacher())


@pytest.mark.parametrize("epoch, batch", [(0, 3), (1, 9), (1, None)])  # mid-epoch in each, and an epoch end
def test_a_stopped_run_resumes_to_the_uninterrupted_result(data, uninterrupted, tmp_path, epoch, batch):
    pairs, valid = data
    handler = signal.getsignal(signal.SIGTERM)  # Ray's, when its tests ran first in this process
    with pytest.raises(TrainingInterrupted, match=f"its state is saved in {tmp_path}") as stopped:
        train(pairs, valid, CONFIG, teacher=CharTeacher(), checkpoint_dir=tmp_path, progress=stop_at(epoch, batch))
    assert stopped.value.epoch == epoch
    assert (tmp_path / CHECKPOINT).is_file()
    assert signal.getsignal(signal.SIGTERM) == handler  # the handler is put back
    resumed = train(pairs, valid, CONFIG, teacher=CharTeacher(), checkpoint_dir=tmp_path, resume=True)
    for got, want in zip(weights(resumed), weights(uninterrupted)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert resumed.fingerprint == uninterrupted.fingerprint or np.allclose(
        resumed.encode(pairs.left[:20]), uninterrupted.encode(pairs.left[:20]), atol=1e-5)
    assert [e["epoch"] for e in resumed.history] == [e["epoch"] for e in uninterrupted.history]
    assert resumed.training["epoch_kept"] == uninterrupted.training["epoch_kept"]
    sittings = resumed.training["sittings"]
    assert len(sittings) == 2 and sittings[0]["to_epoch"] == stopped.value.epoch == sittings[1]["from_epoch"]
    assert sittings[1]["to_epoch"] == len(resumed.history)


def test_resume_refuses_other_inputs_an_empty_folder_and_a_run_over_a_checkpoint(data, tmp_path):
    pairs, valid = data
    config = replace(CONFIG, epochs=1, patience=0, average=0.0)
    with pytest.raises(InputError, match="no training checkpoint to resume"):
        train(pairs, valid, config, checkpoint_dir=tmp_path / "none", resume=True)
    train(pairs, valid, config, checkpoint_dir=tmp_path / "ckpt")
    with pytest.raises(InputError, match="holds a checkpoint of an earlier run"):
        train(pairs, valid, config, checkpoint_dir=tmp_path / "ckpt")
    with pytest.raises(InputError, match="written for other training inputs"):
        train(pairs, valid, replace(config, seed=6), checkpoint_dir=tmp_path / "ckpt", resume=True)
    with pytest.raises(InputError, match="resume needs the checkpoint folder"):
        train(pairs, valid, config, resume=True)
    (tmp_path / "ckpt" / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="damaged checkpoint"):
        train(pairs, valid, config, checkpoint_dir=tmp_path / "ckpt", resume=True)


def test_the_cli_stops_on_ctrl_c_in_one_line_and_resumes_from_the_folder_alone(tmp_path):
    import subprocess
    import sys

    model, ckpt = tmp_path / "model", tmp_path / "ckpt"
    command = [sys.executable, "-m", "siamsearch", "train", str(SAMPLE_PAIRS), "--out", str(model), "--epochs", "8",
               "--checkpoint-dir", str(ckpt)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    lines = []
    for line in process.stderr:
        lines.append(line.rstrip("\n"))
        if line.startswith("epoch 1/8"):
            process.send_signal(signal.SIGINT)
    assert process.wait(timeout=300) == 1
    assert lines[-1].startswith("Error: training stopped at epoch ") and lines[-1].endswith(
        f"its state is saved in {ckpt}: continue with 'siamsearch train --resume {ckpt}'"), lines[-5:]
    assert not model.exists() and (ckpt / CHECKPOINT).is_file()
    done = subprocess.run([sys.executable, "-m", "siamsearch", "train", "--resume", str(ckpt)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    from siamsearch import Encoder

    training = Encoder.load(model).training
    assert len(training["sittings"]) == 2 and training["sittings"][-1]["to_epoch"] == 8
    again = subprocess.run([sys.executable, "-m", "siamsearch", "train", "--resume", str(ckpt), "--epochs", "2"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--resume continues a run with its own inputs and options" in again.stderr
