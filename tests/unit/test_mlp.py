"""Loading a saved MLP on a machine without the device it was saved for."""

import logging

import numpy as np
import pandas as pd
import pytest

from pefm.forecasting.models import make_model


@pytest.mark.parametrize("device", ["mps", "cuda:99"])
def test_an_mlp_saved_for_a_device_this_machine_lacks_loads_where_auto_would_run_it(device, caplog):
    """Only a `cuda*` device fell back, and only where there was no CUDA at all: a model trained on
    a Mac (`mps`) or on a second GPU (`cuda:1`) could not be loaded on a CPU or one-GPU machine."""
    import torch

    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS: nothing falls back")
    rng = np.random.default_rng(5)
    y = pd.Series(rng.normal(size=120).cumsum(), index=pd.date_range("2000-01-01", periods=120, freq="MS"))
    model = make_model("mlp", epochs=2, hidden=8, device="cpu").fit(y)
    expected = model.predict(2)
    model.device = device  # as trained there
    with caplog.at_level(logging.INFO, logger="pefm.forecasting.models.mlp"):
        restored = type(model).from_bytes(model.to_bytes())
    here = "cuda" if torch.cuda.is_available() else "cpu"
    assert restored.device_ == here
    assert f"saved for device {device}, which this machine lacks: it runs on {here}" in caplog.text
    pd.testing.assert_frame_equal(restored.predict(2), expected, atol=1e-4)  # a GPU sums float32 otherwise
