"""Who a rate limit counts: the caller's key."""

from pefm.serving.ratelimit import caller_key


def test_a_caller_is_its_oidc_subject_else_its_verified_token_else_its_address():
    token = caller_key("Bearer s3cret", "10.0.0.1")
    assert caller_key("Bearer   s3cret  ", "10.0.0.9") == token  # spaces make no new budget
    assert caller_key("bearer s3cret", None) == token and "s3cret" not in token  # hashed, never stored
    assert caller_key("Bearer other", "10.0.0.1") != token
    assert caller_key("", "10.0.0.1") == caller_key("Basic xyz", "10.0.0.1") == "a10.0.0.1"
    assert caller_key("", None) == "aunknown"
    sender = caller_key("Bearer token-1", "10.0.0.1", subject="system:serviceaccount:pefm:ingest")
    assert sender == caller_key("Bearer token-2", "10.0.0.2", subject="system:serviceaccount:pefm:ingest")
    assert sender != caller_key("Bearer token-1", "10.0.0.1", subject="system:serviceaccount:pefm:other")
    assert sender.startswith("s") and token.startswith("t")  # a subject never shares a token's budget
