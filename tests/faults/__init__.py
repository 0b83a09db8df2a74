"""Test-only fault injection (see sitecustomize.py)."""

from pathlib import Path

FOLDER = Path(__file__).parent


def _env(service_path: str | Path, variable: str, value: float) -> dict[str, str]:
    """This folder first on PYTHONPATH (its sitecustomize installs the fault ``variable`` names),
    then the function's own folder."""
    return {"PYTHONPATH": f"{FOLDER}:{service_path}", variable: f"{value:g}"}


def faulty_env(service_path: str | Path, rate: float) -> dict[str, str]:
    """The environment of a revision that fails a ``rate`` share of its /v1 requests."""
    return _env(service_path, "PEFM_FAULT_RATE", rate)


def skewed_env(service_path: str | Path, skew: float) -> dict[str, str]:
    """The environment of a revision that adds ``skew`` to every forecast it answers."""
    return _env(service_path, "PEFM_FAULT_SKEW", skew)


def late_env(service_path: str | Path, seconds: float) -> dict[str, str]:
    """The environment of a revision that starts re-conditioning on new data ``seconds`` late."""
    return _env(service_path, "PEFM_FAULT_CATCHUP_DELAY", seconds)
