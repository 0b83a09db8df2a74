"""Revision processes: each a function under func-python's serve(new) with its own K_REVISION."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    import httpx

FUNCTIONS = Path(__file__).resolve().parents[3] / "functions"


def serve_command(folder: Path) -> list[str]:
    """The command that serves the function in ``folder`` the way its ``func`` build does: through
    func-python's wrapper for the ``invoke`` its func.yaml names (``http`` or ``cloudevent``)."""
    import yaml

    invoke = yaml.safe_load((folder / "func.yaml").read_text()).get("invoke", "http")
    if invoke not in ("http", "cloudevent"):
        raise ValueError(f"{folder / 'func.yaml'}: unknown invoke {invoke!r}")
    return [sys.executable, "-c", f"from function import new; from func_python.{invoke} import serve; serve(new)"]


@dataclass
class Process:
    name: str
    url: str
    process: subprocess.Popen
    log: Path
    revision: str | None = None
    """The revision it is a replica of, if it is one."""

    def client(self, **kwargs) -> httpx.Client:
        import httpx

        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


INHERITED = frozenset(
    {
        "PEFM_LOG_LEVEL",
        "PEFM_RATE_LIMIT",
        "PEFM_MAX_BODY_BYTES",
        "PEFM_BODY_TIMEOUT_SECONDS",
        "PEFM_POOL_MAX_SIZE",
        "PEFM_MODEL_CONCURRENCY",
        "PEFM_PREDICTION_LOG_QUEUE",
        "PEFM_RECONDITION",
        "PEFM_RETENTION_DAYS",  # the monitor prunes its drift reports
        "PEFM_CACHE_MAX_BYTES",
        "PEFM_CACHE_TTL_SECONDS",
        "PEFM_INGEST_GROUP_MAX",
        "PEFM_INGEST_LARGE_WRITES",
        "PEFM_INGEST_LINGER_MS",
        "PEFM_INGEST_OIDC_AUDIENCE",
        "PEFM_INGEST_OIDC_SUBJECTS",
        "PEFM_KUBERNETES_API_URL",  # where ingest reviews OIDC tokens
        "PEFM_UNAUTHENTICATED_EVENTS",
        "PEFM_VINTAGE_SKEW_SECONDS",
        "PEFM_DRIFT_POLICY",
        "PEFM_GATE_POLICY",
        "PEFM_ROLLOUT_SPEC",
        "PEFM_RETRAIN",
        "PEFM_REVISION_GRACE_SECONDS",
        "PEFM_LOCAL_REPLICAS",
        "PEFM_MLFLOW_UI_URL",
        "PEFM_FRED_URL",
        "PEFM_HOME",
    }
)
"""The settings a process started here takes from this one's environment: how it behaves. Who it
is and what it may do (its database URL and role, tokens, keys, URLs that may carry a password:
Redis's, MLflow's) it is given by its starter, each process only its own; so are its addresses
(``PEFM_ROUTER_URL``, ``PEFM_DASHBOARD_PORT``, ...). Paths are made absolute: a process runs in
its own folder."""
PATHS = ("PEFM_HOME", "PEFM_DRIFT_POLICY", "PEFM_GATE_POLICY", "PEFM_ROLLOUT_SPEC")
STACK = "PEFM_STACK"
"""Not a setting: the ``pefm up`` a process belongs to, as ``<pid>:<start time>`` (``process_identity``).
``pefm up`` puts it in its own environment, so everything it starts inherits it and passes it on
(the revisions the rollout API and retraining start); each of those processes ends once that
``pefm up`` is gone (``watch_stack``), however it ended. A process started from a shell has none,
and outlives the command that started it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(
    command: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log: Path,
    ready_path: str,
    name: str,
    port: int | None = None,
    timeout: float = 60,
) -> Process:
    """Start ``command`` listening on ``port`` (LISTEN_ADDRESS) and wait for ``ready_path`` to
    answer 200 while it runs. A port another process holds is refused before anything starts: its
    answer would pass for the new process's."""
    import httpx  # here: the functions import this module for ``watch_stack``, and their images have no httpx

    if port is None:
        port = free_port()
    elif not port_free(port):
        raise RuntimeError(f"{name}: port {port} is in use (another PEFM stack, or another program)")
    environment = {**inherited_environment(), **env, "LISTEN_ADDRESS": f"127.0.0.1:{port}"}
    log.parent.mkdir(parents=True, exist_ok=True)
    # a process group of its own: a terminal's Ctrl-C or hang-up reaches the command that started
    # it, which stops what it started in order; sent to the whole group, it had killed the
    # functions outright (the router, the dashboard and func-python take no SIGHUP), their
    # buffered log rows lost
    process = subprocess.Popen(
        command, cwd=cwd, env=environment, stdout=log.open("w"), stderr=subprocess.STDOUT, process_group=0
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + ready_path, timeout=2).status_code == 200 and process.poll() is None:
                return Process(name, url, process, log)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{name} not ready in {timeout:.0f} s: {log.read_text()[-3000:]}")


