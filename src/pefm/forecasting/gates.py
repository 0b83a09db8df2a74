"""Validation gates: a declarative policy of statistical tests, candidate vs serving model, on the
SAME backtest windows.

The policy is a TOML file of rules (see gates.toml beside this module). Each rule is a test run
per series and forecast step, with its p-values Holm-adjusted over all the series and steps it
covers (the chance that an indistinguishable candidate is blocked by a rule stays at its alpha
for the whole panel). A candidate is compared with the serving model only on identical windows:
the same series, cutoffs and target dates, scored against the same actual values (so the same
data vintage); anything else is refused with ``MismatchedBacktests``. The verdict is a JSON-ready
report of every check with its statistic, p-values and reason, and the windows used. A check names
its series and ``step`` (the model's k-step forecast, counted along the forecast path as in
``backtest``), its ``metric`` by the backtest's per-step names (``rmse@h3``, ``winkler-95@h3``),
and its reason starts with ``<series> h=<step> (n=<windows>)``.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pefm.forecasting import metrics
from pefm.forecasting.backtest import steps

DEFAULT_POLICY = Path(__file__).with_name("gates.toml")
TESTS = {
    "diebold-mariano": {"alpha", "tolerance"},
    "interval-score": {"alpha", "tolerance", "level"},
    "sharpe": {"alpha", "cost"},
    "coverage": {"alpha", "level"},
}
RELATIVE = {"diebold-mariano", "interval-score", "sharpe"}
KEYS = ["series_id", "cutoff", "ds"]


class PolicyError(ValueError):
    """The gate policy file is malformed; the message names the rule and field."""


class MismatchedBacktests(ValueError):
    """The candidate's and the serving model's backtests do not cover the same windows or data."""


@dataclass(frozen=True)
class Rule:
    name: str
    test: str
    alpha: float = 0.05
    tolerance: float = 0.0
    """diebold-mariano, interval-score: block only when the candidate's loss (RMSE, mean interval
    score) is also over (1 + tolerance) x serving's."""
    level: int = 95
    """coverage, interval-score: the interval level tested."""
    cost: float = 0.05
    """sharpe: trading cost per unit of turnover, in the return series' units (percent: 5 bp)."""


def load_policy(path: Path | None = None) -> list[Rule]:
    """The rules in ``path`` (default: the policy shipped with PEFM)."""
    path = path or DEFAULT_POLICY
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"cannot read gate policy {path}: {exc}") from None
    tables = data.get("rule", [])
    if not isinstance(tables, list) or not all(isinstance(raw, dict) for raw in tables):
        raise PolicyError(f"{path}: each rule must be a [[rule]] table (an array of tables), not [rule] or rule = ...")
    rules = []
    for i, raw in enumerate(tables, start=1):
        where = f"{path}: rule {i}"
        test = raw.get("test")
        if test not in TESTS:
            raise PolicyError(f"{where}: test must be one of {', '.join(TESTS)}, not {test!r}")
        unknown = set(raw) - {"name", "test"} - TESTS[test]
        if unknown:
            raise PolicyError(f"{where}: unknown field(s) for a {test} rule: {sorted(unknown)}")
        for name in sorted(set(raw) & TESTS[test]):
            if isinstance(raw[name], bool) or not isinstance(raw[name], int | float):
                raise PolicyError(f"{where}: {name} must be a number")
            if not math.isfinite(raw[name]):  # tolerance = inf would switch a rule off unseen
                raise PolicyError(f"{where}: {name} must be finite, not {raw[name]}")
        alpha = raw.get("alpha", 0.05)
        if not 0 < alpha < 1:
            raise PolicyError(f"{where}: alpha must be in (0, 1)")
        if raw.get("tolerance", 0) < 0 or raw.get("cost", 0) < 0:
            raise PolicyError(f"{where}: tolerance and cost must not be negative")
        if "level" in TESTS[test] and not (isinstance(raw.get("level", 95), int) and 0 < raw.get("level", 95) < 100):
            raise PolicyError(f"{where}: level must be an integer percent in 1..99")
        rules.append(Rule(name=raw.get("name", test), **{k: v for k, v in raw.items() if k != "name"}))
    if not rules:
        raise PolicyError(f"{path}: no [[rule]] in the policy")
    return rules


