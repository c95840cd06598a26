"""Which environment variables carry credentials.

Its own module, importing nothing, because the launcher (``access.secrets_handoff``) needs it
before anything else is imported; ``config`` re-exports it for everyone else.
"""

# Never passed to a PTY; taken out of the process environment at startup (see secrets_handoff).
SECRET_ENV_VARS = (
    "DATABRICKS_TOKEN",
    "DATABRICKS_CLIENT_ID",
    "DATABRICKS_CLIENT_SECRET",
    "CODA_WEB_TOKEN",  # the web key: whoever holds it gets a shell
)


def is_secret_env(name: str) -> bool:
    """A variable that carries a credential (any DATABRICKS_CLIENT_* included, to be safe)."""
    return name in SECRET_ENV_VARS or name.startswith("DATABRICKS_CLIENT_")
