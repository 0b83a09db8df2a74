"""The dashboard against axe-core's accessibility rules (WCAG A and AA, and best practices), in
Debian's headless Chromium: every page once its data has loaded, and the Forecasts page with
several series in model space, in the light and the dark mode (the mode's colours are the page's
contrast), must have no serious or critical violations. Users of screen readers and keyboards get
the same dashboard, and a regression shows up as a failing test."""

from __future__ import annotations

import pytest

from tests.e2e.axe import readable, violations
from tests.e2e.harness import PAGES

VIEWS = [(name, "") for name in PAGES] + [("forecasts", "#series=realgdp,unemp&space=model")]
VIEW_IDS = [*PAGES, "forecasts-several-series-model-space"]


def dark_mode(watched) -> None:
    """Switch the dashboard to its dark mode as a user does (the navbar's switch, remembered for
    the pages opened next in the same browser context)."""
    watched.open("overview")
    watched.page.click("#theme-switch")
    watched.page.wait_for_function("document.documentElement.getAttribute('data-bs-theme') === 'dark'")


@pytest.mark.parametrize("mode", ["light", "dark"])
@pytest.mark.parametrize(("name", "fragment"), VIEWS, ids=VIEW_IDS)
def test_no_serious_or_critical_accessibility_violations(watched, name, fragment, mode):
    if mode == "dark":
        dark_mode(watched)
    watched.open(name, fragment)
    theme = watched.page.evaluate("document.documentElement.getAttribute('data-bs-theme')")
    assert theme == mode
    found = violations(watched.page)
    assert found == [], f"{name}{fragment} ({mode}): axe-core finds\n{readable(found)}"


def test_the_series_list_says_whether_it_is_open_and_the_token_field_is_labelled(watched):
    """The series button opens a list a screen reader could not tell open from closed, and the admin
    token field had only a placeholder (gone once typed in) for a name."""
    watched.open("forecasts")
    toggle = watched.page.locator("#fc-series-toggle")
    assert toggle.get_attribute("aria-expanded") == "false"
    assert toggle.get_attribute("aria-controls") == "fc-series-panel"
    toggle.click()
    watched.page.wait_for_function("document.querySelector('#fc-series-toggle').ariaExpanded === 'true'")
    toggle.click()
    watched.page.wait_for_function("document.querySelector('#fc-series-toggle').ariaExpanded === 'false'")
    watched.open("rollouts")
    assert watched.page.get_by_label("Admin token", exact=True).get_attribute("id") == "ro-token"
    assert watched.errors == []
