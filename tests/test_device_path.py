"""The torch engine path a GPU runs: on CPU here (the same code), and on CUDA when one is
visible: data and state resident on the device, no host synchronisation inside a step."""

from __future__ import annotations

import pytest
import torch
from planted import write_planted

from fmstore import datasets
from fmstore.config import TrainConfig
from fmstore.train import TorchEngine, train


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = write_planted(tmp_path_factory.mktemp("planted"))
    return datasets.load_dataset(folder)


CONFIG = dict(epochs=6, factors=8, lr=0.03, batch_size=256, weight_decay=0.02, patience=6)


def _no_host_sync(monkeypatch):
    """Make every host synchronisation the step could do an error: torch.unique (a
    data-dependent size), Tensor.item / tolist / float / int / bool of a tensor."""

    def refuse(*args, **kwargs):
        raise AssertionError("a host synchronisation inside the training step")

    monkeypatch.setattr(torch, "unique", refuse)
    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)


@pytest.mark.parametrize("batch_size", [32, 512])  # fewer ratings than rows; more
def test_the_torch_engine_step_never_waits_for_the_device(planted, monkeypatch, batch_size):
    """Whatever the step computes, it never needs a value back on the host (on a GPU: no
    synchronisation), for small batches (one row per rating) and large ones (every row); and it
    learns what the numba engine learns."""
    seen = []
    step = TorchEngine.step

    def checked_step(self, *args, **kwargs):
        with monkeypatch.context() as m:
            _no_host_sync(m)
            out = step(self, *args, **kwargs)
        seen.append(out.device)
        return out

    config = TrainConfig(**CONFIG | {"batch_size": batch_size})
    with monkeypatch.context() as m:
        m.setattr(TorchEngine, "step", checked_step)
        result = train(planted, config, engine="torch")
    assert seen
    assert result.history[-1].valid_rmse < result.history[0].valid_rmse
    reference = train(planted, config, engine="numba")
    assert result.metrics["valid_rmse"] == pytest.approx(reference.metrics["valid_rmse"], abs=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")
def test_on_cuda_data_and_state_stay_on_the_device_and_steps_do_not_sync(planted, monkeypatch):
    devices = []
    step = TorchEngine.step

    def checked_step(self, u, i, r, n=None):
        tensors = [u, i, r, self.users, self.items, self.ratings, self.model.v, self.opt.mv]
        devices.extend(t.device.type for t in tensors)
        torch.cuda.set_sync_debug_mode("error")  # a synchronising call raises
        try:
            return step(self, u, i, r, n)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(TorchEngine, "step", checked_step)
    result = train(planted, TrainConfig(**CONFIG | {"device": "cuda"}))
    assert result.device.startswith("cuda")
    assert devices and set(devices) == {"cuda"}
    assert result.metrics["valid_rmse"] < 1.0
