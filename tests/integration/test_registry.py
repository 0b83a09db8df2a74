import json
from dataclasses import replace
from datetime import UTC, datetime

import pandas as pd
import psycopg
import pytest

from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.forecasting.backtest import BacktestSpec
from pefm.forecasting.registry import ArtifactIntegrityError, load_model, promote
from pefm.forecasting.training import train
from pefm.storage.model_versions import UnknownModelError, get_version, list_versions
from pefm.storage.signing import ArtifactSignatureError, TrustedKeys, generate, public_keys
from tests.conftest import VERIFY_KEYS

PANEL = ["realgdp", "unemp"]
TRUSTED = TrustedKeys(public_keys(VERIFY_KEYS))  # the trainer's key of this run (tests/conftest.py)


@pytest.fixture
def loaded(conn):
    load_bundled(conn, bundled(PANEL))
    return conn


def test_train_registers_a_candidate_with_lineage_and_a_verified_artifact(loaded):
    as_of = datetime(2000, 1, 1, tzinfo=UTC)
    version, run = train(loaded, "ar", PANEL, as_of=as_of, spec=BacktestSpec(h=1, windows=6))
    assert version.status == "candidate"
    assert version.series_ids == PANEL
    assert version.data_as_of == as_of
    assert len(version.data_sha256) == 64
    assert set(version.backtest["metrics"]) == set(PANEL)
    stored = version.backtest["metrics"]["realgdp"]  # pooled and per-step names; at h=1 they agree
    assert {"rmse", "rmse@h1", "n@h1", "pinball", "pinball@h1", "coverage-95@h1"} <= set(stored)
    assert stored["rmse@h1"] == pytest.approx(stored["rmse"]) and "rmse@h2" not in stored
    assert version.backtest["spec"]["windows"] == 6
    assert run.results["cutoff"].max() == pd.Timestamp("1999-07-01")  # 1999Q4 is the last actual

    model = load_model(loaded, version.id, TRUSTED)
    forecast = model.predict(2)
    assert forecast["ds"].min() == pd.Timestamp("2000-01-01")  # trained on data known in 2000
    assert set(forecast["series_id"]) == set(PANEL)


def test_a_listing_leaves_out_the_backtests_forecasts_and_keeps_the_rest(loaded):
    """The Models page and the Forecasts picker list every version: each read its whole backtest,
    most of it forecasts from every origin (a megabyte for the bundle), on every refresh."""
    version, _ = train(loaded, "ar", PANEL, spec=BacktestSpec(h=2, windows=6))
    [full] = list_versions(loaded)
    [listed] = list_versions(loaded, forecasts=False)
    assert full.backtest == version.backtest and full.backtest["forecasts"]["realgdp"]
    assert listed.backtest == {k: v for k, v in version.backtest.items() if k != "forecasts"}
    assert listed.backtest["metrics"] and listed.backtest["spec"]["windows"] == 6
    assert listed == replace(full, backtest=listed.backtest)


def test_the_same_data_hashes_the_same(loaded):
    as_of = datetime(2000, 1, 1, tzinfo=UTC)
    a, _ = train(loaded, "naive", PANEL, as_of=as_of, spec=None)
    b, _ = train(loaded, "mean", PANEL, as_of=as_of, spec=None)
    c, _ = train(loaded, "mean", PANEL, as_of=datetime(2001, 1, 1, tzinfo=UTC), spec=None)
    assert a.data_sha256 == b.data_sha256 != c.data_sha256


def test_a_tampered_artifact_is_never_loaded(loaded):
    version, _ = train(loaded, "naive", PANEL, spec=None)
    loaded.execute("UPDATE model_versions SET artifact = artifact || '\\x00'::bytea WHERE id = %s", (version.id,))
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        load_model(loaded, version.id, TRUSTED)
    with pytest.raises(UnknownModelError):
        load_model(loaded, "nope", TRUSTED)