def backtest_frame(backtest: dict[str, Any]) -> pd.DataFrame:
    """A stored backtest's forecasts (the registry's ``backtest["forecasts"]``) as one frame with
    ``series_id, cutoff, ds, step, y, mean, lo-L, hi-L``; rows without an actual value dropped."""
    frames = [pd.DataFrame(rows).assign(series_id=s) for s, rows in (backtest.get("forecasts") or {}).items()]
    if not frames:
        raise MismatchedBacktests("the backtest stores no forecasts to compare")
    return with_steps(pd.concat(frames, ignore_index=True))


def with_steps(frame: pd.DataFrame) -> pd.DataFrame:
    """Backtest rows with parsed dates, a 1-based ``step`` per (series, cutoff), and no missing ``y``.

    The step is the row's place in its window's forecast path, counted before rows without an
    actual are dropped (a target not yet observed, or a date the series has no value for), so
    ``step`` k is always the model's k-step forecast, as in ``backtest.score``'s ``@h<k>`` names."""
    frame = frame.assign(cutoff=pd.to_datetime(frame["cutoff"]), ds=pd.to_datetime(frame["ds"]))
    frame = frame.assign(step=steps(frame, ["series_id", "cutoff"]))
    return frame.dropna(subset=["y", "mean"]).sort_values(KEYS, ignore_index=True)


def paired(candidate: pd.DataFrame, serving: pd.DataFrame) -> pd.DataFrame:
    """Candidate and serving rows joined on (series, cutoff, target date) for the series both
    forecast: ``mean_c``, ``mean_s`` beside the shared ``y``. MismatchedBacktests when a shared
    series has windows one side lacks, or the two score against different actual values."""
    shared = sorted(set(candidate["series_id"]) & set(serving["series_id"]))
    c = candidate[candidate["series_id"].isin(shared)]
    s = serving[serving["series_id"].isin(shared)]
    joined = c.merge(s, on=KEYS, how="outer", suffixes=("_c", "_s"), indicator=True)
    lonely = joined[joined["_merge"] != "both"]
    if len(lonely):
        first = lonely.iloc[0]
        side = "candidate" if first["_merge"] == "left_only" else "serving model"
        raise MismatchedBacktests(
            f"the backtests cover different windows: {len(lonely)} forecast(s) only one side has, first "
            f"{first['series_id']} cutoff {first['cutoff']:%Y-%m-%d} target {first['ds']:%Y-%m-%d} "
            f"(only the {side}'s)"
        )
    differ = ~np.isclose(joined["y_c"], joined["y_s"], rtol=1e-9, atol=1e-12)
    if differ.any():
        first = joined[differ].iloc[0]
        raise MismatchedBacktests(
            f"the backtests score against different data (another vintage?): {int(differ.sum())} actual(s) differ,"
            f" first {first['series_id']} at {first['ds']:%Y-%m-%d}: {first['y_c']:.6g} vs {first['y_s']:.6g}"
        )
    return joined.rename(columns={"y_c": "y", "step_c": "step"}).drop(columns=["y_s", "step_s", "_merge"])


