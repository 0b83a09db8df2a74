"""The dashboard against axe-core's accessibility rules (WCAG A and AA, and best practices), in
Debian's headless Chromium: every page once its data has loaded, and the Forecasts page with
several series in model space, must have no serious or critical violations. Users of screen
readers and keyboards get the same dashboard, and a regression shows up as a failing test."""

from __future__ import annotations

import pytest

from tests.e2e.axe import readable, violations
from tests.e2e.harness import PAGES

pytest.importorskip("playwright.sync_api", reason="the dev extra installs playwright")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [(name, "") for name in PAGES] + [("forecasts", "#series=realgdp,unemp&space=model")],
    ids=[*PAGES, "forecasts-several-series-model-space"],
)
def test_no_serious_or_critical_accessibility_violations(watched, name, fragment):
    watched.open(name, fragment)
    found = violations(watched.page)
    assert found == [], f"{name}{fragment}: axe-core finds\n{readable(found)}"