def test_a_model_written_by_anyone_but_the_trainer_is_never_loaded(loaded):
    """Someone with SQL access but not the trainer's key: new bytes with a matching sha256, a row
    of their own, a signature of another key, a signature moved to another version. Each is
    refused before anything is unpickled; the trainer's own version loads."""
    import hashlib

    from pefm.config import Settings
    from pefm.storage.signing import private_key, sign, trusted_keys

    version, _ = train(loaded, "naive", PANEL, spec=None)
    other, _ = train(loaded, "mean", PANEL, spec=None)
    assert load_model(loaded, version.id, TRUSTED).predict(1) is not None
    evil = b"cos\nsystem\n(S'touch /tmp/pwned'\ntR."  # a pickle that runs a command when loaded
    digest = hashlib.sha256(evil).hexdigest()
    loaded.execute(
        "UPDATE model_versions SET artifact = %s, artifact_sha256 = %s WHERE id = %s", (evil, digest, version.id)
    )
    with pytest.raises(ArtifactSignatureError, match="does not match"):
        load_model(loaded, version.id, TRUSTED)
    loaded.execute(
        "UPDATE model_versions SET artifact_key = NULL, artifact_signature = NULL WHERE id = %s", (version.id,)
    )
    with pytest.raises(ArtifactSignatureError, match="not signed"):
        load_model(loaded, version.id, TRUSTED)
    stranger = private_key(generate()[0])  # a key nobody trusts, signing the evil bytes properly
    signature = sign(
        stranger, version_id=version.id, family="naive", sha256=digest, precomputed=version.precomputed_sha256
    )
    loaded.execute(
        "UPDATE model_versions SET artifact_key = %s, artifact_signature = %s WHERE id = %s",
        (signature.key_id, signature.value, version.id),
    )
    with pytest.raises(ArtifactSignatureError, match="not one trusted here"):
        load_model(loaded, version.id, TRUSTED)
    loaded.execute(  # the other version's genuine signature, copied over
        """UPDATE model_versions SET (artifact_key, artifact_signature) =
               (SELECT artifact_key, artifact_signature FROM model_versions WHERE id = %s) WHERE id = %s""",
        (other.id, version.id),
    )
    with pytest.raises(ArtifactSignatureError, match="does not match"):
        load_model(loaded, version.id, TRUSTED)
    with pytest.raises(ArtifactSignatureError, match="none: set PEFM_VERIFY_KEYS"):
        load_model(loaded, other.id, trusted_keys(Settings()))  # trusting nothing loads nothing
    assert load_model(loaded, other.id, TRUSTED).predict(1) is not None


def test_the_precomputed_forecasts_are_signed_with_the_artifact(loaded):
    """The forecasts a revision serves before its model loads are stored beside the artifact and
    covered by the same signature: their digest survives PostgreSQL's jsonb (numbers kept as
    decimals), a changed forecast no longer matches it, and a row without the digest is not
    loaded, whether its signature was made with one or before the forecasts were signed."""
    from psycopg.types.json import Jsonb

    from pefm.storage.model_versions import read_precomputed, verify_signature
    from pefm.storage.signing import MESSAGE_V1, check_precomputed, precomputed_digest, private_key
    from tests.conftest import SIGNING_KEY

    version, _ = train(loaded, "naive", PANEL, spec=None)
    stored = read_precomputed(loaded, version.id)
    assert version.precomputed_sha256 == precomputed_digest(stored)
    check_precomputed(version.id, stored, version.precomputed_sha256)
    awkward = {"rows": [{"mean": 1e16, "lo": -0.0, "hi": 1e-05, "x": 0.1, "n": 3, "big": 1.2345678901234567e20}]}
    back = loaded.execute("SELECT %s::jsonb", (Jsonb(awkward),)).fetchone()[0]
    assert json.dumps(back, sort_keys=True) != json.dumps(awkward, sort_keys=True)  # 1e16 back as an integer
    assert precomputed_digest(back) == precomputed_digest(awkward)
    assert precomputed_digest({**awkward, "rows": [{**awkward["rows"][0], "mean": 1.0000000000000002e16}]}) != (
        precomputed_digest(awkward)
    )

    loaded.execute(
        "UPDATE model_versions SET precomputed = jsonb_set(precomputed, '{rows,0,mean}', '12345') WHERE id = %s",
        (version.id,),
    )
    with pytest.raises(ArtifactSignatureError, match="do not match their signed sha256"):
        check_precomputed(version.id, read_precomputed(loaded, version.id), version.precomputed_sha256)
    verify_signature(loaded, version.id, TRUSTED)  # the artifact itself is as signed
    loaded.execute("UPDATE model_versions SET precomputed_sha256 = NULL WHERE id = %s", (version.id,))
    with pytest.raises(ArtifactSignatureError, match="signed without its precomputed forecasts"):
        verify_signature(loaded, version.id, TRUSTED)
    with pytest.raises(ArtifactSignatureError, match="does not match"):  # nor is it an old signature
        verify_signature(loaded, version.id, TRUSTED, before_forecasts=True)

    # a genuine signature from before the forecasts were signed, put back on the row: not loaded,
    # so the row's forecasts cannot be changed under it; only `pefm models sign` still checks it
    old = private_key(SIGNING_KEY).sign(
        MESSAGE_V1.format(id=version.id, family="naive", sha256=version.artifact_sha256).encode()
    )
    loaded.execute("UPDATE model_versions SET artifact_signature = %s WHERE id = %s", (old, version.id))
    with pytest.raises(ArtifactSignatureError, match=f"pefm models sign {version.id}"):
        load_model(loaded, version.id, TRUSTED)
    verify_signature(loaded, version.id, TRUSTED, before_forecasts=True)


