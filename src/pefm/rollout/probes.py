"""What a rollout measures by asking the revisions themselves: the smoke test, blue/green
divergence on the same requests, and optional synthetic load when a service is idle. The same
probes serve the local controller (through the local router's tag URLs) and Flagger's webhooks
(through the revisions' in-cluster URLs)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx
import psycopg

from pefm.data.fields import parse_timestamp
from pefm.forecasting.base import ForecastInputError
from pefm.forecasting.divergence import REFUSED, Path, divergence_path, expected_divergence, judged_divergence
from pefm.forecasting.registry import estimation_group
from pefm.serving.http import SHADOW_HEADER, sign_shadow
from pefm.serving.inference import MAX_HORIZON
from pefm.storage.database import Database
from pefm.storage.model_versions import ModelVersion, UnknownModelError, get_version
from pefm.storage.observations import known_alike

log = logging.getLogger(__name__)

FORECAST = "/v1/forecast"
Expectation = Callable[[datetime | None], Mapping[str, Sequence[float | None]]]
"""Given the moment the revisions' answers were made from (None: unknown), the divergence path
expected per series (``GatedExpectation``)."""


class GatedExpectation:
    """What a canary of ``candidate`` against ``blue`` expects of their divergence, as the probe
    asks it (an ``Expectation``): ``divergence.expected_divergence``. ``paths``: its last answer
    (empty: the gates measured nothing between the two, so the divergence itself is judged)."""

    def __init__(self, db: Database, candidate: str | None, blue: str | None):
        self.db, self.candidate, self.blue = db, candidate, blue
        self.paths: dict[str, Path] = {}

    def __call__(self, moment: datetime | None) -> dict[str, Path]:
        with self.db.connection() as conn:
            self.paths = expected_divergence(conn, self.candidate, self.blue, moment)
        return self.paths


def _unexpected(response: httpx.Response, field: str) -> bool:
    """A revision from before ``field`` existed refused it as an unexpected field."""
    try:
        return any(d.get("field") == field for d in response.json().get("details", []))
    except ValueError:
        return False


def unlike_data(conn: psycopg.Connection, answers: list[tuple[str, dict, dict]]) -> set[str]:
    """Of ``answers`` (series, blue's answer, green's answer), the series whose two answers were
    made from data known differently: between their ``data_as_of`` moments, data changed of a
    series that either answer's ``model_version`` estimates with it (``registry.estimation_group``:
    the series alone for a univariate model, its group for a joint one). Said by the data, not by
    the forecasts' dates, which a joint model starts from its series' last common date."""
    between = []
    for series_id, blue, green in answers:
        stamps = parse_timestamp(blue.get("data_as_of")), parse_timestamp(green.get("data_as_of"))
        if None not in stamps and (lo := min(stamps)) < (hi := max(stamps)):
            between.append((series_id, lo, hi, (blue.get("model_version"), green.get("model_version"))))
    named = {version_id for *_, pair in between for version_id in pair}
    versions = {version_id: _version(conn, version_id) for version_id in named}
    unlike = set()
    for series_id, lo, hi, pair in between:
        ids = {series_id}
        for version in filter(None, (versions[v] for v in pair)):
            with contextlib.suppress(ForecastInputError):  # a series it does not forecast
                ids.update(estimation_group(version, series_id)[2])
        if not known_alike(conn, sorted(ids), lo, hi, since=lo):
            unlike.add(series_id)
    return unlike


def _moment(made_from: list[tuple[str, dict, dict]]) -> datetime | None:
    """The moment green's answers were made from: the latest ``data_as_of``."""
    stamps = [parse_timestamp(green.get("data_as_of")) for _, _, green in made_from]
    return max((s for s in stamps if s is not None), default=None)


def _version(conn: psycopg.Connection, version_id: str | None) -> ModelVersion | None:
    """The registry's version an answer names (None: none named, or unknown here)."""
    try:
        return get_version(conn, version_id) if version_id else None
    except UnknownModelError:
        return None


