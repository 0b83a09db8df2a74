"""The ``pefm`` command as a user runs it: a real process on a real database."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pefm.local.runtime import record_revision
from pefm.storage import signing
from pefm.storage.model_versions import get_version
from tests.conftest import port_below_ephemeral

PEFM = [sys.executable, "-m", "pefm.cli"]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PEFM, *args], env={**env, "COLUMNS": "120"}, capture_output=True, text=True, timeout=300)


def test_bootstrap_leaves_a_serving_model_and_later_runs_of_it_or_of_up_change_nothing(bootstrapped):
    """What the cluster's bootstrap Job runs (knative/jobs/), on a fresh database (the session's
    ``bootstrapped`` schema, which other tests read too); then `pefm up --no-serve` and the Job
    again. (`pefm up` on a fresh database: the local stack's test below.)"""
    cli_env, schema_url, first = bootstrapped.env, bootstrapped.url, bootstrapped.first
    assert "database: migrated" in first.stdout and "bundled data: 17 series" in first.stdout

    def state():
        with psycopg.connect(schema_url) as conn:
            return (
                conn.execute("SELECT id, status FROM model_versions ORDER BY id").fetchall(),
                conn.execute("SELECT count(*), max(ingested_at) FROM observations").fetchone(),
            )

    versions, observations = state()
    assert [status for _, status in versions] == ["serving"] and observations[0] > 20_000
    serving = versions[0][0]
    assert f"serving model: {serving}" in first.stdout
    # the default bundle forecasts every series; `pefm forecast` answers as the inference function
    with psycopg.connect(schema_url) as conn:
        covered, precomputed = conn.execute(
            "SELECT series_ids, precomputed FROM model_versions WHERE id = %s", (serving,)
        ).fetchone()
    assert len(covered) == 17
    shown = run(cli_env, "forecast", "sp500", "realgdp", "-h", "3", "--json")
    assert shown.returncode == 0, shown.stderr
    parts = {p["series_id"]: p for p in json.loads(shown.stdout)["forecasts"]}
    assert "Traceback" not in shown.stderr  # nothing loaded in the background that the answer did not need
    assert (parts["sp500"]["space"], parts["sp500"]["unit"]) == ("level", "index points")
    assert parts["sp500"]["forecast"][0]["ds"] == "2019-01-02T00:00:00Z"  # XNYS: not New Year's Day
    stored = [r for r in precomputed["rows"] if r["series_id"] == "realgdp" and r["space"] == "level"][:3]
    assert [r["mean"] for r in parts["realgdp"]["forecast"]] == [r["mean"] for r in stored]
    # and from the model itself: as of a moment (refitted on what was known then), past the precomputed steps
    past = run(cli_env, "forecast", "realgdp", "-h", "2", "--as-of", "2005-01-01", "--json")
    assert past.returncode == 0, past.stderr
    [part] = json.loads(past.stdout)["forecasts"]
    assert part["data_as_of"].startswith("2005-01-01") and "2004-10" <= part["forecast"][0]["ds"] < "2005-07"
    longer = run(cli_env, "forecast", "realgdp", "-h", "16", "--json")
    assert longer.returncode == 0, longer.stderr
    [part] = json.loads(longer.stdout)["forecasts"]
    assert [r["mean"] for r in part["forecast"][:3]] == [r["mean"] for r in stored] and len(part["forecast"]) == 16
    table = run(cli_env, "forecast", "realgdp", "--space", "model", "-h", "2")
    assert table.returncode == 0 and "realgdp (model space: percent, annualized log growth)" in table.stdout
    bad = run(cli_env, "forecast", "realgdp", "--space", "log")
    assert bad.returncode == 1 and "space: expected one of level, model" in bad.stderr
    up = run(cli_env, "up", "--no-serve")
    assert up.returncode == 0, up.stderr
    assert re.search(r"realgdp\s+│\s+quarterly\s+│\s+1959-01-01\s+│\s+2009-07-01\s+│\s+203", up.stdout)
    assert re.search(r"sp500\s+│\s+business daily\s+│\s+1999-01-04\s+│\s+2018-12-31\s+│\s+5031", up.stdout)
    assert "0 observations inserted, 0 revised" in up.stdout and f"serving model: {serving}" in up.stdout
    assert state() == (versions, observations)
    second = run(cli_env, "bootstrap", "--load-bundled")
    assert second.returncode == 0, second.stderr
    assert "bundled data: all 17 series already hold data" in second.stdout
    assert f"serving model: {serving}" in second.stdout
    assert state() == (versions, observations)


def test_up_without_a_url_starts_the_embedded_database_and_reuses_it(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEFM_")}
    env["PEFM_HOME"] = str(tmp_path / "home")
    first = run(env, "data", "load", "realgdp")
    assert first.returncode == 0, first.stderr
    assert "1 series; 203 observations inserted" in first.stdout
    second = run(env, "series", "show", "realgdp", "--as-of", "2000-01-01", "--tail", "1")
    assert second.returncode == 0, second.stderr
    assert "164 (1959-01-01 .. 1999-10-01) as of 2000-01-01" in second.stdout
    assert (tmp_path / "home" / "postgres" / "PG_VERSION").exists()
    # `pefm serve` on it verifies the models `pefm train` signed with tokens.env's key, by its
    # public half: given other keys to trust, it trusts that half too (as `pefm up` does), and
    # only a signing key of the environment's own puts tokens.env's signer out of trust
    trained = run(env, "train", "--model", "mean", "--series", "realgdp", "--windows", "0")
    assert trained.returncode == 0, trained.stderr
    version = re.search(r"registered (mean-\S+)", trained.stdout).group(1)
    assert run(env, "models", "promote", version).returncode == 0
    served = first_forecast(env)
    assert served.status_code == 200 and served.json()["model_version"] == version, served.text
    also = first_forecast({**env, "PEFM_VERIFY_KEYS": signing.generate()[1]})
    assert also.status_code == 200 and also.json()["model_version"] == version, also.text
    private, public = signing.generate()
    refused = first_forecast({**env, "PEFM_VERIFY_KEYS": public, "PEFM_SIGNING_KEY": private})
    assert refused.status_code == 503 and "ArtifactSignatureError" in refused.text, refused.text
    # stopped cleanly when the last command exited: no server left holding the directory
    assert not (tmp_path / "home" / "postgres" / "postmaster.pid").exists()


def first_forecast(env: dict[str, str]):
    """The first answer `pefm serve inference` gives a forecast request once it has started (and
    then stopped by Ctrl-C)."""
    import signal
    import time

    import httpx

    from pefm.local.runtime import free_port

    port = free_port()
    serving = subprocess.Popen(
        [*PEFM, "serve", "inference", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and serving.poll() is None:
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/v1/forecast", json={"series_id": "realgdp"}, timeout=10)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if answer.status_code != 503 or not re.search(r"is not ready: (starting|waiting)", answer.text):
                return answer
            time.sleep(0.2)
        raise AssertionError("pefm serve inference gave no answer in 60 s")
    finally:
        serving.send_signal(signal.SIGINT)
        serving.communicate(timeout=60)


def test_load_csv_reports_counts_and_errors_with_line_and_field(db, cli_env, tmp_path):  # db: migrated
    good = tmp_path / "good.csv"
    good.write_text("DATE,GDPC1\n2020-01-01,100\n2020-04-01,.\n")
    made = run(
        cli_env,
        "data",
        "load-csv",
        str(good),
        "--frequency",
        "Q",
        "--name",
        "Real GDP",
        "--vintage",
        "2020-05-01",
    )
    assert made.returncode == 0, made.stderr
    assert "gdpc1: 1 inserted, 0 revised, 0 unchanged, 1 missing" in made.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("DATE,GDPC1\n2020-01-01,100\n2020-04-01,n/a\n")
    refused = run(cli_env, "data", "load-csv", str(bad))
    assert refused.returncode == 1
    assert "line 3, value: 'n/a' is not a finite number" in refused.stderr
    unknown = run(cli_env, "series", "show", "nope")
    assert unknown.returncode == 1 and "unknown series: nope" in unknown.stderr
    # describing a series that exists changes nothing of it: said, not silently ignored
    again = run(cli_env, "data", "load-csv", str(good), "--frequency", "M", "--unit", "USD")
    assert again.returncode == 0 and "ignored: --frequency, --unit: gdpc1 exists" in again.stderr


def test_up_runs_the_local_stack_until_interrupted(cli_env, schema_url, tmp_path):
    """`pefm up --replicas 2`: the functions behind the local router answer, the inference revision
    as two replicas that share its requests, then Ctrl-C stops everything."""
    import signal
    import time

    import httpx

    from pefm.local.runtime import revision_alive
    from pefm.rollout.local import LocalRouter
    from pefm.storage.database import Database

    port = port_below_ephemeral(10)  # the router binds it after training, the rollout API port + 10
    process = subprocess.Popen(
        [*PEFM, "up", "--port", str(port), "--replicas", "2"],
        env={**cli_env, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    deadline = time.monotonic() + 600  # training (4.5 min alone on a slow day), five functions, a drift check
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if line.startswith("tour:") or process.poll() is not None:
            break
    output = "".join(lines)
    assert "serving model: bundle-" in output, output
    try:
        forecast = httpx.post(
            f"http://127.0.0.1:{port}/v1/forecast", json={"series_id": "realgdp", "horizon": 2}, timeout=30
        )
        assert forecast.status_code == 200, forecast.text
        revision = forecast.headers["x-pefm-routed-revision"]
        assert revision.startswith("pefm-inference-bundle-")
        with psycopg.connect(schema_url) as conn:
            pids = conn.execute("SELECT pids FROM local_revisions WHERE revision = %s", (revision,)).fetchone()[0]
        assert len(pids) == 2 and all(revision_alive(pid, revision) for pid in pids)
        for _ in range(3):  # one at a time: the replicas take turns
            assert httpx.post(f"http://127.0.0.1:{port}/v1/forecast", json={"series_id": "unemp"}).status_code == 200
        metrics = httpx.get(f"http://127.0.0.1:{port}/_router/metrics").text
        assert re.search(r'pefm_router_routed_total\{replica="0",revision="pefm-inference-bundle-[^"]+"', metrics)
        assert re.search(r'pefm_router_routed_total\{replica="1",revision="pefm-inference-bundle-[^"]+"', metrics)
        token = dict(line.split("=", 1) for line in (tmp_path / "home" / "tokens.env").read_text().split())
        assert f"(token in {tmp_path / 'home' / 'tokens.env'})" in output  # where the banner sends one to look
        ingest_url = next(w for w in output.split() if w.endswith("/v1/observations"))
        put = httpx.put(
            ingest_url.replace("/v1/observations", "/v1/series/demo"),
            json={"name": "Demo", "frequency": "Q"},
            headers={"authorization": f"Bearer {token['PEFM_INGEST_TOKEN']}"},
            timeout=30,
        )
        assert put.status_code == 201
        assert httpx.get(f"http://127.0.0.1:{port + 10}/v1/rollouts", timeout=30).json() == {"rollouts": []}
        # each process holds the secrets it uses, no others
        secrets = {"PEFM_INGEST_TOKEN", "PEFM_ADMIN_TOKEN", "PEFM_EVENT_TOKEN", "PEFM_SHADOW_KEY", "PEFM_SIGNING_KEY"}
        assert secrets & environment_listening_on(port).keys() == {"PEFM_ADMIN_TOKEN"}  # the router
        assert secrets & environment_listening_on(port + 10).keys() == {"PEFM_ADMIN_TOKEN", "PEFM_SHADOW_KEY"}
        # a revision retired by another process (a rollout's loser, after its grace period) is
        # not a crash: the stack goes on
        with Database(schema_url, max_size=1) as db:
            assert LocalRouter(db, {}).retire("inference", revision)
        time.sleep(3)  # the stack looks at its processes every second
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    assert "local stack stopped" in rest and "stopped unexpectedly" not in rest
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/_router/health", timeout=2)
    assert not any(revision_alive(pid, revision) for pid in pids)


def environment_listening_on(port: int) -> dict[str, str]:
    """The environment of the process this machine started to listen on ``port`` (its
    LISTEN_ADDRESS), read from /proc."""
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            pairs = [item.split("=", 1) for item in environ.read_text().split("\0") if "=" in item]
        except OSError:  # gone, or not ours
            continue
        if ["LISTEN_ADDRESS", f"127.0.0.1:{port}"] in pairs:
            return dict(pairs)
    raise AssertionError(f"no process listens on {port}")


def test_rollout_run_exits_1_when_the_rollout_was_rolled_back(cli_env, db):
    """CI/CD relies on the exit status: 1 for a rolled-back rollout, 0 for a promoted one."""
    from pefm.rollout.controller import RolloutController
    from pefm.rollout.local import LocalRouter
    from pefm.rollout.providers import DatabaseProvider
    from pefm.rollout.router import TrafficTarget
    from pefm.rollout.spec import RolloutSpec

    router = LocalRouter(db, {"inference": "http://127.0.0.1:9"})  # never reached: the rollouts are not ticked
    router.set_traffic("inference", [TrafficTarget("pefm-inference-blue", 100, "blue")])
    with db.connection() as conn:  # recorded, not started: `rollout run` reads the rollout's record only
        record_revision(conn, "inference", "pefm-inference-green", ["http://pefm-inference-green.invalid"])
    controller = RolloutController(db, router, DatabaseProvider(db), prober=None)
    rolled_back = controller.start("inference", "pefm-inference-green", RolloutSpec())
    controller.rollback(rolled_back)
    result = run(cli_env, "rollout", "run", str(rolled_back))
    assert result.returncode == 1 and f"rollout {rolled_back}: RolledBack, green 0%" in result.stdout
    shown = json.loads(run(cli_env, "rollout", "status", str(rolled_back), "--json").stdout)
    assert shown["phase"] == "RolledBack" and shown["weight"] == 0
    assert [e["action"] for e in shown["events"]][-1] == "rollback"
    status = run(cli_env, "status", "--json")  # no model is registered: they disagree, exit 1 as the text
    assert status.returncode == 1 and json.loads(status.stdout)["problems"] == [
        "no model version is serving in the registry"
    ]
    # no model is registered here: a spec without gates lets the operator promote
    promoted = controller.start("inference", "pefm-inference-green", RolloutSpec(require_gates=False))
    controller.promote(promoted)
    result = run(cli_env, "rollout", "run", str(promoted))
    assert result.returncode == 0 and f"rollout {promoted}: Succeeded, green 100%" in result.stdout


def test_a_rollout_of_a_candidate_never_gated_says_it_waits_for_the_gates(cli_env, db):
    """The analysis holds such a rollout at 0% until the candidate has a gate report (it may be
    gated meanwhile); `rollout start` says so at once, where before only `rollout run`'s log did."""
    from pefm.rollout.controller import RolloutController
    from pefm.rollout.local import LocalRouter
    from pefm.rollout.providers import DatabaseProvider
    from pefm.rollout.router import TrafficTarget

    assert run(cli_env, "data", "load", "realgdp").returncode == 0
    trained = run(cli_env, "train", "--model", "naive", "-s", "realgdp", "--windows", "0")
    candidate = re.search(r"registered (naive-\S+)", trained.stdout).group(1)
    LocalRouter(db, {}).set_traffic("inference", [TrafficTarget("pefm-inference-blue", 100, "blue")])
    with db.connection() as conn:
        record_revision(conn, "inference", "pefm-inference-green", ["http://pefm-inference-green.invalid"])
    started = run(cli_env, "rollout", "start", "--green", "pefm-inference-green", "--model-version", candidate)
    assert started.returncode == 0, started.stderr
    said = " ".join(started.stderr.split())
    assert f"waiting at 0%: the candidate {candidate} has no gate report; run pefm gate --candidate {candidate}" in said
    rollout_id = int(re.search(r"rollout (\d+) started", started.stdout).group(1))
    RolloutController(db, LocalRouter(db, {}), DatabaseProvider(db), prober=None).rollback(rollout_id)


def test_rollout_deploy_needs_a_knative_namespace(cli_env):
    """Locally, revisions are started by pefm up and pefm retrain: deploy says so and exits 2."""
    result = run(cli_env, "rollout", "deploy", "--model-version", "ar-1")
    assert result.returncode == 2 and "set PEFM_KNATIVE_NAMESPACE" in result.stderr


def test_a_restarted_stack_rolls_back_what_it_left_unfinished_and_settles_on_the_winner(db):
    """pefm up's start: its earlier revisions no longer run, so an unfinished rollout is rolled back
    and the newest rollout settles at once on its winner, the revision the stack starts."""
    from pefm.cli.stack import _serve_only, _settle
    from pefm.rollout.controller import RolloutController
    from pefm.rollout.local import LocalRouter
    from pefm.rollout.router import TrafficTarget, sole
    from pefm.rollout.spec import RolloutSpec

    router = LocalRouter(db, {"inference": "http://127.0.0.1:9"})  # never reached: no revision runs
    router.set_traffic("inference", sole("pefm-inference-blue"))
    with db.connection() as conn:  # recorded, not started: a stack that stopped left it so
        record_revision(conn, "inference", "pefm-inference-green", ["http://pefm-inference-green.invalid"])
    controller = RolloutController(db, router, provider=None, prober=None)
    rollout_id = controller.start("inference", "pefm-inference-green", RolloutSpec())  # left Initializing
    _settle(db, router)
    _serve_only(router, "pefm-inference-blue")
    rollout = controller.get(rollout_id)
    assert rollout.state.phase.value == "RolledBack" and rollout.finalized_at is not None
    assert router.traffic("inference") == [TrafficTarget("pefm-inference-blue", 100, "blue")]
    assert [e["action"] for e in controller.events(rollout_id)] == ["start", "rollback", "finalize"]
    assert "the local stack restarted" in controller.events(rollout_id)[1]["reason"]


def test_a_restarted_stack_routes_the_revision_it_starts_when_the_last_winner_is_not_it(db):
    """After `pefm models promote`, the last rollout's winner no longer serves the serving version,
    and the restarted stack starts the serving version's revision instead: it routed all traffic
    to the winner, which no longer ran, and every request was answered 503."""
    from pefm.cli.stack import _serve_only, _settle
    from pefm.rollout.controller import RolloutController
    from pefm.rollout.local import LocalRouter
    from pefm.rollout.router import sole
    from pefm.rollout.spec import RolloutSpec

    router = LocalRouter(db, {"inference": "http://127.0.0.1:9"})  # never reached: no revision runs
    router.set_traffic("inference", sole("pefm-inference-blue"))
    with db.connection() as conn:
        record_revision(conn, "inference", "pefm-inference-green", ["http://pefm-inference-green.invalid"])
    controller = RolloutController(db, router, provider=None, prober=None, grace_seconds=0)
    rollout_id = controller.start("inference", "pefm-inference-green", RolloutSpec(require_gates=False))
    assert controller.promote(rollout_id).weight == 100
    _settle(db, router)  # the stack stopped; it starts again with another version's revision
    with db.connection() as conn:
        record_revision(conn, "inference", "pefm-inference-promoted", ["http://pefm-inference-promoted.invalid"])
    _serve_only(router, "pefm-inference-promoted")
    assert router.traffic("inference") == sole("pefm-inference-promoted")
    assert controller.get(rollout_id).state.phase.value == "Succeeded"


def test_status_takes_an_unpinned_local_revision_as_serving_the_serving_version(db):
    """Compose registers blue and green without a version; each loads the registry's serving one
    at its start, as a rollout (and the cluster's status) takes it. `pefm status` called every such
    revision a disagreement, so it always exited 1 there. A revision nobody registered still is.
    One that started before a promotion follows it (``tests/functions/test_inference_follows_registry.py``)."""
    from pefm.data.bundled import bundled
    from pefm.data.loading import load_bundled
    from pefm.forecasting.registry import promote
    from pefm.forecasting.training import train
    from pefm.rollout.controller import RolloutController
    from pefm.rollout.local import LocalRouter
    from pefm.rollout.router import sole
    from pefm.rollout.status import service_status

    with db.connection() as conn:
        load_bundled(conn, bundled(["realgdp"]))
        version, _ = train(conn, "naive", ["realgdp"], spec=None)
        promote(conn, version.id)
    with db.connection() as conn:  # registered once that serves, as compose's init does after `pefm up --no-serve`
        record_revision(conn, "inference", "pefm-inference-blue", ["http://inference-blue.invalid"])
    router = LocalRouter(db, {"inference": "http://127.0.0.1:9"})  # never reached
    router.set_traffic("inference", sole("pefm-inference-blue"))
    controller = RolloutController(db, router, provider=None, prober=None)
    status = service_status(controller, "inference")
    assert status.problems == [] and [t.model_version for t in status.targets] == [version.id]
    router.set_traffic("inference", sole("pefm-inference-gone"))
    assert service_status(controller, "inference").problems[0] == (
        f"pefm-inference-gone carries 100% and serves an unknown version, but the registry says {version.id}"
    )
    # promoted by hand since blue started: blue follows it
    router.set_traffic("inference", sole("pefm-inference-blue"))
    with db.connection() as conn:
        later, _ = train(conn, "mean", ["realgdp"], spec=None)
        promote(conn, later.id)
    status = service_status(controller, "inference")
    assert status.problems == [] and [t.model_version for t in status.targets] == [later.id]


def test_db_status_lists_the_migrations_and_says_whether_timescaledb_is_used(cli_env):
    assert run(cli_env, "db", "migrate").returncode == 0
    status = run(cli_env, "db", "status")
    assert status.returncode == 0, status.stderr
    assert "0009" in status.stdout and "pending" not in status.stdout
    text = " ".join(status.stdout.split())
    if "observations is a hypertable" not in text:  # ci.yml's TimescaleDB job takes that branch
        assert "timescaledb: not used, plain PostgreSQL tables (" in text


def test_db_roles_sql_prints_the_verifier_of_a_role_password_not_the_password(cli_env):
    """The one-time SQL for a user who may create roles carries each set password's SCRAM
    verifier (``storage.roles.password_verifiers``), never the password."""
    password = "a password for the monitor"
    printed = run({**cli_env, "PEFM_ROLE_PASSWORD_MONITOR": password}, "db", "roles", "--sql")
    assert printed.returncode == 0, printed.stderr
    assert password not in printed.stdout
    assert re.search(r"""^ALTER ROLE "pefm_monitor" PASSWORD 'SCRAM-SHA-256\$4096:""", printed.stdout, re.M), (
        printed.stdout
    )


def test_a_setting_a_policy_or_an_id_pefm_cannot_use_is_one_red_line(db, cli_env, tmp_path):  # db: migrated
    """Wherever a command meets it: exit code 1 and the message, no traceback."""

    def said(result: subprocess.CompletedProcess[str]) -> str:
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        return " ".join(result.stderr.split())

    served = run({**cli_env, "PEFM_MAX_BODY_BYTES": "-5"}, "serve", "inference")
    assert said(served) == "error: PEFM_MAX_BODY_BYTES must be at least 1, not -5"
    policy = tmp_path / "drift.toml"
    policy.write_text('reference = "x"\n')
    checked = run({**cli_env, "PEFM_DRIFT_POLICY": str(policy)}, "drift", "check")
    assert said(checked) == f"error: {policy}: reference must be an integer, not 'x'"
    assert said(run(cli_env, "drift", "report", "99999")) == "error: no drift report 99999"
    spec = tmp_path / "rollout.yaml"
    for text, why in (("steps: [10, 5]\n", "steps must rise"), ("checks: [{nme: x}]\n", "nme"), ("[1\n", "expected")):
        spec.write_text(text)
        for command in (("rollout", "start", "--green", "x"), ("knative", "canary")):
            refused = said(run(cli_env, *command, "--spec", str(spec)))
            assert refused.startswith(f"error: rollout spec {spec}: ") and why in refused, refused
    missing = said(run(cli_env, "knative", "canary", "--spec", str(tmp_path / "nowhere.yaml")))
    assert missing.startswith(f"error: rollout spec {tmp_path / 'nowhere.yaml'}: ") and "No such file" in missing


def test_model_commands_refuse_what_they_cannot_use_before_any_work(db, cli_env, tmp_path):  # db: migrated
    """Arguments a model cannot take (an unknown parameter, one of the wrong type, a series named
    twice, an as-of after now), a report path that cannot be written, the serving version gated
    against itself, a drift check of a series the model does not forecast, a revision said to serve
    a version the registry lacks: a one-line refusal each, nothing stored. `models show` shows the status,
    and a promotion by hand says what it overrides: no gate report, series left unserved."""

    def said(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
        assert result.returncode == code and "Traceback" not in result.stderr, result.stderr
        return " ".join(result.stderr.split())

    assert run(cli_env, "data", "load", "realgdp", "unemp").returncode == 0
    assert "--h" in said(run(cli_env, "train", "--model", "mean", "-s", "realgdp", "--h", "0"), code=2)
    refused = run(cli_env, "train", "--model", "naive", "-s", "realgdp", "--windows", "0", "-p", "foo=1")
    assert said(refused) == "error: --param: naive takes no parameter foo (its parameters: none)"
    trained = run(cli_env, "train", "--model", "mean", "-s", "realgdp", "-s", "unemp", "--windows", "0")
    version = re.search(r"registered (mean-\S+)", trained.stdout).group(1)
    promoted = run(cli_env, "models", "promote", version)
    assert promoted.returncode == 0 and "promoted by hand: never gated" in promoted.stderr, promoted.stderr
    shown = run(cli_env, "models", "show", version)
    assert shown.returncode == 0 and f"{version}  mean  [serving]" in shown.stdout, shown.stdout
    itself = run(cli_env, "gate", "--candidate", version)
    assert said(itself) == f"error: {version} is the serving version: there is nothing to gate it against"
    nowhere = run(cli_env, "gate", "--candidate", version, "--json", str(tmp_path / "no" / "report.json"))
    assert "no directory" in said(nowhere, code=2)
    assert "is a directory" in said(run(cli_env, "gate", "--candidate", version, "--json", str(tmp_path)), code=2)
    assert "name a file" in said(run(cli_env, "knative", "canary", "--output", str(tmp_path / "no" / "c.yaml")), 2)
    typed = run(cli_env, "train", "--model", "ar", "-s", "realgdp", "--windows", "0", "-p", "max_lag=abc")
    assert said(typed) == "error: --param: ar: max_lag must be None or an integer >= 0, got 'abc'"
    ranged = run(cli_env, "train", "--model", "mean", "-s", "realgdp", "--windows", "0", "-p", "window=1")
    assert said(ranged) == "error: --param: mean: window must be None or an integer >= 2, got 1"
    twice = run(cli_env, "train", "--model", "naive", "-s", "realgdp", "-s", "realgdp", "--windows", "0")
    assert "given more than once: realgdp" in said(twice, code=2)
    future = run(cli_env, "train", "--model", "naive", "-s", "realgdp", "--windows", "0", "--as-of", "2999-01-01")
    assert "is after now" in said(future, code=2)
    assert "does not forecast nosuch: nothing checked" in said(run(cli_env, "drift", "check", "-s", "nosuch"))
    unknown = run(cli_env, "local", "register", "inference", "rev-x", "http://127.0.0.1:9", "--model-version", "nosuch")
    assert said(unknown) == "error: no model version 'nosuch' in the registry"
    assert "greater than or equal to 0" in said(run(cli_env, "series", "show", "realgdp", "--tail", "-1"), code=2)
    assert "one of candidate, serving, retired, rejected" in said(run(cli_env, "models", "list", "--status", "x"), 2)
    with db.connection() as conn:
        assert get_version(conn, version).gate_report is None  # no report stored by any of them
    narrower = run(cli_env, "train", "--model", "naive", "-s", "realgdp", "--windows", "0")
    narrow = re.search(r"registered (naive-\S+)", narrower.stdout).group(1)
    # where its signer's key is not trusted (a rotated-out key), no revision would load it: not promoted
    elsewhere = {k: v for k, v in cli_env.items() if k != "PEFM_SIGNING_KEY"}
    elsewhere["PEFM_VERIFY_KEYS"] = signing.generate()[1]
    untrusted = said(run(elsewhere, "models", "promote", narrow))
    assert untrusted.startswith(f"error: {narrow} is not promoted: ") and "not one trusted here" in untrusted, untrusted
    with db.connection() as conn:
        assert get_version(conn, narrow).status == "candidate" and get_version(conn, version).status == "serving"
    replaced = run(cli_env, "models", "promote", narrow)
    assert replaced.returncode == 0 and "no model serves now: unemp" in " ".join(replaced.stderr.split())


def test_train_refuses_an_as_of_it_cannot_read(cli_env):
    refused = run(cli_env, "train", "--model", "naive", "-s", "realgdp", "--windows", "0", "--as-of", "garbage")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "--as-of" in refused.stderr and "not a date: 'garbage'" in refused.stderr


def test_retrain_refuses_a_model_or_a_backtest_it_cannot_run(cli_env):
    """An unknown family was reported as unknown series, and --windows 0 was silently dropped."""
    unknown = run(cli_env, "retrain", "--model", "nope", "--dry-run")
    assert unknown.returncode == 2 and "--model" in unknown.stderr and "'nope'" in unknown.stderr, unknown.stderr
    for option in ("--windows", "--h"):
        zero = run(cli_env, "retrain", option, "0", "--dry-run")
        assert zero.returncode == 2 and option in zero.stderr and "Traceback" not in zero.stderr, zero.stderr


def test_models_sign_covers_the_forecasts_and_a_tampered_artifact_is_one_red_line(db, cli_env):  # db: migrated
    from pefm.config import Settings
    from pefm.storage.model_versions import read_precomputed, verify_signature
    from pefm.storage.signing import trusted_keys

    assert run(cli_env, "data", "load", "realgdp").returncode == 0
    trained = run(cli_env, "train", "--model", "naive", "-s", "realgdp", "--windows", "0")
    version = re.search(r"registered (naive-\S+)", trained.stdout).group(1)
    with db.connection() as conn:  # its digest removed: its signature no longer verifies, so it is not signed again
        sha256 = get_version(conn, version).artifact_sha256
        conn.execute("UPDATE model_versions SET precomputed_sha256 = NULL WHERE id = %s", (version,))
    refused = run(cli_env, "models", "sign")
    assert refused.returncode == 1 and "does not match" in refused.stderr and "not signed again" in refused.stderr
    old = signing.private_key(cli_env["PEFM_SIGNING_KEY"]).sign(  # as versions signed before the forecasts were
        signing.MESSAGE_V1.format(id=version, family="naive", sha256=sha256).encode()
    )
    with db.connection() as conn:
        conn.execute("UPDATE model_versions SET artifact_signature = %s WHERE id = %s", (old, version))
    signed = run(cli_env, "models", "sign")  # by default, every version signed without its forecasts
    assert signed.returncode == 0 and f"{version}: signed with key" in signed.stdout, signed.stderr
    with db.connection() as conn:
        verify_signature(conn, version, trusted_keys(Settings(verify_keys=cli_env["PEFM_VERIFY_KEYS"])))
        stored = get_version(conn, version).precomputed_sha256
        assert stored == signing.precomputed_digest(read_precomputed(conn, version))
        conn.execute("UPDATE model_versions SET artifact = artifact || '\\x00'::bytea WHERE id = %s", (version,))
    refused = run(cli_env, "models", "sign", version)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert " ".join(refused.stderr.split()) == f"error: {version}: the artifact does not match its sha256; not signed"


class _Marker:
    """A pickle whose loading creates ``path``: what a forged artifact would do, harmlessly."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _plant_unsigned(conn: psycopg.Connection, version_id: str, artifact: bytes, created_at: str | None = None) -> None:
    """An unsigned registry row, as a role that may INSERT into model_versions writes one."""
    import hashlib

    conn.execute(
        """INSERT INTO model_versions (id, family, params, series_ids, data_as_of, data_sha256, artifact,
                                       artifact_sha256, created_at)
           VALUES (%s, 'naive', '{}', ARRAY['realgdp'], now(), %s, %s, %s, coalesce(%s::timestamptz, now()))""",
        (version_id, "0" * 64, artifact, hashlib.sha256(artifact).hexdigest(), created_at),
    )


def test_models_sign_never_signs_an_unsigned_row_the_trainer_role_wrote_unless_named_and_forced(
    db, cli_env, schema_url, tmp_path
):  # db: migrated
    """The trainer's database role, without the signing key, inserts unsigned rows holding a
    pickle that runs code, one with the created_at of a row from before signing: a plain
    `pefm models sign` (the README's step for rows that predate signing) signs neither, so
    nothing loads them; named, the first is refused without --force-unsigned."""
    import pickle

    from pefm.config import Settings
    from pefm.forecasting.registry import load_model
    from pefm.storage.roles import role_url
    from pefm.storage.signing import ArtifactSignatureError, trusted_keys

    marker = tmp_path / "PWNED"
    evil = pickle.dumps(_Marker(marker))
    with psycopg.connect(role_url(schema_url, "trainer"), autocommit=True) as trainer:
        assert trainer.execute("SELECT current_user").fetchone()[0] == "pefm_trainer"
        _plant_unsigned(trainer, "forged-1", evil)
        _plant_unsigned(trainer, "forged-2", evil, created_at="2000-01-01")  # its created_at says nothing
    signed = run(cli_env, "models", "sign")
    assert signed.returncode == 0 and "Traceback" not in signed.stderr, signed.stderr
    assert "signed with key" not in signed.stdout and "nothing signed" in signed.stdout, signed.stdout
    said = " ".join(signed.stderr.split())
    assert "not signed: forged-1 (" in said and "`pefm models sign forged-1 --force-unsigned`" in said, said
    assert "not signed: forged-2 (2000-01-01 00:00:00 UTC, naive): its row was written after signing" in said, said
    refused = run(cli_env, "models", "sign", "forged-1")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    one_line = " ".join(refused.stderr.split())
    assert one_line.startswith("error: forged-1 was registered unsigned (") and "--force-unsigned" in one_line
    assert "after signing became mandatory: not signed" in one_line and refused.stdout == "", refused.stdout
    with db.connection() as conn:
        rows = conn.execute("SELECT id, artifact_key FROM model_versions ORDER BY id").fetchall()
        assert rows == [("forged-1", None), ("forged-2", None)]
        for version_id in ("forged-1", "forged-2"):
            with pytest.raises(ArtifactSignatureError, match="is not signed"):
                load_model(conn, version_id, trusted_keys(Settings(verify_keys=cli_env["PEFM_VERIFY_KEYS"])))
    assert not marker.exists()


def test_models_sign_signs_unnamed_only_rows_from_before_signing_and_lists_them_first(schema_url, cli_env, monkeypatch):
    """A registry from before migration 0012: its unsigned rows nothing has written since are
    signed by default; one written since (a status change) when named; one registered unsigned
    after signing became mandatory only named with --force-unsigned."""
    from pefm.config import Settings
    from pefm.storage import migrate as migrate_module
    from pefm.storage.model_versions import verify_signature
    from pefm.storage.signing import trusted_keys

    shipped = migrate_module.shipped_migrations()
    with psycopg.connect(schema_url, autocommit=True) as conn:
        monkeypatch.setattr(migrate_module, "shipped_migrations", lambda: [m for m in shipped if m.version < 12])
        migrate_module.migrate(conn)
        for version_id in ("legacy-1", "legacy-2"):
            _plant_unsigned(conn, version_id, b"legacy artifact", created_at="2026-01-01")
        monkeypatch.undo()
        assert 12 in [m.version for m in migrate_module.migrate(conn)]
        conn.execute("UPDATE model_versions SET status = 'retired' WHERE id = 'legacy-2'")
        _plant_unsigned(conn, "late-1", b"late artifact")
    signed = run(cli_env, "models", "sign")
    assert signed.returncode == 0 and "Traceback" not in signed.stderr, signed.stderr
    listed = re.search(r"to sign(.*?)legacy-1: signed with key", signed.stdout, re.DOTALL)
    assert listed and re.search(r"legacy-1\s+2026-01-01 00:00:00 UTC\s+naive\s+unsigned, registered before", listed[1])
    assert "legacy-2: signed" not in signed.stdout and "late-1: signed" not in signed.stdout, signed.stdout
    said = " ".join(signed.stderr.split())
    assert "not signed: legacy-2 (2026-01-01 00:00:00 UTC, naive): its row was written after" in said, said
    assert "`pefm models sign legacy-2` signs it" in said and "`pefm models sign late-1 --force-unsigned`" in said
    named = run(cli_env, "models", "sign", "legacy-2")
    assert named.returncode == 0 and "legacy-2: signed with key" in named.stdout, named.stderr
    refused = run(cli_env, "models", "sign", "late-1", "legacy-1")  # nothing signed, not even legacy-1 again
    assert refused.returncode == 1 and "error: late-1 was registered unsigned" in refused.stderr, refused.stderr
    assert "signed with key" not in refused.stdout
    unknown = run(cli_env, "models", "sign", "nosuch")
    assert (
        unknown.returncode == 1
        and " ".join(unknown.stderr.split()) == "error: unknown model version 'nosuch'; nothing signed"
    )
    forced = run(cli_env, "models", "sign", "late-1", "--force-unsigned")
    assert forced.returncode == 0 and "late-1: signed with key" in forced.stdout, forced.stderr
    assert "unsigned, after signing: forced" in forced.stdout
    again = run(cli_env, "models", "sign")
    assert again.returncode == 0 and again.stdout.strip() == "every version is signed" and again.stderr == ""
    with psycopg.connect(schema_url) as conn:
        for version_id in ("legacy-1", "legacy-2", "late-1"):
            verify_signature(conn, version_id, trusted_keys(Settings(verify_keys=cli_env["PEFM_VERIFY_KEYS"])))


def test_a_promotion_by_hand_says_what_the_local_traffic_still_serves(db, cli_env):
    """`pefm models promote` changes the registry; a local stack's revisions keep their traffic,
    and the command says so (no traffic block, as before any `pefm up`: nothing to say)."""
    from pefm.rollout.local import LocalRouter
    from pefm.rollout.router import sole

    def registered(model: str) -> str:
        trained = run(cli_env, "train", "--model", model, "--series", "realgdp", "--windows", "0")
        assert trained.returncode == 0, trained.stderr
        return re.search(rf"registered ({model}-\S+)", trained.stdout).group(1)

    assert run(cli_env, "data", "load", "realgdp").returncode == 0
    first = registered("mean")
    alone = run(cli_env, "models", "promote", first)
    assert alone.returncode == 0 and "traffic unchanged" not in alone.stderr, alone.stderr
    with db.connection() as conn:
        record_revision(conn, "inference", "pefm-inference-first", ["http://first.invalid"], model_version=first)
    LocalRouter(db, {}).set_traffic("inference", sole("pefm-inference-first"))
    second = registered("naive")
    moved = run(cli_env, "models", "promote", second)
    assert moved.returncode == 0 and f"{second} is serving; retired {first}" in moved.stdout, moved.stderr
    said = " ".join(moved.stderr.split())
    unchanged = f"pefm-inference-first carries 100% and serves {first}, but the registry says {second}"
    assert f"traffic unchanged: {unchanged}" in said