def test_the_registry_takes_no_unsigned_model(loaded, monkeypatch):
    from pefm.config import get_settings

    monkeypatch.delenv("PEFM_SIGNING_KEY")
    get_settings.cache_clear()
    try:
        with pytest.raises(ArtifactSignatureError, match="PEFM_SIGNING_KEY is not set"):
            train(loaded, "naive", PANEL, spec=None)
        assert list_versions(loaded) == []
        windows = []  # refused before the backtest, not after minutes of it
        with pytest.raises(ArtifactSignatureError, match="PEFM_SIGNING_KEY is not set"):
            train(loaded, "naive", PANEL, spec=BacktestSpec(h=1, windows=3), on_window=windows.append)
        assert windows == []
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_promote_retires_the_version_serving_before(loaded):
    first, _ = train(loaded, "naive", PANEL, spec=None)
    second, _ = train(loaded, "mean", ["realgdp"], spec=None)
    assert promote(loaded, first.id) == []
    assert promote(loaded, second.id) == [first.id]
    assert get_version(loaded, first.id).status == "retired"
    assert [v.id for v in list_versions(loaded, status="serving")] == [second.id]


def test_one_version_serves_even_one_of_other_series(loaded):
    """A version of other series stayed serving beside the promoted one: the registry said its
    series were served while an inference revision serves one version, and the gates compared a
    candidate with one of the two while its promotion retired both."""
    from pefm.forecasting.registry import serving_version

    assert serving_version(loaded) is None
    unemp, _ = train(loaded, "naive", ["unemp"], spec=None)
    realgdp, _ = train(loaded, "naive", ["realgdp"], spec=None)
    promote(loaded, unemp.id)
    assert promote(loaded, realgdp.id) == [unemp.id]
    assert serving_version(loaded).id == realgdp.id
    assert get_version(loaded, unemp.id).status_reason == f"replaced by {realgdp.id}"
    loaded.commit()
    with pytest.raises(psycopg.errors.UniqueViolation, match="model_versions_one_serving"):  # nor by hand
        loaded.execute("UPDATE model_versions SET status = 'serving' WHERE id = %s", (unemp.id,))
    loaded.rollback()


