"""MLflow as a mirror of PEFM's registry (``PEFM_MLFLOW_TRACKING_URI``; the ``tracking`` extra).

PEFM's registry stays the source of truth; ``sync`` makes MLflow say the same, and can run any
number of times (it only adds what is missing and moves what changed):

- every model version is a run in experiment ``pefm`` (tag ``pefm.version_id``), started when the
  version was trained: its parameters (family, the model's parameters, series, data cut-off, data
  and artifact sha256, parent), its backtest's metrics per series and horizon
  (``<series>/<metric>/h<k>``, pooled over the horizons ``<series>/<metric>/all``) and their
  medians over the series (``_median/<metric>/h<k>``, ``_median/<metric>/all``: no series id
  starts with ``_``), the gate report and the backtest summary as JSON artifacts, and the
  model artifact itself (the signed bytes, ``model/artifact.pkl``, next to ``model/version.json``);
  a retrain's run says so (tag ``pefm.retrain_of``: the version it was trained to replace); a
  backtest stored later (``pefm backtest --version``) or a gate report (``pefm gate``, retraining)
  is logged to the same run when it appears (metric ``gate/passed``, ``gate_report.json``);
- every version is a version of the registered model ``pefm`` (source: its run's ``model``
  folder), tagged with its PEFM id and registry status;
- a backtest that registers nothing (``pefm backtest`` of a family) is a run of experiment
  ``pefm-backtests`` (``log_backtest``);
- alias ``champion`` names the serving version and ``challenger`` the version an unfinished
  rollout moves traffic to; both move (or go) with the registry's transitions: promotions,
  rollbacks, rejections.

Nothing is read back from MLflow: a run deleted there is made again at the next sync, and so is
one a failed sync left unfinished (a run is finished last, once its artifacts are logged). The
registry announces every change on PostgreSQL's channel ``pefm_registry`` when it commits
(migrations 0013 and 0020: versions registered, status, gate report and backtest changes,
rollouts started and ended, whoever made them: training, retraining, ``pefm backtest --version``,
the local controller, Flagger's webhooks); a ``Mirror`` listens and syncs, in the rollout API
(``pefm serve rollout``) or on its own (``pefm tracking sync --follow``); ``pefm tracking sync``
once. A failing MLflow never fails the change itself: it is logged and the next sync catches up.

An MLflow server that is away fails a sync or a backtest's logging in seconds, not minutes:
``TrackingUnavailable`` from a probe of its ``/health`` (``PROBE_TIMEOUT`` seconds) before anything
else, and MLflow's own retries bounded (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
``MLFLOW_HTTP_REQUEST_TIMEOUT``; ``HTTP_DEFAULTS`` unless the environment sets them) for one that
goes away part-way through.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from pefm.storage.model_versions import ModelVersion

log = logging.getLogger(__name__)
EXPERIMENT = "pefm"
BACKTESTS = "pefm-backtests"
MODEL = "pefm"
CHAMPION, CHALLENGER = "champion", "challenger"
_FINISHED = ("Succeeded", "Failed", "RolledBack")
PROBE_TIMEOUT = 5.0
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
"""MLflow's defaults (7 retries with exponential backoff, 120 s a request) keep a caller waiting
about four minutes for a server that is away; PEFM's mirror catches up at its next sync instead."""


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server did not answer (or answered that it is unwell), or PEFM's
    MLflow client (the ``tracking`` extra) is not installed."""


def require_client() -> None:
    """Raise ``TrackingUnavailable`` unless MLflow's client (the ``tracking`` extra) is installed;
    set MLflow's ``HTTP_DEFAULTS`` where the environment does not."""
    try:
        import mlflow  # noqa: F401
    except ImportError as exc:
        raise TrackingUnavailable(
            f"the MLflow client is not installed ({exc}): install PEFM with the `tracking` extra "
            "(pip install 'pefm[tracking]')"
        ) from None
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def public_uri(uri: str) -> str:
    """``uri`` without the user and password it may carry: what a message, a log line or a browser's
    link may show."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def scrubbed(text: str, uri: str) -> str:
    """``text`` (an error's message) without the password of ``uri``, as written or URL-quoted,
    and with ``uri`` itself shown as ``public_uri``: MLflow's and httpx's messages may quote the
    URL they were given."""
    from urllib.parse import unquote, urlsplit

    text = text.replace(uri, public_uri(uri))
    if password := urlsplit(uri).password:
        for secret in {password, unquote(password)}:
            text = text.replace(secret, "***")
    return text


def check_reachable(tracking_uri: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Raise ``TrackingUnavailable`` unless PEFM can talk to MLflow at ``tracking_uri``: the client
    is installed (``require_client``) and, for an http(s) URI, the server's ``/health`` answers
    within ``timeout`` seconds with anything but a server error (a 5xx is what a proxy in front of
    a stopped server says). Other URIs (a file or database store) are left to MLflow."""
    require_client()
    if not tracking_uri.lower().startswith(("http://", "https://")):
        return
    import httpx

    url = f"{tracking_uri.rstrip('/')}/health"
    try:
        status = httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError as exc:
        raise TrackingUnavailable(
            f"MLflow at {public_uri(tracking_uri)} is unreachable "
            f"({type(exc).__name__}: {scrubbed(str(exc), tracking_uri) or 'no answer'})"
        ) from None
    if status >= 500:
        shown = public_uri(tracking_uri)
        raise TrackingUnavailable(f"MLflow at {shown} is unwell: GET {shown.rstrip('/')}/health answered {status}")


@dataclass
class SyncReport:
    runs_created: list[str]
    versions_created: list[str]
    champion: str | None
    challenger: str | None


def sync(conn: psycopg.Connection, tracking_uri: str) -> SyncReport:
    """Mirror the registry into MLflow at ``tracking_uri`` (see the module's docstring). One sync
    at a time (a session advisory lock: mirrors in several processes wait their turn), so that
    none takes another's run, still being logged, for one a failed sync left unfinished.
    ``TrackingUnavailable`` (before taking the lock) when MLflow cannot be reached."""
    check_reachable(tracking_uri)
    conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (SYNC_LOCK,))
    try:
        return _sync(conn, tracking_uri)
    finally:
        if conn.info.transaction_status.name == "INERROR":  # a failed statement: end its transaction
            conn.rollback()
        conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (SYNC_LOCK,))