def evaluate(
    rules: list[Rule],
    candidate: pd.DataFrame,
    serving: pd.DataFrame | None,
    *,
    returns: set[str] | frozenset[str] = frozenset(),
    candidate_id: str = "candidate",
    serving_id: str | None = None,
    dropped: list[str] | tuple[str, ...] = (),
    spacing: int = 1,
) -> dict[str, Any]:
    """Judge the candidate's backtest rows (``with_steps`` frames) against the rules, and the
    serving model's rows on the same windows. ``returns``: series whose values are returns (the
    Sharpe rule applies to them). ``dropped``: series the serving model forecasts and the
    candidate does not; each fails the candidate (promoting it would leave the series unserved).
    ``spacing``: periods between cutoffs (the backtest's ``step``), which sets how many of the
    k-step errors overlap. Against a serving model the candidate fails where nothing compared
    them: a series the serving model's backtest has and the candidate's lacks (too short for its
    model?), or a comparison that could not run at all (no more windows than the steps). A rule
    on an interval level the backtests do not store fails the candidate, naming the levels stored."""
    pairs = paired(candidate, serving) if serving is not None else None
    checks, skipped, unrun, compared, starved = [], [], [], 0, False
    for rule in rules:
        if rule.test in RELATIVE and pairs is None:
            skipped.append({"rule": rule.name, "reason": "no serving model to compare with"})
            continue
        if lacking := _lacking_level(rule, candidate, serving):
            unrun.append(lacking)
            continue
        if rule.test in RELATIVE:
            for series_id in sorted(set(candidate["series_id"]) - set(pairs["series_id"])):
                skipped.append(
                    {"rule": rule.name, "series_id": series_id, "reason": "the serving model's backtest lacks it"}
                )
        found, why = _tests(rule, candidate, pairs, returns, spacing)
        if not found:
            skipped.append({"rule": rule.name, "reason": why})
            starved |= rule.test in RELATIVE and why.startswith(TOO_FEW)
        elif untested := _untested_steps(rule, pairs, spacing):
            steps = ", ".join(map(str, untested))
            skipped.append({"rule": rule.name, "reason": f"h={steps} untested: {why}"})
        compared += len(found) if rule.test in RELATIVE else 0
        for check, adjusted in zip(found, metrics.holm([c["p_value"] for c in found]), strict=True):
            checks.append(_verdict(rule, check, float(adjusted)))
    failures = [c["reason"] for c in checks if not c["passed"]] + unrun
    failures += [
        f"{s}: the serving model forecasts it, the candidate does not (promoting it would leave {s} unserved)"
        for s in dropped
    ]
    if serving is not None:
        failures += [
            f"{s}: the serving model's backtest has it and the candidate's does not: nothing compared them"
            for s in sorted(set(serving["series_id"]) - set(candidate["series_id"]) - set(dropped))
        ]
        if not compared and starved:  # not for want of rules that apply: for want of windows
            windows = candidate["cutoff"].nunique()
            failures.append(
                f"no comparison with the serving model could run on {windows} window(s): a Diebold-Mariano "
                "test at step k needs more windows than k (run the backtest on more windows)"
            )
    return {
        "candidate": candidate_id,
        "serving": serving_id,
        "passed": not failures,
        "checks": checks,
        "skipped": skipped,
        "failures": failures,
        "windows": {
            "cutoffs": sorted(f"{c:%Y-%m-%d}" for c in candidate["cutoff"].unique()),
            "h": int(candidate["step"].max()),
            "series": sorted(candidate["series_id"].unique()),
            "compared_with_serving": pairs is not None,
        },
    }


def _lacking_level(rule: Rule, candidate: pd.DataFrame, serving: pd.DataFrame | None) -> str | None:
    """Why ``rule`` cannot run for want of its interval level in the backtests, or None. Such a
    rule tests nothing, so the candidate it cannot judge must not pass as if it had."""
    if "level" not in TESTS[rule.test]:
        return None
    frames = [candidate] if rule.test == "coverage" else [candidate, serving]
    stored = set.intersection(*({int(c[3:]) for c in f.columns if c.startswith("lo-")} for f in frames))
    if rule.level in stored:
        return None
    lacks = "the candidate's backtest does not store" if rule.test == "coverage" else "the backtests do not both store"
    have = ", ".join(f"{level}%" for level in sorted(stored)) or "none"
    return (
        f"rule {rule.name!r} tests {rule.level}% intervals, which {lacks} (levels stored: {have}): nothing"
        " tested the candidate (set the rule's level to a stored one)"
    )