def test_migration_0021_keeps_the_most_recently_promoted_of_several_serving_versions(schema_url, monkeypatch):
    """A database where several versions served (promotion had retired only those sharing a series)
    keeps the one the registry answered with; the others are retired as replaced by it."""
    from pefm.storage import migrate as migrate_module

    shipped = migrate_module.shipped_migrations()
    with psycopg.connect(schema_url) as conn:
        monkeypatch.setattr(migrate_module, "shipped_migrations", lambda: [m for m in shipped if m.version < 21])
        migrate_module.migrate(conn)
        for version_id, promoted in (("a", "2026-01-01"), ("b", "2026-02-01"), ("c", "2025-12-01")):
            conn.execute(
                """INSERT INTO model_versions (id, family, params, series_ids, data_as_of, data_sha256, artifact,
                                               artifact_sha256, status, status_changed_at)
                   VALUES (%s, 'naive', '{}', %s, now(), %s, '', %s, 'serving', %s)""",
                (version_id, [version_id], "0" * 64, "1" * 64, promoted),
            )
        conn.commit()
        monkeypatch.undo()
        assert [m.version for m in migrate_module.migrate(conn)][:1] == [21]  # and any shipped since
        rows = conn.execute("SELECT id, status, status_reason FROM model_versions ORDER BY id").fetchall()
    assert rows == [("a", "retired", "replaced by b"), ("b", "serving", None), ("c", "retired", "replaced by b")]


def test_a_rollouts_end_settles_the_registry(loaded):
    """Success: green's version serves, blue's retires. Rollback: the candidate is rejected with the
    reason, and after a promotion blue's version serves again."""
    from pefm.forecasting.registry import serving_version, settle_rollout

    blue, _ = train(loaded, "naive", PANEL, spec=None)
    green, _ = train(loaded, "mean", PANEL, spec=None)
    promote(loaded, blue.id)
    said = settle_rollout(loaded, candidate=green.id, previous=blue.id, succeeded=True, reason="all checks passed")
    assert said == f"registry: {green.id} serving, {blue.id} retired"
    assert serving_version(loaded).id == green.id and get_version(loaded, blue.id).status == "retired"
    assert get_version(loaded, blue.id).status_reason == f"replaced by {green.id}"
    said = settle_rollout(loaded, candidate=green.id, previous=blue.id, succeeded=False, reason="rolled back")
    assert said == f"registry: {blue.id} serving again, {green.id} rejected"
    assert serving_version(loaded).id == blue.id
    rejected = get_version(loaded, green.id)
    assert rejected.status == "rejected" and rejected.status_reason == "rolled back"
    third, _ = train(loaded, "drift", PANEL, spec=None)
    said = settle_rollout(loaded, candidate=third.id, previous=blue.id, succeeded=False, reason="success rate 0.9")
    assert said == f"registry: {third.id} rejected" and serving_version(loaded).id == blue.id
    assert settle_rollout(loaded, candidate=None, previous=blue.id, succeeded=True, reason="x").startswith(
        "registry unchanged"
    )


def test_a_rollback_settled_while_an_operator_promotes_leaves_the_promotion_standing(db, loaded):
    """A rollback read what its candidate had replaced before taking the registry's lock, so a hand
    promotion committed in between was undone (blue restored over it). It now waits for the lock."""
    import threading

    from pefm.forecasting.registry import serving_version, settle_rollout

    blue, _ = train(loaded, "naive", PANEL, spec=None)
    green, _ = train(loaded, "mean", PANEL, spec=None)
    chosen, _ = train(loaded, "drift", PANEL, spec=None)
    promote(loaded, blue.id)
    promote(loaded, green.id)  # the rollout's promotion, before it is rolled back
    loaded.commit()
    with db.connection() as operator, db.connection() as rollout:
        operator.execute("BEGIN")
        promote(operator, chosen.id)  # by hand, not yet committed

        def roll_back() -> None:
            with rollout.transaction():
                settle_rollout(rollout, candidate=green.id, previous=blue.id, succeeded=False, reason="rolled back")

        settling = threading.Thread(target=roll_back)
        settling.start()
        settling.join(1.0)  # it reads the registry, then waits for the operator's lock
        operator.execute("COMMIT")
        settling.join(30)
    assert serving_version(loaded).id == chosen.id
    assert get_version(loaded, blue.id).status == "retired" and get_version(loaded, green.id).status == "rejected"