def inherited_environment() -> dict[str, str]:
    """This process's environment as a process started here gets it: no ``K_`` variable, no PEFM
    setting but the ``INHERITED`` ones, and none of libpq's ``PG`` ones (``PGPASSWORD``,
    ``PGSSLKEY``, ``PGSERVICE``, ...): each process is given its own complete connection, and the
    owner's password given that way would be every component's. Nor MLflow's own variables
    (``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``, ...): they go with MLflow's URL, to
    the processes that talk to MLflow (``mlflow_environment``). The ``STACK`` a process belongs to
    is passed on."""
    dropped = ("PEFM_", "K_", "PG", "MLFLOW_")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(dropped) or k in INHERITED or k == STACK}
    return {k: os.path.abspath(v) if k in PATHS and v else v for k, v in inherited.items()}


def mlflow_environment() -> dict[str, str]:
    """MLflow's own variables of this process's environment (its credentials among them), for the
    processes that talk to MLflow alone."""
    return {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}


def process_identity(pid: int) -> str | None:
    """``<pid>:<start time>`` of a live (not zombie) process, None when there is none: the start
    time (clock ticks since boot, from /proc) tells a pid used again from the process that had it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return f"{pid}:{fields[19]}"


def stack_alive(stack: str) -> bool:
    """Whether the ``pefm up`` that ``stack`` (a ``STACK`` value) names still runs."""
    return process_identity(int(stack.partition(":")[0])) == stack


def watch_stack(environ: Mapping[str, str] = os.environ, every: float = 1.0) -> str | None:
    """In a process started by a ``pefm up`` (``STACK`` in ``environ``), a thread that ends the
    process the way SIGTERM does (its servers stop gracefully) within ``every`` seconds of that
    ``pefm up``'s end, however it ended (SIGKILL, the OOM killer), and kills it 30 s later if it
    is still there. Returns the stack, None where there is none (a process started from a shell).
    Not the parent-death signal: that follows the thread that started a process, and revisions are
    started from worker threads."""
    stack = environ.get(STACK)
    if not stack or not re.fullmatch(r"[0-9]+:[0-9]+", stack):
        return None

    def watch() -> None:
        while stack_alive(stack):
            time.sleep(every)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # a shutdown that hangs
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="pefm-stack-watch", daemon=True).start()
    return stack


def stack_members(stack: str) -> list[int]:
    """The live processes other than this one that belong to ``stack`` (``STACK`` in their
    environment), from /proc."""
    marker = f"{STACK}={stack}".encode()
    members = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        pid = int(environ.parent.name)
        try:
            if pid != os.getpid() and marker in environ.read_bytes().split(b"\0") and process_identity(pid):
                members.append(pid)
        except OSError:  # gone, or another user's
            continue
    return members


def release_embedded(stack: str, home: Path, wait: float = 15.0) -> bool:
    """After a ``pefm up`` that was killed (``stack``, no longer alive): once its other processes
    have ended (``wait`` seconds at most), the embedded PostgreSQL of ``home`` it held is let go
    on its behalf, which stops it unless another PEFM process holds it too. Whether it held one."""
    pgdata = home / "postgres"

    def held() -> bool:
        try:
            return int(stack.partition(":")[0]) in json.loads((pgdata / ".handle_pids.json").read_text())
        except (OSError, ValueError, TypeError):
            return False

    if not held():
        return False
    deadline = time.monotonic() + wait
    while stack_members(stack) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not held():  # another holder let go meanwhile, and the server stopped: not started again
        return False
    from pefm.storage.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(pgdata)
    server.start()  # joins it, forgetting the holders that are gone
    server.stop()  # the last holder lets go: the server stops
    return True


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` of ``host`` (an IPv6 address in brackets, as in
    LISTEN_ADDRESS): nothing listens there, binding as the servers bind (SO_REUSEADDR: the closed
    connections a stopped server leaves in TIME_WAIT for a minute do not count)."""
    ipv6 = host.startswith("[")
    with socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if ipv6:  # as func-python binds one: the IPv4 address beside it is another socket
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def record_revision(
    conn: psycopg.Connection,
    service: str,
    revision: str,
    urls: list[str],
    *,
    model_version: str | None = None,
    pids: list[int | None] | None = None,
    container_concurrency: int = 0,
) -> None:
    """Record (or re-record, as just started) a revision the local router sends ``service``'s
    traffic to: its replicas' URLs (and pids, in the same order) and how many requests one replica
    may have in flight (0: no limit). A revision started again is no longer one that left the
    traffic block (``unrouted_at``): the sweep would stop it, as soon as it started, for having
    left it once before."""
    conn.execute(
        """INSERT INTO local_revisions (service, revision, urls, pids, model_version, container_concurrency)
           VALUES (%s, %s, %s, %s, %s, %s)
           ON CONFLICT (service, revision) DO UPDATE SET urls = EXCLUDED.urls, pids = EXCLUDED.pids,
               model_version = EXCLUDED.model_version, container_concurrency = EXCLUDED.container_concurrency,
               started_at = now(), unrouted_at = NULL""",
        (service, revision, urls, pids or [None] * len(urls), model_version, container_concurrency),
    )


