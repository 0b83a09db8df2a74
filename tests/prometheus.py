"""A real Prometheus (Debian's ``prometheus``) scraping local processes every second, for the tests
that read metrics back through PromQL."""

import shutil
from pathlib import Path

import pytest

from pefm.local.runtime import free_port, spawn


def start_prometheus(targets: list[str], tmp: Path, scrape_configs: str | None = None):
    """The server scraping ``targets`` (``host:port``), or as ``scrape_configs`` (YAML, the
    section's entries) says, its data under ``tmp``; stop() it after."""
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed (apt-get install prometheus; .ci/run does it)")
    config = tmp / "prometheus.yml"
    scrape_configs = scrape_configs or f"  - job_name: pefm\n    static_configs: [{{targets: {targets}}}]\n"
    config.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n" + scrape_configs)
    port = free_port()
    return spawn(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        cwd=tmp,
        env={},
        log=tmp / "prometheus.log",
        ready_path="/-/ready",
        name="prometheus",
        port=port,
    )