def test_a_rollback_restores_the_version_the_candidate_replaced_and_only_that(loaded):
    """A candidate rolled back: blue's version serves again. One that replaced several before
    migration 0021 (promotion retired every serving version sharing a series with it) restores
    blue's alone, as one version serves at a time. A version someone promoted by hand meanwhile
    stands, and a model version the registry never held changes nothing, so the rollout can still end."""
    from pefm.forecasting.registry import serving_version, settle_rollout

    macro, _ = train(loaded, "naive", ["realgdp"], spec=None)
    other, _ = train(loaded, "mean", ["unemp"], spec=None)
    bundle, _ = train(loaded, "drift", ["realgdp", "unemp"], spec=None)
    promote(loaded, macro.id)
    settle_rollout(loaded, candidate=bundle.id, previous=macro.id, succeeded=True, reason="passed")
    loaded.execute(  # as a promotion before 0021 had left it: both replaced by the bundle
        "UPDATE model_versions SET status = 'retired', status_reason = %s WHERE id = %s",
        (f"replaced by {bundle.id}", other.id),
    )
    said = settle_rollout(loaded, candidate=bundle.id, previous=macro.id, succeeded=False, reason="rolled back")
    assert said == f"registry: {macro.id} serving again, {bundle.id} rejected"
    assert serving_version(loaded).id == macro.id and get_version(loaded, other.id).status == "retired"

    later, _ = train(loaded, "naive", ["realgdp", "unemp"], spec=None)
    settle_rollout(loaded, candidate=later.id, previous=macro.id, succeeded=True, reason="passed")
    by_hand, _ = train(loaded, "mean", ["realgdp", "unemp"], spec=None)
    promote(loaded, by_hand.id)  # an operator's promotion after the rollout succeeded
    said = settle_rollout(loaded, candidate=later.id, previous=macro.id, succeeded=False, reason="rolled back")
    assert said == f"registry: {later.id} rejected" and serving_version(loaded).id == by_hand.id

    for succeeded in (True, False):
        said = settle_rollout(loaded, candidate="ar-typo", previous=by_hand.id, succeeded=succeeded, reason="x")
        assert said == "registry unchanged: green's model version ar-typo is not in the registry"


def test_a_candidate_that_would_leave_a_served_series_without_a_model_fails_the_gates(loaded):
    """Promoting a candidate retires the serving version: one that does not forecast a series the
    serving model forecasts (`pefm retrain --model ar` while the bundle serves) would leave that
    series unserved, so it fails, the series named, and so does one with no series in common (its
    gating had stopped on an error); a candidate with more series than the serving model passes."""
    from pefm.forecasting.gating import gate_candidate

    spec = BacktestSpec(h=1, windows=6)
    serving, _ = train(loaded, "ar", PANEL, spec=spec)
    promote(loaded, serving.id)
    fewer, _ = train(loaded, "ar", ["realgdp"], spec=spec)
    report = gate_candidate(loaded, fewer, serving)
    assert report["passed"] is False
    assert [f for f in report["failures"] if f.startswith("unemp:")] == [
        "unemp: the serving model forecasts it, the candidate does not (promoting it would leave unemp unserved)"
    ]
    assert gate_candidate(loaded, get_version(loaded, serving.id), fewer)["passed"] is True
    other, _ = train(loaded, "ar", ["unemp"], spec=spec)
    report = gate_candidate(loaded, other, fewer)
    assert not report["passed"] and report["serving"] == fewer.id
    assert report["windows"]["serving_backtest"] == f"none: {fewer.id} forecasts none of the candidate's series"
    assert report["failures"] == [
        "realgdp: the serving model forecasts it, the candidate does not (promoting it would leave realgdp unserved)"
    ]


