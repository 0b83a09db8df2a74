"""A global MLP forecaster in torch, trained across every series of a panel at once.

N-BEATS-style direct multi-horizon regression: the last ``lags`` values of a series, as
departures from the last of them and in units of the series' typical one-period change, go
through a small MLP that outputs the next ``horizon`` values' departures from that same last
value. One network serves every series, so it learns from all of them; anchoring each window
on its last value lets it follow series that wander (a random walk) beyond the range it saw.

Its own intervals are Gaussian with the network's in-sample error spread per horizon step
(pooled over series, in scaled units): too narrow, as in-sample errors are. The conformal
calibration every model gets (``forecasting/calibration.py``) replaces their width with one
from a second network, trained without the last origins, forecasting from them: its training
targets end where the calibration targets begin. Deterministic under ``random_state`` on a
given device; runs on CUDA when available (``device="auto"``), on CPU otherwise.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import numpy as np

from pefm.forecasting.base import BaseForecaster, Bounds, ForecastInputError, normal_bounds, require_int, require_number

log = logging.getLogger(__name__)


class GlobalMLP(BaseForecaster):
    name = "mlp"
    multivariate = True
    min_length = 24

    @property
    def max_horizon(self) -> int:  # type: ignore[override]
        return self.horizon

    def __init__(
        self,
        lags: int = 8,
        horizon: int = 8,
        hidden: int = 128,
        depth: int = 2,
        epochs: int = 150,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        random_state: int = 0,
        device: str = "auto",
    ):
        self.lags = lags
        self.horizon = horizon
        self.hidden = hidden
        self.depth = depth
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.random_state = random_state
        self.device = device

    def check_params(self) -> None:
        for label in ("lags", "horizon", "hidden", "depth", "epochs", "batch_size"):
            require_int(self.name, label, getattr(self, label), 1)
        require_int(self.name, "random_state", self.random_state, 0)
        require_number(self.name, "learning_rate", self.learning_rate, 0, open_low=True)
        require_number(self.name, "weight_decay", self.weight_decay, 0, open_low=False)
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ForecastInputError(f"{self.name}: device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")

    # -- fit -----------------------------------------------------------------------------------
    def _fit(self, values: np.ndarray) -> None:
        n = values.shape[0]
        need = self.lags + self.horizon + 4
        if n < need:
            raise ForecastInputError(f"mlp needs at least {need} points with these settings, got {n}")
        self.device_ = _pick_device(self.device)
        self.scale_ = np.diff(values, axis=0).std(axis=0)
        self.scale_[self.scale_ == 0] = 1.0
        x, y = _windows(values / self.scale_, self.lags, self.horizon)
        self.net_ = self._train(x, y)
        self.spread_ = np.sqrt(np.mean((self._forward(self.net_, x) - y) ** 2, axis=0))  # (horizon,)
        self.recent_ = values[-self.lags :].copy()  # (lags, series)

    def _train(self, x: np.ndarray, y: np.ndarray):
        import torch

        generator = torch.Generator().manual_seed(self.random_state)
        net = _network(self.lags, self.horizon, self.hidden, self.depth, generator).to(self.device_)
        xt = torch.as_tensor(x, dtype=torch.float32, device=self.device_)
        yt = torch.as_tensor(y, dtype=torch.float32, device=self.device_)
        optimizer = torch.optim.AdamW(net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        loss_fn = torch.nn.MSELoss()
        batches = max(1, math.ceil(len(xt) / self.batch_size))
        net.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(xt), generator=generator).to(self.device_)
            for b in range(batches):
                idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                optimizer.zero_grad()
                loss = loss_fn(net(xt[idx]), yt[idx])
                loss.backward()
                optimizer.step()
        net.eval()
        return net

    def _forward(self, net, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = net(torch.as_tensor(x, dtype=torch.float32, device=self.device_))
        return out.cpu().numpy().astype("float64")

    def _update(self, values: np.ndarray) -> None:
        self.recent_ = np.asarray(values[-self.lags :], dtype="float64").reshape(self.lags, -1).copy()

    # -- predict -------------------------------------------------------------------------------
    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, Bounds]:
        return self.forecast_from(self.recent_, h, levels)

    def forecast_from(self, recent: np.ndarray, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, Bounds]:
        """Forecast from the given last ``lags`` values (rows: time, columns: the fitted series)."""
        if h > self.horizon:
            raise ForecastInputError(f"mlp forecasts at most {self.horizon} steps (its horizon), not {h}", "horizon")
        recent = np.asarray(recent, dtype="float64").reshape(-1, len(self.scale_))
        if len(recent) < self.lags:
            raise ForecastInputError(f"mlp needs the last {self.lags} values, got {len(recent)}")
        last = recent[-1]
        window = ((recent[-self.lags :] - last) / self.scale_).T  # (series, lags)
        scaled = self._forward(self.net_, window)[:, :h]  # (series, h)
        mean = (scaled * self.scale_[:, None]).T + last  # (h, series)
        return mean, normal_bounds(mean, self.spread_[:h, None] * self.scale_[None, :], levels)

    # -- pickling: always store CPU tensors so a GPU-trained model loads anywhere --------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if "net_" in state:
            state["net_"] = {k: v.detach().cpu() for k, v in state["net_"].state_dict().items()}
            state.pop("device_", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        weights = state.pop("net_", None)
        self.__dict__.update(state)
        if weights is not None:
            import torch

            self.device_ = _loadable_device(self.device)  # a GPU-trained model loads anywhere
            net = _network(self.lags, self.horizon, self.hidden, self.depth, torch.Generator())
            net.load_state_dict(weights)
            self.net_ = net.to(self.device_).eval()


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _loadable_device(device: str) -> str:
    """Where a saved model runs here: its device, unless this machine lacks it (no MPS, no CUDA,
    or fewer GPUs than its index): then what ``auto`` picks, as its weights load anywhere."""
    import torch

    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        present = torch.cuda.is_available() and index < torch.cuda.device_count()
    elif device == "mps":
        present = torch.backends.mps.is_available()
    else:  # cpu, auto
        present = True
    if present:
        return _pick_device(device)
    here = _pick_device("auto")
    log.info("mlp: the model was saved for device %s, which this machine lacks: it runs on %s", device, here)
    return here


def _network(lags: int, horizon: int, hidden: int, depth: int, generator):
    import torch

    layers: list[torch.nn.Module] = []
    width = lags
    for _ in range(depth):
        layers += [torch.nn.Linear(width, hidden), torch.nn.ReLU()]
        width = hidden
    layers.append(torch.nn.Linear(width, horizon))
    net = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, torch.nn.Linear):
                bound = 1 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
    return net


def _windows(scaled: np.ndarray, lags: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (input, target) pair of every series, both as departures from the input's last value."""
    n = scaled.shape[0]
    origins = np.arange(lags, n - horizon + 1)
    last = scaled[origins - 1][:, None, :]  # (windows, 1, k)
    x = np.stack([scaled[o - lags : o] for o in origins]) - last  # (windows, lags, k)
    y = np.stack([scaled[o : o + horizon] for o in origins]) - last  # (windows, horizon, k)
    return x.transpose(2, 0, 1).reshape(-1, lags), y.transpose(2, 0, 1).reshape(-1, horizon)
