"""Faults provoked for real: crashes mid-write, tampered checkpoints, divergence guards."""
import os
import pickle

import pytest
import torch

from vae import io
from vae.data import MIRROR_ENV, DataError, download
from vae.training import TrainingDiverged, load_checkpoint, train
from tests.test_training import CFG, TCFG, data


def test_crash_mid_write_leaves_previous_file_intact(tmp_path):
    target = tmp_path / "m.json"
    io.write_json(target, {"total": 1.0})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text('{"total": 2')  # half-written
            raise RuntimeError("killed")
    assert target.read_text() == '{\n  "total": 1.0\n}\n'
    assert os.listdir(tmp_path) == ["m.json"]  # no temp file left behind


def test_non_finite_metrics_are_never_written(tmp_path):
    with pytest.raises(ValueError, match=r"\$.test.kl is nan"):
        io.write_json(tmp_path / "m.json", {"test": {"kl": float("nan")}})
    assert not (tmp_path / "m.json").exists()


def test_failed_download_leaves_no_manifest_and_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)  # offline, no local mirror configured
    out = tmp_path / "mnist"
    with pytest.raises(DataError, match=r"VAE_MNIST_MIRROR") as e:
        download(out, {"dataset": "mnist", "mirrors": ["http://127.0.0.1:9/"], "local_mirror": None,
                       "retries": 1, "timeout_s": 1}, backoff=0)
    assert "train-images-idx3-ubyte.gz" in str(e.value) and "127.0.0.1:9" in str(e.value)
    assert not (out / "manifest.json").exists()


class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_tampered_checkpoint_cannot_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path, pickle_module=pickle)
    with pytest.raises(RuntimeError, match="not a readable checkpoint"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


def test_guards_keep_a_diverging_run_finite(tmp_path):
    # Inputs scaled by 1e4 drive the encoder's logvar past 88, where exp() overflows
    # float32: the loss is inf at the first step. The clamp and clipping hold it.
    x = data() * 1e4
    hot = {**TCFG, "lr": 1.0, "epochs": 1}
    with pytest.raises(TrainingDiverged, match=r"loss is (nan|inf) at epoch 1, step 0"):
        train("simple_mlp-2", "simple_mlp", 2, CFG, hot, x, data(50, 1), checkpoint=tmp_path / "a.pt",
              log_dir=tmp_path / "la", eval_seed=1, eval_batch_size=25, fp="a")
    guarded = {**hot, "grad_clip": 1.0, "logvar_clamp": 10.0}
    _, h = train("simple_mlp-2", "simple_mlp", 2, CFG, guarded, x, data(50, 1), checkpoint=tmp_path / "b.pt",
                 log_dir=tmp_path / "lb", eval_seed=1, eval_batch_size=25, fp="b")
    assert all(torch.isfinite(torch.tensor(v)) for v in h[-1].values())