def test_a_gate_report_against_a_model_that_no_longer_serves_is_no_verdict(loaded):
    """Before any canary the candidate must have been compared with what serves: a report against
    a model promoted away since says nothing of the one serving now (a rollout waits, a Flagger
    canary is refused, until the candidate is gated again); against the one serving, it decides."""
    from pefm.forecasting.gating import gate_candidate
    from pefm.forecasting.registry import candidate_verdict

    spec = BacktestSpec(h=1, windows=6)
    blue, _ = train(loaded, "ar", PANEL, spec=spec)
    promote(loaded, blue.id)
    candidate, _ = train(loaded, "ar", PANEL, spec=spec)
    assert gate_candidate(loaded, candidate, blue)["passed"]
    assert candidate_verdict(loaded, candidate.id, True)[0] is True
    other, _ = train(loaded, "ar_d1", PANEL, spec=spec)
    promote(loaded, other.id)
    passed, why = candidate_verdict(loaded, candidate.id, True)
    assert passed is None and why == (
        f"the candidate {candidate.id} was gated against {blue.id}; {other.id} serves now: gate it again"
    )
    gate_candidate(loaded, candidate, other)
    assert candidate_verdict(loaded, candidate.id, True)[0] is not None


def test_the_gates_measure_how_far_the_candidate_forecasts_from_the_model_it_was_gated_against(loaded):
    """The report holds, per series, the divergence of the candidate's forecasts from the serving
    model's, both artifacts conditioned on the same data (what a canary between them sees): none
    for the same model fitted on the same data, some for a refit on thirty more years. A canary
    expects it only of the model the gates compared with."""
    from pefm.forecasting.gating import gate_candidate
    from pefm.forecasting.registry import gated_divergence

    spec, then = BacktestSpec(h=1, windows=6), datetime(1980, 1, 1, tzinfo=UTC)
    old, _ = train(loaded, "ar", PANEL, spec=spec, as_of=then)
    promote(loaded, old.id)
    same, _ = train(loaded, "ar", PANEL, spec=spec, as_of=then)
    report = gate_candidate(loaded, same, old)
    assert report["passed"] and report["divergence"]["series"] == {"realgdp": [0.0] * 60, "unemp": [0.0] * 60}
    assert report["divergence"]["horizon"] == 60 and report["divergence"]["level"] == 95
    refit, _ = train(loaded, "ar", PANEL, spec=spec)
    report = gate_candidate(loaded, refit, old)
    paths = report["divergence"]["series"]
    assert report["passed"] and set(paths) == set(PANEL) and all(len(p) == 60 for p in paths.values())
    assert max(abs(d) for p in paths.values() for d in p) > 0.05, report["divergence"]
    assert gated_divergence(loaded, refit.id, old.id) == report["divergence"]
    assert gated_divergence(loaded, refit.id, same.id) == {}  # not the model it was compared with
    assert gated_divergence(loaded, refit.id, None) == {}


def test_a_canary_expects_the_gates_measure_taken_again_once_new_data_arrived(loaded):
    """New data move both models' forecasts, and the distance between them with it: a canary
    expects the gates' measure while the data are those it was taken on, and the same measure
    on the new data once they arrived (kept until the data change again)."""
    from pefm.forecasting.divergence import expected_divergence, measured_divergence
    from pefm.forecasting.gating import gate_candidate
    from pefm.storage.observations import read_series, write_observations

    spec = BacktestSpec(h=1, windows=6)
    old, _ = train(loaded, "ar", PANEL, spec=spec, as_of=datetime(1980, 1, 1, tzinfo=UTC))
    promote(loaded, old.id)
    refit, _ = train(loaded, "ar", PANEL, spec=spec)
    gated = gate_candidate(loaded, refit, old)["divergence"]["series"]
    assert expected_divergence(loaded, refit.id, old.id) == gated
    assert expected_divergence(loaded, refit.id, refit.id) == {}  # the gates compared it with old
    loaded.commit()
    gdp, unemp = read_series(loaded, "realgdp"), read_series(loaded, "unemp")
    after = gdp.index[-1] + pd.DateOffset(months=3)
    shifted = pd.DataFrame(
        {"series_id": ["realgdp", "unemp"], "ts": [after, after], "value": [gdp.iloc[-1] * 0.9, unemp.iloc[-1] + 4]}
    )
    write_observations(loaded, shifted)  # a shifted quarter, as after a drift
    loaded.commit()
    now = loaded.execute("SELECT now()").fetchone()[0]
    expected = expected_divergence(loaded, refit.id, old.id, now)
    again = measured_divergence(loaded, get_version(loaded, refit.id), old, 60, as_of=now)["series"]
    assert expected == again and expected != gated
    moved = max(abs(a - b) for s in gated for a, b in zip(expected[s], gated[s], strict=True) if a is not None)
    assert moved > 0.05, moved  # the gates' own measure is out of date
    assert expected_divergence(loaded, refit.id, old.id) == again  # kept: no data changed since


