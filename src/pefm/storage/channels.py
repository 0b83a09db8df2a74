"""PostgreSQL NOTIFY channels (a module of its own: listeners need no pandas)."""

OBSERVATIONS_CHANNEL = "pefm_observations"
"""The PostgreSQL notification channel a write that changed data announces its series on."""
