"""Fault injection for the rollout tests, nowhere else: Python imports ``sitecustomize`` at start-up
from its path, so a revision started with this folder first on ``PYTHONPATH`` (``faulty_env``;
the kind scenario's faulty image) answers every (1/``PEFM_FAULT_RATE``)-th /v1 request with a
500. The pefm package, its images and its settings cannot switch this on."""

import os

_RATE = os.environ.get("PEFM_FAULT_RATE", "").strip()

if _RATE:
    from pefm.serving import function as _function
    from pefm.serving.http import ApiError as _ApiError

    def _with_faults(app, rate: float):
        every = max(1, round(1 / rate))
        count = 0

        async def faulty(scope: dict, receive, send) -> None:
            nonlocal count
            if scope["type"] == "http" and scope["path"].startswith("/v1/"):
                count += 1
                if count % every == 0:
                    await _ApiError(500, "injected fault (PEFM_FAULT_RATE)").response()(scope, receive, send)
                    return
            await app(scope, receive, send)

        return faulty

    _serve = _function.ServiceFunction._serve

    def _faulty_serve(self, app) -> None:
        _serve(self, _with_faults(app, float(_RATE)))

    _function.ServiceFunction._serve = _faulty_serve
