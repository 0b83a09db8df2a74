import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pefm.forecasting.metrics import (
    buy_and_hold_sharpe,
    coverage,
    coverage_test,
    diebold_mariano,
    directional_accuracy,
    holm,
    interval_metrics,
    interval_pinball,
    mae,
    mase,
    pinball,
    point_metrics,
    rmse,
    sharpe_difference,
    sharpe_ratio,
    sign_strategy_sharpe,
    smape,
    stays_away_from_zero,
    strategy_returns,
    winkler,
)


def test_rmse_and_mae_known_values():
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(np.sqrt(4 / 3))
    assert mae([1, 2, 3], [1, 2, 5]) == pytest.approx(2 / 3)
    assert rmse(pd.Series([0.0, 0.0]), np.array([3.0, -4.0])) == pytest.approx(np.sqrt(12.5))
    assert isinstance(rmse([1.0], [2.0]), float)


def test_mase_divides_by_in_sample_seasonal_naive_mae():
    # season 1: |3-1|, |2-3|, |5-2| = 2, 1, 3 -> scale 2; MAE of [4,6] vs [5,4] = (1+2)/2 = 1.5
    assert mase([4, 6], [5, 4], y_train=[1, 3, 2, 5]) == pytest.approx(0.75)
    # season 2: |2-1|, |5-3|, |4-2| = 1, 2, 2 -> scale 5/3; 1.5 / (5/3) = 0.9
    assert mase([4, 6], [5, 4], y_train=[1, 3, 2, 5, 4], season=2) == pytest.approx(0.9)


def test_mase_refuses_zero_scale_and_short_training():
    with pytest.raises(ValueError, match="scale is 0"):
        mase([1, 2], [1, 2], y_train=[5, 5, 5])
    with pytest.raises(ValueError, match="more than season"):
        mase([1, 2], [1, 2], y_train=[1, 2], season=2)


def test_smape_known_value_in_percent():
    # 2*10/210 = 2/21 and 2*20/380 = 2/19; mean * 100 = 100 * (1/21 + 1/19) = 4000/399
    assert smape([100, 200], [110, 180]) == pytest.approx(4000 / 399)
    assert smape([0, 5], [0, 5]) == 0.0  # both zero counts as perfect, not NaN
    assert smape([1.0], [-1.0]) == pytest.approx(200.0)


def test_stays_away_from_zero():
    assert stays_away_from_zero([1, 2, 3])  # min 1 >= 0.1 * mean 2
    assert stays_away_from_zero([-5, -6])
    assert not stays_away_from_zero([1, -1, 2])  # sign change
    assert not stays_away_from_zero([0, 1, 2])  # touches zero
    assert not stays_away_from_zero([0.01, 10, 10])  # 0.01 < 0.1 * 6.67
    assert stays_away_from_zero([0.01, 10, 10], min_abs_ratio=0.001)


def test_coverage_and_winkler_with_points_below_and_above():
    y = [1, 5, -1, 3]
    lo = [0, 0, 0, 3]
    hi = [2, 4, 8, 3]
    # inside, above, below, on the (degenerate) boundary -> 2 of 4 covered
    assert coverage(y, lo, hi) == pytest.approx(0.5)
    # level 80: alpha 0.2, 2/alpha = 10; widths 2, 4, 8, 0; penalties 0, 10*(5-4), 10*(0-(-1)), 0
    # scores 2, 14, 18, 0 -> mean 8.5
    assert winkler(y, lo, hi, 80) == pytest.approx(8.5)
    # level 95: 2/alpha = 40 -> scores 2, 44, 48, 0 -> mean 23.5
    assert winkler(y, lo, hi, 95) == pytest.approx(23.5)