def revision_alive(pid: int | None, revision: str) -> bool:
    """Whether ``pid`` is a live (not zombie) process of ``revision`` (its environment names it as
    K_REVISION, so a recycled pid is never mistaken for it). Linux's /proc; False without it."""
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and f"K_REVISION={revision}".encode() in environ


RETIRE_LOCK = "pefm.local.retire:"
"""With the revision's name, the advisory lock a retirement holds from stopping its replicas to
forgetting the revision (``LocalRouter.retire``)."""


def stop_revision(pids: list[int | None], revision: str, timeout: float = 10.0) -> bool:
    """Stop the replicas of a revision whichever process started them (SIGTERM, then SIGKILL
    after ``timeout``); whether any was running."""
    alive = [pid for pid in pids if revision_alive(pid, revision)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):  # it may end on its own meanwhile
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running := [pid for pid in alive if revision_alive(pid, revision)]:
        if time.monotonic() > deadline:
            for pid in running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    return bool(alive)


class LocalRuntime:
    """Starts revisions and routers on loopback and records the revisions in the database. Each
    connects as its component's role (``pefm.storage.roles``: ``PEFM_ROLE_PASSWORD_<COMPONENT>``
    where the server wants passwords), never as the user that started it."""

    def __init__(self, database_url: str, logs: Path):
        self.database_url = database_url
        self.logs = Path(logs)
        self.processes: dict[str, Process] = {}
        self._watching: psycopg.Connection | None = None
        """The connection ``exited`` reads the recorded revisions over, each second: kept open."""

    def start_revision(
        self,
        service: str,
        revision: str,
        *,
        model_version: str | None = None,
        env: dict[str, str] | None = None,
        replicas: int | None = None,
    ) -> Process:
        """A new revision of ``service`` (ingest, inference or monitor) under func-python, as
        ``replicas`` processes (default: ``PEFM_LOCAL_REPLICAS`` for inference, else the initial
        scale of the service's Knative manifest), each let have the manifest's containerConcurrency
        in flight by the router. Returns the first
        replica; the others are ``processes["<revision>/<i>"]``. An inference revision gets this
        process's shadow key (``PEFM_SHADOW_KEY``), so the probes of the rollouts started from here
        are recognised, and the public keys model artifacts are verified with
        (``PEFM_VERIFY_KEYS`` and the trainer's own where this process signs: ``verify_keys``)."""
        from pefm.config import get_settings
        from pefm.knative.scaling import manifest_scaling
        from pefm.local.secrets import verify_keys

        settings = get_settings()
        scaling = manifest_scaling(service)
        if replicas is None:
            configured = settings.local_replicas if service == "inference" else None
            replicas = configured or max(scaling.initial_scale, 1)
        shadow_key = settings.shadow_key if service == "inference" else None
        # Redis, to the functions that use it; the key its entries are tagged with, to inference's
        # replicas, and to the monitor, whose retraining starts replicas
        redis = settings.redis_url if service in ("inference", "ingest", "monitor") else None
        cache_key = settings.cache_key if redis and service in ("inference", "monitor") else None
        verify = verify_keys(settings.verify_keys, settings.signing_key)
        environment = {
            "PEFM_DATABASE_URL": self.url_for(service),
            **({"PEFM_VERIFY_KEYS": verify} if verify and service in ("inference", "monitor") else {}),
            "K_REVISION": revision,
            "PYTHONPATH": str(FUNCTIONS / service),
            **({"PEFM_SHADOW_KEY": shadow_key} if shadow_key else {}),
            **({"PEFM_REDIS_URL": redis} if redis else {}),
            **({"PEFM_CACHE_KEY": cache_key} if cache_key else {}),
            **(env or {}),
        }
        if model_version:
            environment["PEFM_MODEL_VERSION"] = model_version
        started: list[Process] = []
        try:
            for i in range(replicas):
                name = revision if i == 0 else f"{revision}/{i}"
                process = spawn(
                    serve_command(FUNCTIONS / service),
                    cwd=FUNCTIONS / service,
                    env=environment,
                    log=self.logs / f"{revision}{'' if i == 0 else f'-{i}'}.log",
                    ready_path="/health/readiness",
                    name=name,
                )
                started.append(replace(process, revision=revision))
        except BaseException:
            for process in started:
                process.stop()
            raise
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            record_revision(
                conn,
                service,
                revision,
                [p.url for p in started],
                model_version=model_version,
                pids=[p.process.pid for p in started],
                container_concurrency=scaling.container_concurrency,
            )
        for process in started:
            self.processes[process.name] = process
        return started[0]

    def start_router(self, service: str, port: int | None = None, env: dict[str, str] | None = None) -> Process:
        """The traffic router in front of ``service``'s revisions (``env``: its settings, e.g. the
        admin token and the body limit the revisions have)."""
        command = [sys.executable, "-m", "pefm.local.router", "--service", service]
        process = spawn(
            command,
            cwd=Path.cwd(),
            env={"PEFM_DATABASE_URL": self.url_for("rollout"), **(env or {})},
            log=self.logs / f"router-{service}.log",
            ready_path="/_router/health",
            name=f"router-{service}",
            port=port,
        )
        self.processes[f"router-{service}"] = process
        return process

    def url_for(self, component: str) -> str:
        """The database URL of ``component``'s role (the router: ``rollout``)."""
        from pefm.config import get_settings
        from pefm.storage.roles import role_url

        return role_url(self.database_url, component, get_settings().role_passwords.get(component))

    def stop(self, name: str) -> None:
        self.processes.pop(name).stop()

    def exited(self) -> list[str]:
        """The processes that have stopped unasked, by name: those started here, and the replicas
        of revisions other processes started and recorded (retraining's green revisions, one of
        which serves once promoted). The replicas of a revision retired meanwhile (no longer in
        ``local_revisions``: a rollout's loser, stopped after its grace period by whichever
        process retired it) stopped as asked: they are forgotten."""
        dead = {name: p for name, p in self.processes.items() if p.process.poll() is not None}
        mine = {p.revision for p in self.processes.values() if p.revision}
        if self._watching is None or self._watching.closed or self._watching.broken:
            self._watching = psycopg.connect(self.database_url, autocommit=True)
        conn = self._watching  # one connection for the life of the stack, not one a second
        rows = conn.execute("SELECT revision, pids FROM local_revisions").fetchall()
        elsewhere = {
            revision: [pid for pid in pids if pid and not revision_alive(pid, revision)]
            for revision, pids in rows
            if revision not in mine
        }
        elsewhere = {revision: pids for revision, pids in elsewhere.items() if pids}
        revisions = [p.revision for p in dead.values() if p.revision] + list(elsewhere)
        if not revisions:
            return list(dead)
        conn.execute(  # one being retired (stopped, not yet forgotten): wait for its end
            "SELECT pg_advisory_xact_lock_shared(hashtextextended(%s || r, 0)) FROM unnest(%s::text[]) AS r",
            (RETIRE_LOCK, revisions),
        )
        query = "SELECT revision FROM local_revisions WHERE revision = ANY(%s)"
        recorded = {row[0] for row in conn.execute(query, (revisions,))}
        for name, process in list(dead.items()):
            if process.revision and process.revision not in recorded:
                del self.processes[name], dead[name]
        return list(dead) + [
            f"{revision} (pid {', '.join(map(str, pids))})"
            for revision, pids in elsewhere.items()
            if revision in recorded and not any(revision_alive(pid, revision) for pid in pids)
        ]

    def stop_all(self) -> None:
        """Stop every process started here, the last started first: the dashboard and the rollout
        API before the router, the router before the revisions it sends requests to."""
        for name in reversed(list(self.processes)):
            self.stop(name)
        if self._watching is not None:
            self._watching.close()