SYNC_LOCK = "pefm.tracking.sync"


def _sync(conn: psycopg.Connection, tracking_uri: str) -> SyncReport:
    from mlflow import MlflowClient

    from pefm.forecasting.registry import serving_id
    from pefm.storage.model_versions import get_version, list_versions

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    runs = {}
    for run in client.search_runs([experiment_id], max_results=50_000):
        if "pefm.version_id" not in run.data.tags:
            continue
        if run.info.status == "FINISHED":
            runs[run.data.tags["pefm.version_id"]] = run
        else:  # a sync that failed part-way through logging it (set_terminated comes last): again
            client.delete_run(run.info.run_id)
    if not client.search_registered_models(filter_string=f"name = '{MODEL}'"):
        client.create_registered_model(MODEL, description="PEFM's registry, mirrored (pefm.tracking)")
    mirrored = {mv.tags.get("pefm.version_id"): mv for mv in client.search_model_versions(f"name = '{MODEL}'")}
    report = SyncReport([], [], None, None)
    # each backtest without its forecasts from every origin (most of its size): what the metrics
    # and the digest need; the whole backtest is read only for a run that logs it (backtest.json)
    versions = sorted(list_versions(conn, forecasts=False), key=lambda v: v.created_at)  # MLflow numbers them so
    for version in versions:
        if version.id not in runs:
            runs[version.id] = _log_run(conn, client, experiment_id, version)
            report.runs_created.append(version.id)
        run_id, tags = runs[version.id].info.run_id, runs[version.id].data.tags
        if tags.get("pefm.record") != _digest(version):  # a backtest stored or a gate report made since
            _record(client, run_id, get_version(conn, version.id), _digest(version))
        if tags.get("pefm.status") != version.status:
            client.set_tag(run_id, "pefm.status", version.status)
        mv = mirrored.get(version.id)
        if mv is not None and mv.run_id != run_id:  # made for a run that was logged again since
            client.delete_model_version(MODEL, mv.version)
            mv = None
        if mv is None:
            mv = client.create_model_version(
                MODEL,
                source=f"runs:/{run_id}/model",
                run_id=run_id,
                tags={"pefm.version_id": version.id},
                description=f"{version.family} on {', '.join(version.series_ids)[:200]}",
            )
            mirrored[version.id] = mv
            report.versions_created.append(version.id)
        if mv.tags.get("pefm.status") != version.status:
            client.set_model_version_tag(MODEL, mv.version, "pefm.status", version.status)
    serving = serving_id(conn)  # THE answer to "which model serves"
    row = conn.execute(
        "SELECT green_model_version FROM rollouts WHERE phase <> ALL(%s) ORDER BY created_at DESC LIMIT 1",
        (list(_FINISHED),),
    ).fetchone()
    candidate = row[0] if row and row[0] in mirrored and row[0] != serving else None
    # challenger first: a promotion clears it before champion moves, so that no reader in between
    # sees one version under both aliases
    for alias, version_id in ((CHALLENGER, candidate), (CHAMPION, serving)):
        _point(client, alias, mirrored[version_id].version if version_id else None)
    report.champion, report.challenger = serving, candidate
    return report