def test_pinball_by_hand_and_its_tie_to_the_winkler_score():
    y, lo, hi = [1, 5, -1, 3], [0, 0, 0, 3], [2, 4, 8, 3]
    # quantile 0.1 at lo: y - lo = 1, 5, -1, 0 -> 0.1*1, 0.1*5, 0.9*1, 0 -> 1.5 / 4
    assert pinball(y, lo, 0.1) == pytest.approx(0.375)
    # quantile 0.9 at hi: y - hi = -1, 1, -9, 0 -> 0.1*1, 0.9*1, 0.1*9, 0 -> 1.9 / 4
    assert pinball(y, hi, 0.9) == pytest.approx(0.475)
    # 95%: quantiles 0.025 and 0.975 -> (0.025 + 0.125 + 0.975) / 4 and (0.025 + 0.975 + 0.225) / 4
    assert pinball(y, lo, 0.025) == pytest.approx(0.28125)
    assert pinball(y, hi, 0.975) == pytest.approx(0.30625)
    # the mean over the four quantiles the 80% and 95% bounds stand for
    bounds = {80: (lo, hi), 95: (lo, hi)}
    assert interval_pinball(y, bounds) == pytest.approx((0.375 + 0.475 + 0.28125 + 0.30625) / 4)
    # Winkler = 2/alpha x (the two bounds' pinball losses): 10 x 0.85 = 8.5, 40 x 0.5875 = 23.5
    assert winkler(y, lo, hi, 80) == pytest.approx(10 * (0.375 + 0.475))
    assert winkler(y, lo, hi, 95) == pytest.approx(40 * (0.28125 + 0.30625))
    assert pinball([2.0], [2.0], 0.3) == 0.0


def test_interval_metrics_keys_and_values():
    y = [1, 5, -1, 3]
    out = interval_metrics(y, {95: ([0, 0, 0, 3], [2, 4, 8, 3]), 80: ([0, 0, 0, 3], [2, 4, 8, 3])})
    assert list(out) == ["coverage-80", "winkler-80", "coverage-95", "winkler-95", "pinball"]
    assert out["winkler-80"] == pytest.approx(8.5)
    assert out["coverage-95"] == pytest.approx(0.5)
    assert out["pinball"] == pytest.approx(0.359375)
    assert interval_metrics(y, {}) == {}


def test_directional_accuracy_on_levels():
    # actual moves +, -, 0; forecast moves +, +, 0 -> right, wrong, right
    assert directional_accuracy([11, 9, 10], [12, 11, 10], [10, 10, 10]) == pytest.approx(2 / 3)
    assert directional_accuracy([11, 9, 10], [12, 11, 10], 10) == pytest.approx(2 / 3)
    # a no-change forecast is wrong when the actual moved
    assert directional_accuracy([11], [10], [10]) == 0.0


def test_strategy_returns_with_costs_by_hand():
    returns = [1.0, -2.0, 0.5, 3.0]
    forecasts = [0.3, -0.1, -0.2, 0.0]
    # positions sign(f) = +1, -1, -1, 0; previous positions 0, +1, -1, -1
    # turnover |1-0|=1, |-1-1|=2, |-1+1|=0, |0+1|=1
    # gross pos*r = 1.0, 2.0, -0.5, 0.0; net with cost 0.1: 0.9, 1.8, -0.5, -0.1
    out = strategy_returns(returns, forecasts, cost=0.1)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [0.9, 1.8, -0.5, -0.1])
    np.testing.assert_allclose(strategy_returns(returns, forecasts), [1.0, 2.0, -0.5, 0.0])


def test_sharpe_ratio_by_hand():
    # mean 2, sample std 1 -> 2 * sqrt(4) = 4
    assert sharpe_ratio([1, 2, 3], periods_per_year=4) == pytest.approx(4.0)
    # mean 0.05; squared deviations .0025 + .0625 + .0625 + .0025 = 0.13; var 0.13/3
    expected = 0.05 / np.sqrt(0.13 / 3) * np.sqrt(252)
    assert sharpe_ratio([0.1, -0.2, 0.3, 0.0]) == pytest.approx(expected)
    assert sharpe_ratio([0.1, 0.1, 0.1]) == 0.0
    assert sharpe_ratio([0.0, 0.0]) == 0.0


