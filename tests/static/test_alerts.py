"""PEFM's alerts (deploy/prometheus/alerts.yml): promtool accepts them, and its rule tests
(alerts_test.yml) show each alert firing on what it is about and quiet otherwise; docker
compose's Prometheus and the cluster's (terraform/modules/monitoring) load that one file."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed (apt-get install prometheus; .ci/run does it)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS)


def test_the_rules_are_valid_and_their_tests_pass():
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_tested_firing():
    alerts = {r["alert"] for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if c["exp_alerts"]}
    assert alerts and fired == alerts


def test_compose_and_the_cluster_load_the_file():
    assert "alerts.yml" in yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["rule_files"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in (ROOT / "docker-compose.yml").read_text()
    module = ROOT / "terraform" / "modules" / "monitoring"
    [path] = re.findall(r'file\("\$\{path\.module\}/([^"]+)"\)', (module / "main.tf").read_text())
    assert (module / path).resolve() == PROMETHEUS / "alerts.yml"