class Mirror:
    """Sync on every announcement of ``pefm_registry`` (gathered for ``settle`` seconds), and every
    ``every`` seconds anyway; with a connection of its own, reconnecting when it is lost."""

    def __init__(
        self, url: str, tracking_uri: str, stopping: threading.Event, *, every: float = 300.0, settle: float = 1.0
    ):
        self.url, self.tracking_uri, self.stopping = url, tracking_uri, stopping
        self.every, self.settle = every, settle
        self.synced = threading.Event()
        """Set after each sync that succeeded (tests wait on it)."""

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="pefm-mlflow-mirror", daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        import psycopg

        from pefm.storage.channels import REGISTRY_CHANNEL

        backoff = 1.0
        while not self.stopping.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {REGISTRY_CHANNEL}")
                    while not self.stopping.is_set():
                        self._sync(conn)
                        self._wait(conn)
                        backoff = 1.0
            except Exception as exc:  # the database away: retry, then sync everything
                log.warning("MLflow mirror paused (%s: %s); retrying in %.0f s", type(exc).__name__, exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 60.0)

    def _sync(self, conn) -> None:
        try:
            report = sync(conn, self.tracking_uri)
        except Exception as exc:  # MLflow away or refusing: the registry is the truth, mirror later
            import psycopg

            if isinstance(exc, psycopg.Error):
                raise
            why = scrubbed(str(exc), self.tracking_uri)
            log.warning("MLflow mirror not updated (%s: %s); retrying later", type(exc).__name__, why)
            return
        if report.runs_created or report.versions_created:
            log.info("MLflow mirror: runs for %s", ", ".join(report.runs_created) or "none")
        self.synced.set()

    def _wait(self, conn) -> None:
        """Until an announcement (then ``settle`` seconds more, gathering the rest) or ``every``."""
        deadline = time.monotonic() + self.every
        while not self.stopping.is_set() and time.monotonic() < deadline:
            if any(True for _ in conn.notifies(timeout=min(1.0, deadline - time.monotonic()), stop_after=1)):
                self.stopping.wait(self.settle)
                for _ in conn.notifies(timeout=0.01):
                    pass
                return


def log_backtest(
    tracking_uri: str, family: str, params: dict[str, Any], series_ids: list[str], summary: dict[str, Any]
) -> str:
    """A backtest that registers nothing (``pefm backtest`` of a family) as a run of experiment
    ``pefm-backtests``: the family, its parameters, the series and the spec, the metrics as a
    version's run has them, the summary as an artifact. Its run id. ``TrackingUnavailable`` when
    MLflow cannot be reached."""
    check_reachable(tracking_uri)
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(BACKTESTS)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(BACKTESTS)
    run_id = client.create_run(experiment_id, tags={"pefm.family": family}).info.run_id
    now = int(time.time() * 1000)
    values = {
        "family": family,
        "series": ",".join(series_ids)[:6000],
        **{f"spec.{k}": v for k, v in summary["spec"].items()},
        **{f"model.{k}": json.dumps(v, default=str)[:6000] for k, v in sorted(params.items())},
    }
    items = [Param(k, str(v)) for k, v in values.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100])
    metrics = [Metric(k, v, now, 0) for k, v in _metrics(summary).items()]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    with tempfile.TemporaryDirectory(prefix="pefm-mlflow-") as tmp:
        path = Path(tmp) / "backtest.json"
        path.write_text(json.dumps(summary, indent=1, default=str))
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _point(client, alias: str, version: str | None) -> None:
    """Point ``alias`` at ``version`` (None: remove it)."""
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(MODEL, alias).version
    except MlflowException:
        current = None
    if current == version:
        return
    if version is None:
        client.delete_registered_model_alias(MODEL, alias)
    else:
        client.set_registered_model_alias(MODEL, alias, version)


def _log_run(conn: psycopg.Connection, client, experiment_id: str, version: ModelVersion):
    """One version's run, started when it was trained: parameters, tags and the model artifact
    (``_record`` adds the backtest and the gate report)."""
    from mlflow.entities import Param

    from pefm.storage.model_versions import read_artifact

    started = int(version.created_at.timestamp() * 1000)
    tags = {"pefm.version_id": version.id, "pefm.family": version.family, "mlflow.runName": version.id}
    if version.parent_id:
        tags["pefm.retrain_of"] = version.parent_id
    run = client.create_run(experiment_id, start_time=started, tags=tags)
    params = {
        "family": version.family,
        "series": ",".join(version.series_ids)[:6000],
        "data_as_of": version.data_as_of.isoformat(),
        "data_sha256": version.data_sha256,
        "artifact_sha256": version.artifact_sha256,
        "parent": version.parent_id or "",
        **{f"model.{k}": json.dumps(v, default=str)[:6000] for k, v in sorted(version.params.items())},
    }
    items = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes 100 parameters per call
        client.log_batch(run.info.run_id, params=items[i : i + 100])
    artifact, _ = read_artifact(conn, version.id)
    with tempfile.TemporaryDirectory(prefix="pefm-mlflow-") as tmp:
        folder = Path(tmp)
        (folder / "artifact.pkl").write_bytes(artifact)
        (folder / "version.json").write_text(
            json.dumps({"id": version.id, "family": version.family, "sha256": version.artifact_sha256}, indent=2)
        )
        client.log_artifacts(run.info.run_id, str(folder), "model")
    client.set_terminated(run.info.run_id, "FINISHED", end_time=started)
    return client.get_run(run.info.run_id)