def _untested_steps(rule: Rule, pairs: pd.DataFrame | None, spacing: int) -> list[int]:
    """The steps at which a paired test of ``rule`` was left out for some series: no more windows
    than the overlap of its errors (see ``_tests``)."""
    if rule.test not in ("diebold-mariano", "interval-score") or pairs is None:
        return []
    sizes = pairs.groupby(["series_id", "step"]).size().reset_index(name="n")
    overlap = sizes["step"].map(lambda step: overlapping(step, spacing))
    return sorted({int(s) for s in sizes.loc[sizes["n"] <= overlap, "step"]})


TOO_FEW = "too few windows"
"""How a paired rule's skip begins when it had data to compare but not enough windows."""


def overlapping(step: int, spacing: int) -> int:
    """The horizon a test of k-step errors at cutoffs ``spacing`` periods apart takes: consecutive
    errors share ``ceil(k / spacing) - 1`` periods' shocks (Diebold-Mariano's lags h - 1; with
    cutoffs a period apart, h = k)."""
    return -(-int(step) // int(spacing))


def _tests(
    rule: Rule, candidate: pd.DataFrame, pairs: pd.DataFrame | None, returns, spacing: int
) -> tuple[list[dict], str]:
    """One raw test per (series, step) the rule covers, or none and why."""
    out = []
    if rule.test == "coverage":
        lo, hi = f"lo-{rule.level}", f"hi-{rule.level}"
        for (series_id, step), g in candidate.groupby(["series_id", "step"]):
            inside = ((g["y"] >= g[lo]) & (g["y"] <= g[hi])).to_numpy()  # in cutoff order (with_steps)
            p, subsamples = _coverage_p_value(inside, rule.level, overlapping(step, spacing))
            check = _raw(series_id, step, len(g), f"coverage-{rule.level}@h{step}", inside.mean(), None, None, p)
            out.append({**check, "subsamples": subsamples})
        return out, ""
    if rule.test == "diebold-mariano":
        for (series_id, step), g in pairs.groupby(["series_id", "step"]):
            if len(g) <= (h := overlapping(step, spacing)):
                continue
            stat, p = metrics.diebold_mariano(g["y"], g["mean_c"], g["mean_s"], h=h, alternative="greater")
            rmse_c, rmse_s = metrics.rmse(g["y"], g["mean_c"]), metrics.rmse(g["y"], g["mean_s"])
            out.append(_raw(series_id, step, len(g), f"rmse@h{step}", rmse_c, rmse_s, stat, p))
        return out, f"{TOO_FEW} for a Diebold-Mariano test (need more than h)"
    if rule.test == "interval-score":
        lo, hi = f"lo-{rule.level}", f"hi-{rule.level}"
        for (series_id, step), g in pairs.groupby(["series_id", "step"]):
            if len(g) <= (h := overlapping(step, spacing)):
                continue
            mine = metrics.interval_scores(g["y"], g[f"{lo}_c"], g[f"{hi}_c"], rule.level)
            theirs = metrics.interval_scores(g["y"], g[f"{lo}_s"], g[f"{hi}_s"], rule.level)
            stat, p = metrics.loss_differential_test(mine, theirs, h=h, alternative="greater")
            name = f"winkler-{rule.level}@h{step}"
            out.append(_raw(series_id, step, len(g), name, mine.mean(), theirs.mean(), stat, p))
        return out, f"{TOO_FEW} for a Diebold-Mariano test (need more than h)"
    one_step = pairs[(pairs["step"] == 1) & pairs["series_id"].isin(returns)]
    if one_step.empty:
        return [], "no return series among the compared ones"
    for series_id, g in one_step.groupby("series_id"):
        if len(g) < 3:
            continue
        mine = metrics.strategy_returns(g["y"], g["mean_c"], rule.cost)
        theirs = metrics.strategy_returns(g["y"], g["mean_s"], rule.cost)
        z, p = metrics.sharpe_difference(mine, theirs, alternative="less")
        out.append(_raw(series_id, 1, len(g), "sharpe (per period)", _sharpe(mine), _sharpe(theirs), z, p))
    return out, f"{TOO_FEW} for a Sharpe ratio test (need 3)"


def _coverage_p_value(inside: np.ndarray, level: int, h: int) -> tuple[float, int]:
    """The p-value that intervals cover less than ``level`` percent, from their hits ``inside``
    at successive cutoffs whose errors share the shocks of ``h - 1`` cutoffs (``overlapping``),
    and the number of subsamples it took.

    Overlapping errors miss together, so the hits are not independent and an exact binomial test
    of all of them over-rejects (a simulation of calibrated 95% intervals on 40 windows a period
    apart: 11% at k=4, 16% at k=8, at 5%). As Diebold, Gunther and Tay (1998) do for multi-step
    density forecasts, the hits are split into the ``h`` interleaved subsamples of every h-th
    cutoff, whose errors share no shocks; each gets the exact binomial test, and the smallest
    p-value is Bonferroni-adjusted by their number, which holds the size under any dependence
    between the subsamples. With ``h = 1`` it is the exact binomial test of all the hits."""
    subsamples = [inside[j::h] for j in range(min(h, len(inside)))]
    smallest = min(metrics.coverage_test(int(sub.sum()), len(sub), level) for sub in subsamples)
    return min(1.0, len(subsamples) * smallest), len(subsamples)


def _raw(series_id, step, n, metric, candidate, serving, statistic, p_value) -> dict[str, Any]:
    return {
        "series_id": str(series_id),
        "step": int(step),
        "n": int(n),
        "metric": metric,
        "candidate": float(candidate),
        "serving": None if serving is None else float(serving),
        "statistic": None if statistic is None else float(statistic),
        "p_value": float(p_value),
    }


def _verdict(rule: Rule, check: dict[str, Any], adjusted: float) -> dict[str, Any]:
    significant = adjusted <= rule.alpha
    c, s = check["candidate"], check["serving"]
    where = f"{check['series_id']} h={check['step']} (n={check['n']})"
    p_text = f"p={check['p_value']:.3g}, Holm {adjusted:.3g}"
    if rule.test in ("diebold-mariano", "interval-score"):
        worse = c > s * (1 + rule.tolerance)
        passed = not (significant and worse)
        verdict = "significantly worse" if not passed else ("better" if c <= s else "not significantly worse")
        if significant and not worse:
            verdict = f"worse by no more than the {rule.tolerance:.0%} tolerance"
        loss = "RMSE" if rule.test == "diebold-mariano" else f"{rule.level}% interval score"
        text = f"{loss} {c:.4g} vs serving {s:.4g}, DM-HLN t={check['statistic']:.3g}, {p_text}"
    elif rule.test == "sharpe":
        passed = not significant
        verdict = "significantly lower Sharpe" if significant else "Sharpe not significantly lower"
        text = f"Sharpe/period {c:.3g} vs serving {s:.3g}, JK-Memmel z={check['statistic']:.3g}, {p_text}"
    else:
        passed = not significant
        verdict = "intervals too narrow" if significant else "coverage consistent with nominal"
        test = "binomial"
        if check["subsamples"] > 1:
            test = f"binomial on {check['subsamples']} subsamples of windows that share no shocks, Bonferroni"
        text = f"{rule.level}% coverage {c:.3g}, {test} {p_text}"
    return {
        "rule": rule.name,
        "test": rule.test,
        **check,
        "p_adjusted": adjusted,
        "alpha": rule.alpha,
        "passed": bool(passed),
        "reason": f"{where}: {text} (alpha {rule.alpha:g}): {verdict}",
    }


def _sharpe(returns: np.ndarray) -> float:
    sd = float(np.std(returns, ddof=1))
    return float(np.mean(returns)) / sd if sd > 0 else 0.0