def test_a_stored_serving_backtest_missing_a_series_is_run_again_not_read_as_not_forecast(loaded):
    """The serving model's stored backtest is reused only when it holds every series both models
    forecast: one without unemp (stored before it joined, or its rows lost) made the gates skip
    unemp as "the serving model does not forecast it", though it does; now the serving model is
    backtested again on the candidate's windows."""
    from pefm.forecasting.gating import gate_candidate
    from pefm.storage.model_versions import set_backtest

    spec = BacktestSpec(h=1, windows=6)
    serving, _ = train(loaded, "ar", PANEL, spec=spec)
    promote(loaded, serving.id)
    set_backtest(
        loaded, serving.id, {**serving.backtest, "forecasts": {"realgdp": serving.backtest["forecasts"]["realgdp"]}}
    )
    candidate, _ = train(loaded, "ar", PANEL, spec=spec)
    report = gate_candidate(loaded, candidate, get_version(loaded, serving.id))
    assert report["windows"]["serving_backtest"] == "re-run on the candidate's windows"
    assert not [s for s in report["skipped"] if s.get("series_id") == "unemp"], report["skipped"]
    assert {c["series_id"] for c in report["checks"]} == set(PANEL)


def test_an_artifact_changed_between_the_signature_check_and_its_read_is_not_unpickled(loaded, db, monkeypatch):
    """The signature was checked over one read of the row, the bytes against the sha256 of a second:
    someone who can write model_versions (no private key) and swaps in (their pickle, its sha256)
    between the two had it unpickled. Here the swap is made exactly there, by another connection."""
    import hashlib
    import pickle

    from pefm.storage import model_versions as table

    version, _ = train(loaded, "naive", PANEL, spec=None)
    loaded.commit()
    evil = pickle.dumps(print)  # any pickle: it must not reach the unpickler
    read = table.read_artifact

    def swapped_first(conn, version_id):
        with db.connection() as attacker:
            attacker.execute(
                "UPDATE model_versions SET artifact = %s, artifact_sha256 = %s WHERE id = %s",
                (evil, hashlib.sha256(evil).hexdigest(), version_id),
            )
        return read(conn, version_id)

    monkeypatch.setattr(table, "read_artifact", swapped_first)
    with pytest.raises(ArtifactIntegrityError, match="the registry recorded"):
        load_model(loaded, version.id, TRUSTED)


def test_a_series_whose_newest_value_follows_a_gap_is_forecast_from_that_value(conn):
    """With the change across a missing month left out even for the newest value, the model's data
    ended before the gap while its level anchor was the newest value: the served forecast began at
    months already known, from the wrong level."""
    import numpy as np

    from pefm.data.frequency import Frequency
    from pefm.forecasting.panel import load_panel
    from pefm.forecasting.registry import precompute
    from pefm.storage.observations import write_observations
    from pefm.storage.series import SeriesMeta, upsert_series

    upsert_series(conn, SeriesMeta("gappy", "gappy", Frequency.MONTHLY, transform="diff"))
    months = pd.date_range("2010-01-01", "2019-12-01", freq="MS").delete(-2)  # November 2019 missing
    values = 100 + np.cumsum(np.random.default_rng(3).normal(1.0, 0.5, len(months)))
    write_observations(conn, pd.DataFrame({"series_id": "gappy", "ts": months, "value": values}))
    version, _ = train(conn, "ar", ["gappy"], spec=None)
    forecast = precompute(load_model(conn, version.id, TRUSTED), load_panel(conn, ["gappy"]))
    level = [r for r in forecast["rows"] if r["space"] == "level"]
    assert level[0]["ds"].startswith("2020-01-01") and forecast["anchors"]["gappy"] == pytest.approx(values[-1])
