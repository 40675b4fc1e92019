"""Config dataclasses that refuse unknown override keys (a typo must not pass silently)."""
from __future__ import annotations

from dataclasses import fields


class Overridable:
    """Mixin for frozen dataclasses: ``Cls.make(**overrides)``."""

    @classmethod
    def make(cls, **overrides):
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}; known: {sorted(known)}")
        # JSON round trips turn tuples into lists; the dataclasses hold tuples
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