def _record(client, run_id: str, version: ModelVersion, digest: str) -> None:
    """The version's backtest (metrics per series and horizon, the summary, its forecasts
    included) and gate report; ``digest``: ``_digest`` of what is logged, read without the
    forecasts."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in _metrics(version.backtest).items()]
    if version.gate_report is not None:
        metrics.append(Metric("gate/passed", float(bool(version.gate_report.get("passed"))), now, 0))
    for i in range(0, len(metrics), 1000):  # MLflow takes 1,000 metrics per call
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    with tempfile.TemporaryDirectory(prefix="pefm-mlflow-") as tmp:
        for name, value in (("gate_report", version.gate_report), ("backtest", version.backtest)):
            if value is not None:
                path = Path(tmp) / f"{name}.json"
                path.write_text(json.dumps(value, indent=1, default=str))
                client.log_artifact(run_id, str(path))
    client.set_tag(run_id, "pefm.record", digest)


def _digest(version: ModelVersion) -> str:
    """What ``_record`` logged, in 16 hex digits: a changed backtest or gate report is logged again.
    Of the backtest without its forecasts (its spec and metrics: a backtest stored again changes
    them) and of the metric keys' scheme (``_KEYS``: a run logged under older keys is logged again)."""
    backtest = {k: v for k, v in version.backtest.items() if k != "forecasts"} if version.backtest else None
    text = json.dumps([_KEYS, backtest, version.gate_report], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_KEYS = 2
"""The metric keys' scheme (``_digest``): 2 gave pooled metrics a leaf of their own (``/all``) and
medians the prefix ``_median``."""
MEDIAN = "_median"
"""The medians' prefix: series ids (``^[a-z0-9][a-z0-9_.-]{0,63}$``) never start with ``_``."""


def _metrics(backtest: dict[str, Any] | None) -> dict[str, float]:
    """A stored backtest's metrics under MLflow's key rules (``rmse@h1`` -> ``rmse/h1``, pooled
    ``rmse`` -> ``rmse/all``), per series and as medians over the series (``_median/rmse/h1``).
    No key is the prefix of another: a file store keeps ``a/b`` as a file, so ``a/b/h1`` fails."""
    if not backtest:
        return {}
    out: dict[str, float] = {}
    by_name: dict[str, list[float]] = {}
    for series_id, metrics in backtest.get("metrics", {}).items():
        for name, value in metrics.items():
            metric, _, horizon = name.partition("@")
            key = f"{metric}/{horizon or 'all'}"
            out[f"{series_id}/{key}"] = float(value)
            by_name.setdefault(key, []).append(float(value))
    out.update({f"{MEDIAN}/{k}": statistics.median(v) for k, v in by_name.items()})
    return out


def run_link(tracking_uri: str, ui_url: str | None, version_id: str, timeout: float = 2.0) -> str | None:
    """The MLflow UI's page of a version's run (None: not mirrored yet), found through MLflow's
    REST API (httpx: the dashboard has no MLflow client); ``ui_url``: where a browser reaches the UI
    (default: the tracking URI, less any user and password in it)."""
    import httpx

    base = tracking_uri.rstrip("/")
    with httpx.Client(timeout=timeout) as client:
        got = client.get(f"{base}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": EXPERIMENT})
        if got.status_code == 404 or (got.status_code == 400 and "RESOURCE_DOES_NOT_EXIST" in got.text):
            return None
        got.raise_for_status()
        experiment_id = got.json()["experiment"]["experiment_id"]
        found = client.post(
            f"{base}/api/2.0/mlflow/runs/search",
            json={
                "experiment_ids": [experiment_id],
                "filter": f"tags.`pefm.version_id` = '{version_id}'",
                "max_results": 1,
            },
        )
        found.raise_for_status()
    runs = found.json().get("runs", [])
    if not runs:
        return None
    base = public_uri(ui_url or tracking_uri).rstrip("/")  # every visitor of the page would get them
    return f"{base}/#/experiments/{experiment_id}/runs/{runs[0]['info']['run_id']}"
