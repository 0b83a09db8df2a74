"""tokens.env: what it keeps, and how it is written while other processes read it."""

import multiprocessing
import os

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pefm.config import Settings
from pefm.local.secrets import local_secrets, verify_keys
from pefm.storage.signing import generate, key_id, public_key, public_keys


def test_a_token_from_the_environment_is_used_and_never_kept(tmp_path):
    """``PEFM_ADMIN_TOKEN=x pefm rollout status`` made x the stack's token in tokens.env for good:
    the running stack still checked the old one, and a CI secret ended up on disk."""
    kept = local_secrets(tmp_path, Settings(home=tmp_path))
    path = tmp_path / "tokens.env"
    before = path.read_bytes()
    key, public = generate()
    given = Settings(home=tmp_path, admin_token="one-off", shadow_key="two words", signing_key=key, verify_keys=public)
    used = local_secrets(tmp_path, given)
    changed = {"PEFM_ADMIN_TOKEN": "one-off", "PEFM_SHADOW_KEY": "two words", "PEFM_SIGNING_KEY": key}
    assert used == {**kept, **changed, "PEFM_VERIFY_KEYS": public}
    assert path.read_bytes() == before
    assert local_secrets(tmp_path, Settings(home=tmp_path)) == kept


def test_a_token_with_spaces_in_the_file_is_read_whole(tmp_path):
    local_secrets(tmp_path, Settings(home=tmp_path))
    path = tmp_path / "tokens.env"
    path.write_text(path.read_text().replace("PEFM_ADMIN_TOKEN=", "PEFM_ADMIN_TOKEN=two words "))
    assert local_secrets(tmp_path, Settings(home=tmp_path))["PEFM_ADMIN_TOKEN"].startswith("two words ")


def test_the_file_is_replaced_whole_never_rewritten_in_place(tmp_path):
    """A file an older PEFM left short gets the secrets it lacks: written in place (O_TRUNC), a
    command reading it meanwhile found it empty and generated a new signing key for itself."""
    first = local_secrets(tmp_path, Settings(home=tmp_path))
    path = tmp_path / "tokens.env"
    short = "".join(f"{k}={v}\n" for k, v in first.items() if k != "PEFM_EVENT_TOKEN")
    path.write_text(short)
    with path.open() as reader:  # what a reader that opened the file before the write goes on reading
        again = local_secrets(tmp_path, Settings(home=tmp_path))
        assert reader.read() == short
    assert {k: v for k, v in again.items() if k != "PEFM_EVENT_TOKEN"} == {
        k: v for k, v in first.items() if k != "PEFM_EVENT_TOKEN"
    }
    assert again["PEFM_EVENT_TOKEN"]
    assert local_secrets(tmp_path, Settings(home=tmp_path)) == again
    assert sorted(os.listdir(tmp_path)) == ["tokens.env"]  # no temporary file left beside it
    assert os.stat(path).st_mode & 0o777 == 0o600


def _first_run(home, barrier, results):
    barrier.wait()
    results.put(local_secrets(home, Settings(home=home))["PEFM_SIGNING_KEY"])


def test_first_runs_at_once_keep_one_set(tmp_path):
    """Commands starting on a new home at once each generated a key pair and wrote it: one whose
    file was overwritten signed artifacts with a key no one trusts. (Unlocked, about half of the
    rounds here ended with several keys.)"""
    context = multiprocessing.get_context("fork")
    runs = 8
    for attempt in range(10):
        home = tmp_path / str(attempt)
        barrier, results = context.Barrier(runs), context.Queue()
        processes = [context.Process(target=_first_run, args=(home, barrier, results)) for _ in range(runs)]
        for process in processes:
            process.start()
        keys = {results.get(timeout=60) for _ in processes}
        for process in processes:
            process.join(timeout=60)
        assert keys == {local_secrets(home, Settings(home=home))["PEFM_SIGNING_KEY"]}, f"round {attempt}"