def test_buy_and_hold_ignores_entry_cost_and_sign_strategy_charges_it():
    r = [0.5, -0.2, 0.3, 0.1]
    expected = np.mean(r) / np.std(r, ddof=1) * np.sqrt(252)
    assert buy_and_hold_sharpe(r) == pytest.approx(expected)
    always_long = [1.0, 1.0, 1.0, 1.0]
    assert sign_strategy_sharpe(r, always_long) == pytest.approx(expected)
    # with a cost, only the first period is charged: returns 0.4, -0.2, 0.3, 0.1
    net = [0.4, -0.2, 0.3, 0.1]
    assert sign_strategy_sharpe(r, always_long, cost=0.1) == pytest.approx(
        np.mean(net) / np.std(net, ddof=1) * np.sqrt(252)
    )
    assert sign_strategy_sharpe(r, always_long, cost=0.1) < buy_and_hold_sharpe(r)


def test_diebold_mariano_detects_a_much_better_model():
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    model = y + 0.1 * rng.normal(size=200)
    bench = y + 1.0 * rng.normal(size=200)
    stat, p = diebold_mariano(y, model, bench)
    assert stat < 0
    assert p < 0.01
    stat_rev, p_rev = diebold_mariano(y, bench, model)
    assert stat_rev == pytest.approx(-stat)
    assert p_rev == pytest.approx(p)
    stat3, p3 = diebold_mariano(y, model, bench, h=3)
    assert stat3 < 0
    assert p3 < 0.01


def test_diebold_mariano_equal_accuracy_is_not_rejected():
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    stat, p = diebold_mariano(y, y + rng.normal(size=200), y + rng.normal(size=200))
    assert p > 0.05
    assert abs(stat) < 1.96


def test_diebold_mariano_h1_equals_one_sample_t_test_on_loss_differential():
    # with h=1 (no HAC lags) the HLN-corrected DM statistic is exactly the one-sample t statistic
    rng = np.random.default_rng(1)
    y = rng.normal(size=30)
    a = y + rng.normal(size=30)
    b = y + 1.3 * rng.normal(size=30)
    d = (y - a) ** 2 - (y - b) ** 2
    t = stats.ttest_1samp(d, 0.0)
    stat, p = diebold_mariano(y, a, b)
    assert stat == pytest.approx(t.statistic)
    assert p == pytest.approx(t.pvalue)


def test_diebold_mariano_identical_forecasts():
    assert diebold_mariano([1, 2, 3], [1, 1, 1], [1, 1, 1]) == (0.0, 1.0)
    assert diebold_mariano([1, 2, 3], [1, 1, 1], [1, 1, 1], alternative="greater") == (0.0, 1.0)


def test_diebold_mariano_one_sided_p_values_split_the_two_sided_one():
    rng = np.random.default_rng(2)
    y = rng.normal(size=60)
    worse, better = y + 1.4 * rng.normal(size=60), y + rng.normal(size=60)
    stat, two_sided = diebold_mariano(y, worse, better)
    _, greater = diebold_mariano(y, worse, better, alternative="greater")
    _, less = diebold_mariano(y, worse, better, alternative="less")
    assert stat > 0 and greater == pytest.approx(two_sided / 2) and less == pytest.approx(1 - two_sided / 2)
    assert diebold_mariano([1, 2, 3, 4], [2, 3, 4, 5], [1, 2, 3, 4], alternative="greater") == (np.inf, 0.0)


def test_sharpe_difference_matches_memmels_formula_and_is_symmetric():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.1, 1, 250), rng.normal(0.0, 1, 250)
    z, p = sharpe_difference(a, b)
    sa, sb = a.mean() / a.std(ddof=1), b.mean() / b.std(ddof=1)
    rho = np.corrcoef(a, b)[0, 1]
    variance = (2 - 2 * rho + 0.5 * (sa**2 + sb**2 - 2 * sa * sb * rho**2)) / 250
    assert z == pytest.approx((sa - sb) / np.sqrt(variance))
    assert p == pytest.approx(2 * stats.norm.sf(abs(z)))
    assert sharpe_difference(b, a)[0] == pytest.approx(-z)
    assert sharpe_difference(a, a) == (0.0, 1.0)
    # strongly correlated strategies: a small Sharpe gap is significant (one-sided)
    c = a - 0.02
    assert sharpe_difference(c, a, alternative="less")[1] < 1e-6


