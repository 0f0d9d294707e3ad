import pytest
import torch

from vae.training import (TrainingDiverged, batches, evaluate, kl_weight, learning_rate, load_model,
                          save_model, train)

TCFG = {"optimizer": "adam", "lr": 1e-3, "lr_schedule": "constant", "kl_warmup_epochs": 0, "free_bits": 0.0, "epochs": 2, "batch_size": 32, "seed": 0,
        "grad_clip": None, "logvar_clamp": None, "precision": "fp32", "channels_last": True, "device": "cpu"}
CFG = {"hidden": 16}


def data(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g)


def run(tmp_path, tcfg=TCFG, fp="fp", name="ckpt.pt", x=None):
    x = data() if x is None else x
    return train("simple_mlp-2", "simple_mlp", 2, CFG, tcfg, x, data(50, 1), checkpoint=tmp_path / name,
                 log_dir=tmp_path / "logs", eval_seed=1, eval_batch_size=25, fp=fp)


def test_batches_cover_every_index_once_with_a_short_last_batch():
    parts = batches(10, 4, torch.Generator().manual_seed(0))
    assert [len(p) for p in parts] == [4, 4, 2]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))


def test_training_is_deterministic(tmp_path):
    m1, h1 = run(tmp_path, name="a.pt")
    m2, h2 = run(tmp_path, name="b.pt")
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in h1] == \
           [{k: v for k, v in r.items() if k != "seconds"} for r in h2]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert h1[-1]["test_total"] < h1[0]["train_total"]


def test_resume_from_epoch_checkpoint_matches_uninterrupted_run(tmp_path):
    full, h_full = run(tmp_path, name="full.pt")
    run(tmp_path, {**TCFG, "epochs": 1}, name="part.pt")
    resumed, h_res = run(tmp_path, name="part.pt")
    assert len(h_res) == 2
    assert [r["test_total"] for r in h_res] == [r["test_total"] for r in h_full]
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))


def test_checkpoint_with_other_fingerprint_is_not_resumed(tmp_path, capsys):
    run(tmp_path, {**TCFG, "epochs": 1}, fp="old")
    _, h = run(tmp_path, fp="new")
    assert "ignoring" in capsys.readouterr().out and len(h) == 2


def test_nan_loss_stops_with_run_epoch_step_and_fix(tmp_path):
    x = data()
    x[70] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"simple_mlp-2: loss is nan at epoch 1, step \d+; try a lower lr"):
        run(tmp_path, x=x)


def test_saved_model_reloads_and_refuses_another_run(tmp_path):
    model, _ = run(tmp_path, {**TCFG, "epochs": 1})
    save_model(tmp_path / "m.pt", model, "simple_mlp", 2, CFG, {"epochs": 1, "parameters": 1})
    loaded, state = load_model(tmp_path / "m.pt", "simple_mlp", 2)
    x = data(50, 1)
    assert evaluate(loaded, x, 25, 1) == evaluate(model, x, 25, 1)
    with pytest.raises(RuntimeError, match="holds a simple_mlp model with z=2, expected conv with z=2"):
        load_model(tmp_path / "m.pt", "conv", 2)
    (tmp_path / "bad.pt").write_bytes((tmp_path / "m.pt").read_bytes()[:100])
    with pytest.raises(RuntimeError, match="not a readable checkpoint"):
        load_model(tmp_path / "bad.pt", "simple_mlp", 2)


def test_device_auto_falls_back_to_cpu_and_cuda_is_checked():
    from vae.training import resolve_device
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


def test_bf16_and_channels_last_options_train(tmp_path):
    _, h = run(tmp_path, {**TCFG, "epochs": 1, "precision": "bf16", "channels_last": False})
    assert all(torch.isfinite(torch.tensor(v)) for v in h[-1].values())


def test_cosine_lr_falls_from_lr_to_zero_and_constant_stays():
    cos = {**TCFG, "lr": 1e-3, "lr_schedule": "cosine"}
    assert learning_rate(cos, 0, 100) == pytest.approx(1e-3)
    assert learning_rate(cos, 50, 100) == pytest.approx(5e-4)
    assert learning_rate(cos, 99, 100) < 1e-6
    assert all(learning_rate(cos, s, 100) >= learning_rate(cos, s + 1, 100) for s in range(99))
    assert {learning_rate(TCFG, s, 100) for s in range(100)} == {TCFG["lr"]}


def test_kl_warmup_ramps_linearly_then_holds_at_one():
    warm = {**TCFG, "kl_warmup_epochs": 2}
    w = [kl_weight(warm, s, 10) for s in range(30)]
    assert w[0] == pytest.approx(0.05) and w[9] == pytest.approx(0.5) and w[19] == 1.0 and w[29] == 1.0
    assert all(a < b for a, b in zip(w[:19], w[1:20]))
    assert {kl_weight(TCFG, s, 10) for s in range(30)} == {1.0}


def test_remedies_are_logged_per_epoch_and_reported_losses_stay_the_elbo(tmp_path):
    tuned = {**TCFG, "epochs": 3, "lr_schedule": "cosine", "kl_warmup_epochs": 2, "free_bits": 0.5}
    model, history = run(tmp_path, tuned)
    assert [round(h["kl_weight"], 6) for h in history] == [0.5, 1.0, 1.0]
    assert history[0]["lr"] > history[1]["lr"] > history[2]["lr"] >= 0
    # What is reported is the plain negative ELBO, not the objective with warm-up or free bits.
    assert history[-1]["test_total"] == pytest.approx(evaluate(model, data(50, 1), 25, 1)["total"])
    for h in history:
        assert h["train_total"] == pytest.approx(h["train_recon"] + h["train_kl"])