def test_use_local_secrets_says_which_it_put_into_the_environment(tmp_path, monkeypatch):
    """`pefm up` names where each token is: those tokens.env gave (``FILLED``), or the environment
    (its banner had said "from the environment" of every one once they were all in os.environ)."""
    from pefm.config import get_settings
    from pefm.local import secrets

    for name in (*secrets.TOKENS, "PEFM_SIGNING_KEY", "PEFM_VERIFY_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PEFM_ADMIN_TOKEN", "the-operators-own-admin-token")
    monkeypatch.setattr(secrets, "FILLED", set())
    get_settings.cache_clear()
    try:
        secrets.use_local_secrets(Settings.from_env({"PEFM_HOME": str(tmp_path), **os.environ}))
        assert "PEFM_INGEST_TOKEN" in secrets.FILLED and "PEFM_ADMIN_TOKEN" not in secrets.FILLED
        assert os.environ["PEFM_ADMIN_TOKEN"] == "the-operators-own-admin-token"
    finally:
        for name in secrets.FILLED:
            os.environ.pop(name, None)
        get_settings.cache_clear()


def test_use_local_secrets_trusts_the_environments_keys_with_the_signing_keys_own(tmp_path, monkeypatch):
    """Every command on the embedded server (``pefm serve`` too) trusts the environment's keys
    together with the public half of the signing key in use, as ``pefm up`` does: they had
    replaced it, so that ``pefm serve inference`` refused the model ``pefm train`` signed here."""
    from pefm.config import get_settings
    from pefm.local import secrets

    for name in (*secrets.TOKENS, "PEFM_SIGNING_KEY", "PEFM_VERIFY_KEYS"):
        monkeypatch.delenv(name, raising=False)
    elsewhere = generate()[1]
    monkeypatch.setenv("PEFM_VERIFY_KEYS", elsewhere)
    monkeypatch.setattr(secrets, "FILLED", set())
    get_settings.cache_clear()
    try:
        secrets.use_local_secrets(Settings.from_env({"PEFM_HOME": str(tmp_path), **os.environ}))
        own = trusted(local_secrets(tmp_path, Settings(home=tmp_path))["PEFM_VERIFY_KEYS"])
        assert trusted(os.environ["PEFM_VERIFY_KEYS"]) == trusted(elsewhere) | own and len(own) == 1
        assert "PEFM_VERIFY_KEYS" not in secrets.FILLED  # the environment's, completed
        assert trusted(get_settings().verify_keys) == trusted(elsewhere) | own
    finally:
        for name in secrets.FILLED:
            os.environ.pop(name, None)
        get_settings.cache_clear()


def trusted(text: str) -> set[str]:
    """The ids of the public keys in a ``PEFM_VERIFY_KEYS`` value."""
    return {key_id(key) for key in public_keys(text)}


def test_the_environments_verify_keys_are_trusted_with_the_key_models_are_signed_with_here(tmp_path):
    """`PEFM_VERIFY_KEYS=<CI's key> pefm up`: the monitor and the rollout API still trusted only
    tokens.env's key, the inference revisions only CI's, which refused the model `make up` had
    signed with tokens.env's key. Every process now gets both: the environment's keys, and the
    public half of the signing key in use, whatever signs here."""
    local = local_secrets(tmp_path, Settings(home=tmp_path))
    _, ci = generate()
    given = local_secrets(tmp_path, Settings(home=tmp_path, verify_keys=ci))
    assert trusted(given["PEFM_VERIFY_KEYS"]) == trusted(ci) | trusted(local["PEFM_VERIFY_KEYS"])
    assert given["PEFM_SIGNING_KEY"] == local["PEFM_SIGNING_KEY"]
    # with the environment's own signing key too, its public half is the one added
    key, public = generate()
    both = local_secrets(tmp_path, Settings(home=tmp_path, signing_key=key, verify_keys=ci))
    assert trusted(both["PEFM_VERIFY_KEYS"]) == trusted(ci) | trusted(public)
    # what the local runtime gives the revisions it starts (retraining's, in the monitor or a
    # `pefm retrain`) from a process's settings: the same keys
    assert verify_keys(ci, key) == both["PEFM_VERIFY_KEYS"]


def test_verify_keys_adds_the_signing_keys_half_only_where_it_is_missing():
    key, public = generate()
    _, other = generate()
    pem = public_key(public).public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    assert verify_keys(None, None) is None
    assert verify_keys(other, None) == other  # no signing key here: the given keys alone
    assert verify_keys(None, key) == public
    assert verify_keys(f"{other},{public}", key) == f"{other},{public}"
    assert verify_keys(pem, key) == pem  # the same key as PEM: not added twice
    new, new_public = generate()
    assert trusted(verify_keys(pem, new)) == trusted(pem) | trusted(new_public)  # PEM, then base64