def test_coverage_test_is_the_exact_binomial_tail():
    assert coverage_test(38, 40, 95) == pytest.approx(stats.binom.cdf(38, 40, 0.95))
    assert coverage_test(40, 40, 95) == pytest.approx(1.0)
    assert coverage_test(20, 40, 95) < 1e-10


def test_holm_adjusts_step_down_and_keeps_the_order():
    adjusted = holm([0.01, 0.04, 0.03, 0.5])
    assert adjusted.tolist() == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([]).size == 0 and holm([0.9, 0.8]).tolist() == [1.0, 1.0]


def test_point_metrics_reports_smape_only_away_from_zero():
    out = point_metrics([4, 6], [5, 4], y_train=[1, 3, 2, 5])
    assert set(out) == {"rmse", "mae", "mase", "smape"}
    assert out["mase"] == pytest.approx(0.75)
    assert out["smape"] == pytest.approx(smape([4, 6], [5, 4]))
    out = point_metrics([4, 6], [5, 4], y_train=[-1, 3, 2, 5])
    assert set(out) == {"rmse", "mae", "mase"}


@pytest.mark.parametrize(
    ("func", "args", "match"),
    [
        (rmse, ([1, 2, 3], [1, 2]), "length mismatch"),
        (mae, ([1, np.nan], [1, 2]), "NaN"),
        (smape, ([], []), "empty"),
        (rmse, ([[1, 2]], [[1, 2]]), "1-D"),
        (coverage, ([1, 2], [0, 3], [1, 2]), "lower bound exceeds"),
        (winkler, ([1], [0], [2], 100), "level"),
        (pinball, ([1], [0], 1.0), "quantile"),
        (pinball, ([1, 2], [0], 0.5), "length mismatch"),
        (interval_pinball, ([1], {}), "empty"),
        (interval_pinball, ([1], {80: ([2], [0])}), "lower bound exceeds"),
        (directional_accuracy, ([1, 2], [1, 2], [1, 2, 3]), "length mismatch"),
        (strategy_returns, ([1, 2], [1, 1], -0.1), "cost"),
        (strategy_returns, ([1, 2], [1, np.inf]), "NaN or infinite"),
        (sharpe_ratio, ([1.0],), "at least 2"),
        (diebold_mariano, ([1, 2, 3], [1, 2], [1, 2, 3]), "length mismatch"),
        (diebold_mariano, ([1, 2, 3], [1, 2, 3], [1, 2, 4], 0), "h must be"),
        (diebold_mariano, ([1, 2, 3], [1, 2, 3], [1, 2, 4], 1, "worse"), "alternative"),
        (sharpe_difference, ([1, 2], [1, 2]), "at least 3"),
        (coverage_test, (5, 4, 95), "inside"),
        (mase, ([1, 2], [1, 2], [np.nan, 1, 2]), "NaN"),
        (stays_away_from_zero, ([],), "empty"),
    ],
)
def test_bad_input_raises_value_error(func, args, match):
    with pytest.raises(ValueError, match=match):
        func(*args)


def test_point_metrics_leave_mase_out_when_the_training_series_is_flat():
    """A policy rate held flat up to the first cutoff has no MASE scale: the ValueError had stopped
    the whole backtest, after every window was fitted, with nothing registered."""
    out = point_metrics([2.25, 2.25], [2.0, 2.0], y_train=[2.0] * 50)
    assert "mase" not in out and out["rmse"] == pytest.approx(0.25)
    assert point_metrics([4, 6], [5, 4], y_train=[1, 3, 2, 5])["mase"] == pytest.approx(1.5 / 2)
