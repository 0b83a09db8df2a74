"""What the serving benchmarks share: wrk runs, function spawns, the hello-world anchor, the table."""

from __future__ import annotations

import re
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from pefm.local.runtime import free_port, serve_command

HELLO = Path(__file__).resolve().parent / "hello"
"""A hello-world func-python function returning a small JSON: the runtime's own limit."""


def wrk(url: str, duration: int, script: Path | None = None, args: Sequence[str] = (), errors_ok: bool = False) -> dict:
    """Requests/s and latency percentiles (ms) from wrk -t2 -c16 --latency (Debian's wrk), with
    the Lua ``script`` given ``args``; ``output`` is wrk's text. ``non2xx`` counts error answers and
    ``socket_errors`` wrk's ``Socket errors: connect N, read N, write N, timeout N`` (all 0 when it
    prints no such line); ``errors`` is their sum. Any error raises, unless ``errors_ok`` (the caller
    counts and prints them): a timed-out or broken request is missing from req/s and from the
    percentiles, so a run with them measured something else."""
    cmd = ["wrk", "-t2", "-c16", f"-d{duration}s", "--latency"]
    if script:
        cmd += ["-s", str(script)]
    cmd += [url, *(["--", *args] if args else [])]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out, url, errors_ok)


SOCKET_ERRORS = ("connect", "read", "write", "timeout")


def parse_wrk(out: str, url: str = "", errors_ok: bool = False) -> dict:
    """``wrk``'s result from its text ``out`` (see ``wrk``)."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    found = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    non2xx = int(found.group(1)) if found else 0
    found = re.search(r"Socket errors:\s+" + r",\s+".join(rf"{k}\s+(\d+)" for k in SOCKET_ERRORS), out)
    if found is None and "Socket errors" in out:
        raise RuntimeError(f"wrk's socket errors line is not in the expected form: {out}")
    socket_errors = dict(zip(SOCKET_ERRORS, map(int, found.groups()) if found else (0,) * 4, strict=True))
    errors = non2xx + sum(socket_errors.values())
    if errors and not errors_ok:
        shown = ", ".join(f"{k} {v}" for k, v in socket_errors.items())
        raise RuntimeError(f"wrk saw errors from {url}: {non2xx} non-2xx/3xx answers; socket errors: {shown}")
    pct = {p: _ms(v) for p, v in re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M)}
    return {
        "rps": rps,
        "p50_ms": pct["50"],
        "p99_ms": pct["99"],
        "non2xx": non2xx,
        "socket_errors": socket_errors,
        "errors": errors,
        "output": out,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def spawn_until(cwd: Path, env: dict[str, str], probe) -> float:
    """Seconds from spawning a function process to the first successful ``probe(client, url)``.
    The probes share one client made before the spawn: a client made per probe (``httpx.get``)
    spends ~20 ms building its TLS context, which both delays the moment a probe sees the
    function answer and takes CPU from the process starting."""
    client = httpx.Client(timeout=1)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = {**env, "LISTEN_ADDRESS": f"127.0.0.1:{port}", "PYTHONPATH": str(cwd)}
    started = time.perf_counter()
    process = subprocess.Popen(
        serve_command(cwd), cwd=cwd, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while True:
            try:
                if probe(client, url):
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.perf_counter() - started > 30:
                raise RuntimeError(f"{cwd.name} did not answer")
            time.sleep(0.002)
    finally:
        process.terminate()
        process.wait()
        client.close()


def start_hello(cwd: Path = HELLO) -> tuple[str, subprocess.Popen]:
    """The hello-world function, started and answering: its URL and process."""
    port = free_port()
    hello_proc = subprocess.Popen(
        serve_command(cwd),
        cwd=cwd,
        env={"LISTEN_ADDRESS": f"127.0.0.1:{port}", "PYTHONPATH": str(cwd)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return url, hello_proc
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("hello-world function did not start")


ROUNDS = 5  # alternating rounds of every side's run (--rounds)
WARM_UP = 1  # seconds of unmeasured load before each measured run (wrk and pgbench take whole seconds)


def round_order(sides: Sequence[str], k: int) -> list[str]:
    """The sides' order in round ``k``: as given in even rounds, reversed in odd ones, so that
    each pair of sides swaps places every round (anchor, ours; ours, anchor; ...)."""
    return list(sides) if k % 2 == 0 else list(reversed(sides))


def alternate(sides: dict[str, Callable[[], dict]], rounds: int) -> dict[str, list[dict]]:
    """``rounds`` rounds of one run of every side (``sides[name]()``, see ``warmed``), in
    ``round_order``: each side's results, in round order."""
    results: dict[str, list[dict]] = {name: [] for name in sides}
    for k in range(rounds):
        for name in round_order(list(sides), k):
            results[name].append(sides[name]())
    return results


def warmed(run: Callable[[int], dict], duration: int, warm_up: int = WARM_UP) -> Callable[[], dict]:
    """A side for ``alternate``: ``run(warm_up)``, unmeasured, then ``run(duration)``, measured."""

    def side() -> dict:
        run(warm_up)
        return run(duration)

    return side


def median_of(runs: Sequence[dict], key: str) -> float:
    """The median over rounds of one side's ``key``."""
    return statistics.median(run[key] for run in runs)


def ratios(ours: Sequence[dict], anchor: Sequence[dict], key: str = "rps") -> list[float]:
    """Per round, ours / anchor of ``key`` (the two sides' runs of the same round)."""
    return [o[key] / a[key] for o, a in zip(ours, anchor, strict=True)]


def median_ratio(ours: Sequence[dict], anchor: Sequence[dict], key: str = "rps") -> float:
    """The median of the per-round ratios ours / anchor of ``key``."""
    return statistics.median(ratios(ours, anchor, key))


def spread(values: Sequence[float]) -> str:
    """The range of per-round ratios, for the table: ``(lowest-highest)``."""
    return f"({min(values):.2f}-{max(values):.2f})"


def rounds_note(rounds: int, seconds: int, warm_up: int = WARM_UP) -> str:
    """The line above a table of alternating rounds: how its numbers were taken."""
    return (
        f"{rounds} alternating rounds of {seconds} s runs, each after {warm_up} s unmeasured: medians over"
        " rounds; ratio = median of the per-round ratios (lowest-highest)"
    )


def print_table(rows: Sequence[Sequence[object]]) -> None:
    """Rows of (measure, ours, anchor, ratio, target) as an aligned text table."""
    header = ("measure", "ours", "anchor", "ratio", "target")
    width = [max(len(str(row[i])) for row in [*rows, header]) for i in range(5)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, width, strict=True)))
    print("-|-".join("-" * w for w in width))
    for row in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, width, strict=True)))