class HttpProber:
    """``shadow_key`` (``PEFM_SHADOW_KEY``, shared with the revisions) signs the smoke test and the
    divergence replays as shadow requests, which the revisions leave out of their metrics and
    logs; without it they count as traffic."""

    def __init__(self, db: Database, timeout: float = 15.0, attempts: int = 5, shadow_key: str | None = None):
        self.db = db
        self.attempts = attempts
        self.shadow_key = shadow_key
        self.client = httpx.Client(timeout=timeout)

    def _shadow(self, base: str, body: dict[str, Any]) -> httpx.Response:
        content = json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        if self.shadow_key:
            headers[SHADOW_HEADER] = sign_shadow(self.shadow_key, FORECAST, content)
        return self.client.post(f"{base}{FORECAST}", content=content, headers=headers)

    def smoke(self, green: str, request: dict[str, Any], model_version: str | None, attempts: int = 10) -> bool:
        """The revision at URL ``green`` answers a forecast request with 200 and forecasts from
        ``model_version`` (the one the rollout gates and promotes: a revision registered under
        another's name fails), within ``attempts`` tries half a second apart (a new route takes a
        moment to exist, and until the router has read the new block, the tag still leads to the
        revision it named before: another version, asked again)."""
        served = None
        for attempt in range(attempts):
            try:
                response = self._shadow(green, request)
                answer = response.json() if response.status_code == 200 else {}
                if answer.get("forecasts") and model_version in (None, answer.get("model_version")):
                    return True
                served = answer.get("model_version") if answer.get("forecasts") else served
            except (httpx.HTTPError, ValueError, AttributeError):  # AttributeError: a JSON answer not an object
                pass
            if attempt + 1 < attempts:
                time.sleep(0.5)
        if served is not None:
            log.warning("smoke test: %s answered from %s, not %s", green, served, model_version)
        return False

    def divergence(
        self,
        urls: tuple[str, str],
        revisions: tuple[str, str],
        since: datetime,
        samples: int,
        expected: Expectation | None = None,
    ) -> float | None:
        """Replay up to ``samples`` of the request shapes the (blue, green) ``revisions`` really
        served since ``since`` to both, at their ``urls``, and follow each series'
        ``divergence_path``: forecasts are joined on their target date, so a green trained on
        later data is compared on the dates both forecast (blue is asked far enough ahead to reach
        green's dates). The value is the largest distance from what was ``expected`` of a series
        at a step, asked with the moment green's answers were made from (the gates' paths between
        the two models on those data, ``divergence.expected_divergence``; nothing expected: the
        divergence itself, ``judged_divergence``). None when nothing was served or no date is
        shared; infinite when green refuses, again and again, a request blue answers. The replays
        are marked as shadow traffic, so they never count as served requests themselves. A
        revision still catching up with new data (``serving.freshness``: for a moment after it
        starts, it forecasts from its training data) is asked again a few times, a second apart,
        while no date is shared or the two answers were made from data known differently
        (``unlike_data``); then compared as they are."""
        with self.db.connection() as conn:
            shapes = conn.execute(
                """SELECT series_id, max(horizon) FROM predictions
                   WHERE revision = ANY(%s) AND ts >= %s AND NOT what_if AND as_of IS NULL
                   GROUP BY series_id ORDER BY max(ts) DESC LIMIT %s""",
                (list(revisions), since, samples),
            ).fetchall()
        paths: dict[str, Path] = {}
        made_from: list[tuple[str, dict, dict]] = []
        for attempt in range(self.attempts if shapes else 0):
            if attempt:
                time.sleep(1.0)
            paths, made_from = self._divergence_once(urls, shapes)
            shared = any(d is not None for path in paths.values() for d in path)
            if shared and (
                (REFUSED not in paths.values() and not self._unlike(made_from)) or attempt + 1 == self.attempts
            ):
                break  # a refusal, or unlike data, is asked again in case green was catching up
        return judged_divergence(paths, expected(_moment(made_from)) if expected is not None and paths else {})

    def _divergence_once(
        self, urls: tuple[str, str], shapes: list[tuple[str, int]]
    ) -> tuple[dict[str, Path], list[tuple[str, dict, dict]]]:
        """The divergence path of each series of ``shapes`` (``REFUSED`` when green refuses a
        request blue answers: a series its model dropped, a 5xx), and the answers compared:
        (series, blue's, green's)."""
        blue_url, green_url = urls
        paths: dict[str, Path] = {}
        made_from: list[tuple[str, dict, dict]] = []
        for series_id, horizon in shapes:
            # model space: it compares the models, not where each one's data happened to end
            body = {"series_id": series_id, "horizon": horizon, "levels": [95], "space": "model"}
            green = self._answer(green_url, body)
            blue = self._answer(blue_url, body)
            if blue is None:  # nothing to compare green with
                continue
            if green is None:
                paths[series_id] = REFUSED
                continue
            beyond = sum(1 for row in green["forecast"] if row["ds"] > blue["forecast"][-1]["ds"])
            if beyond and horizon + beyond <= MAX_HORIZON:  # blue's forecasts must reach green's dates
                blue = self._answer(blue_url, {**body, "horizon": horizon + beyond})
                if blue is None:
                    continue
            paths[series_id] = divergence_path(blue["forecast"], green["forecast"])
            made_from.append((series_id, blue, green))
        return paths, made_from

    def _unlike(self, made_from: list[tuple[str, dict, dict]]) -> set[str]:
        if all(b.get("data_as_of") == g.get("data_as_of") for _, b, g in made_from):
            return set()
        with self.db.connection() as conn:
            return unlike_data(conn, made_from)

    def _answer(self, base: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The revision's answer for the one series of ``body``: its ``forecast`` rows, ``data_as_of``
        and ``model_version``."""
        try:
            response = self._shadow(base, body)
        except httpx.HTTPError:
            return None
        if response.status_code == 422 and "space" in body and _unexpected(response, "space"):
            return self._answer(base, {k: v for k, v in body.items() if k != "space"})  # predates spaces: model space
        if response.status_code != 200:
            return None
        try:  # a 200 that is no forecast is a refusal like any other, not a failed check
            answer = response.json()
            return {**answer["forecasts"][0], "model_version": answer.get("model_version")}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return None

    def load(self, url: str, requests: int, body: dict[str, Any]) -> int:
        """Send ``requests`` requests to the service at ``url`` (split by its traffic weights); how
        many got a non-5xx answer."""
        ok = 0
        for _ in range(requests):
            with contextlib.suppress(httpx.HTTPError):
                ok += self.client.post(f"{url}{FORECAST}", json=body).status_code < 500
        return ok
