"""coda_aio: coding agents in a browser terminal, wired to a Databricks workspace."""

__version__ = "0.1.0"
