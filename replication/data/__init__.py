"""Data: Qlib provider reader, compact pack, Alpha158-20 features, day cross-section datasets."""
from replication.data.provider import FIELDS, DataError, Market, read_provider, resolve_provider

__all__ = ["FIELDS", "DataError", "Market", "read_provider", "resolve_provider"]
