"""Data: Qlib provider reader, compact pack, Alpha158-20 features, day cross-section datasets."""
from replication.data.features import FEATURES, LABEL, alpha158, alpha158_arrays
from replication.data.provider import (FIELDS, DataError, Market, load_market, read_provider,
                                       resolve_provider)

__all__ = ["FEATURES", "FIELDS", "LABEL", "DataError", "Market", "alpha158", "alpha158_arrays",
           "load_market", "read_provider", "resolve_provider"]
