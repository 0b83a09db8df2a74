"""Fault injection for the rollout tests, nowhere else: Python imports ``sitecustomize`` at start-up
from its path, so a revision started with this folder first on ``PYTHONPATH`` (``faulty_env``,
``skewed_env``; the kind scenario's faulty image) misbehaves as its environment says:
``PEFM_FAULT_RATE`` answers every (1/rate)-th /v1 request with a 500; ``PEFM_FAULT_SKEW`` adds
that much to every forecast it answers (mean and bounds, in any space): a revision serving other
forecasts than the model it was gated with (a skew between training and serving);
``PEFM_FAULT_CATCHUP_DELAY`` holds its first re-conditioning that many seconds, so it serves its
training-time forecasts that long after it starts (``serving.freshness``). The pefm package, its
images and its settings cannot switch this on."""

import json
import os

_RATE = os.environ.get("PEFM_FAULT_RATE", "").strip()
_SKEW = os.environ.get("PEFM_FAULT_SKEW", "").strip()
_CATCHUP_DELAY = os.environ.get("PEFM_FAULT_CATCHUP_DELAY", "").strip()


def _with_faults(app, rate: float):
    from pefm.serving.http import ApiError

    every = max(1, round(1 / rate))
    count = 0

    async def faulty(scope: dict, receive, send) -> None:
        nonlocal count
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            count += 1
            if count % every == 0:
                await ApiError(500, "injected fault (PEFM_FAULT_RATE)").response()(scope, receive, send)
                return
        await app(scope, receive, send)

    return faulty


def _shifted(body: bytes, skew: float) -> bytes:
    answer = json.loads(body)
    for part in answer.get("forecasts", []):
        for row in part.get("forecast", []):
            for key in row:
                if key == "mean" or key.startswith(("lo-", "hi-")):
                    row[key] += skew
    return json.dumps(answer).encode()


def _with_skew(app, skew: float):
    async def skewed(scope: dict, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/forecast":
            await app(scope, receive, send)
            return
        start, chunks = None, []

        async def rewrite(message: dict) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = b"".join(chunks)
                if start["status"] == 200:
                    body = _shifted(body, skew)
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
            else:
                await send(message)

        await app(scope, receive, rewrite)

    return skewed


if _RATE or _SKEW:
    from pefm.serving import function as _function

    _serve = _function.ServiceFunction._serve

    def _faulty_serve(self, app, *args) -> None:
        if _SKEW:
            app = _with_skew(app, float(_SKEW))
        if _RATE:
            app = _with_faults(app, float(_RATE))
        _serve(self, app, *args)

    _function.ServiceFunction._serve = _faulty_serve


if _CATCHUP_DELAY:
    import time

    from pefm.serving import freshness as _freshness

    _refresh = _freshness.Reconditioner.refresh
    _held = []

    def _late_refresh(self, series):
        if not _held:
            _held.append(True)
            time.sleep(float(_CATCHUP_DELAY))
        return _refresh(self, series)

    _freshness.Reconditioner.refresh = _late_refresh
