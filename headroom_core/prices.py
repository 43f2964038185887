"""Prices per model and what a request cost, in dollars, the way the provider bills it.

A `PriceTable` is parsed from JSON (the shipped `headroom_core/data/prices.json`, or the file named
by `headroom_prices`; the runtime reads the file). `cost` prices one request's usage; `saving`
prices the tokens a rewrite kept out of it, as the bill would have charged them (see
docs/decisions.md, "Dollars"). Unknown models have no price: callers show tokens only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

PER = 1_000_000  # prices are USD per million tokens
FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
# dated snapshots and deployment spellings: claude-sonnet-4-5-20250929, gpt-4.1-2025-04-14,
# claude-sonnet-4-5@20250929, us.anthropic.claude-sonnet-4-5-20250929-v1:0
_DATE = re.compile(r"(?:[-@]\d{8}|-\d{4}-\d{2}-\d{2})(?:-v\d+(?::\d+)?)?$")
_VENDOR = re.compile(r"^(?:[a-z]{2,4}\.)?(?:anthropic|openai)[./]")


class PriceError(ValueError):
    """A price table that cannot be used; the message says where."""


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens of each kind. OpenAI bills no cache write: its writes are input."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float


@dataclass(frozen=True, slots=True)
class PriceTable:
    models: dict[str, Price]
    sources: dict[str, str]  # provider -> where the figures come from, with the date

    @classmethod
    def from_json(cls, doc: Any, where: str = "price table") -> PriceTable:
        """`{"sources": {...}, "models": {"name": {"input": 3, ...}}}`; names are matched as
        prefixes of a request's model (longest first), after dropping a date suffix."""
        if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
            raise PriceError(f"{where}: expected an object with a \"models\" object")
        models = {}
        for name, row in doc["models"].items():
            if not isinstance(row, dict):
                raise PriceError(f"{where}: {name}: expected an object of prices")
            values = {}
            for f in FIELDS:
                v = row.get(f)
                if v is None and f.startswith("cache_write"):
                    v = row.get("input")  # no write surcharge (OpenAI)
                if v is None and f == "cache_read":
                    v = row.get("input")
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    raise PriceError(f"{where}: {name}: {f} must be a number >= 0 "
                                     f"(USD per million tokens), not {v!r}")
                values[f] = float(v)
            models[normalize(name)] = Price(**values)
        sources = doc.get("sources") if isinstance(doc.get("sources"), dict) else {}
        return cls(models, {str(k): str(v) for k, v in sources.items()})

    def merged(self, override: PriceTable) -> PriceTable:
        """This table with `override`'s rows added or replacing rows of the same name."""
        return PriceTable({**self.models, **override.models}, {**self.sources,
                                                                **override.sources})

    def lookup(self, model: str | None) -> Price | None:
        if not isinstance(model, str) or not model:
            return None
        name = normalize(model)
        while name:
            price = self.models.get(name)
            if price is not None:
                return price
            cut = name.rfind("-")
            if cut <= 0:
                return None
            name = name[:cut]
        return None


def normalize(model: str) -> str:
    m = model.strip().lower()
    m = _VENDOR.sub("", m)
    m = m.removesuffix("[1m]")
    return _DATE.sub("", m)


class Prices:
    """A table with a per-model memo (the same few model names on every request)."""

    def __init__(self, table: PriceTable) -> None:
        self.table = table
        self._memo: dict[str, Price | None] = {}

    def of(self, model: str | None) -> Price | None:
        if model is None:
            return None
        try:
            return self._memo[model]
        except KeyError:
            pass
        price = self.table.lookup(model)
        if len(self._memo) < 4096:
            self._memo[model] = price
        return price


def _n(usage: dict, key: str) -> int:
    v = usage.get(key)
    return v if type(v) is int and v > 0 else 0


def cost(price: Price, usage: dict) -> float:
    """USD of one request: uncached input, cache writes (1h share at its own price), cache reads
    and output. `usage` is an event record's usage object."""
    write = _n(usage, "cache_creation_tokens")
    write_1h = min(write, _n(usage, "cache_creation_1h_tokens"))
    return (_n(usage, "input_tokens") * price.input
            + (write - write_1h) * price.cache_write_5m + write_1h * price.cache_write_1h
            + _n(usage, "cache_read_tokens") * price.cache_read
            + _n(usage, "output_tokens") * price.output) / PER


def saving(price: Price, usage: dict | None, fresh: int, replayed: int) -> float:
    """USD a rewrite kept off this request's bill, following the session simulator's model: the
    tokens saved in outputs compressed for the first time sit at the end of the prompt, past
    the cached prefix, and would have been written to the cache (or billed as input when the
    request wrote none); tokens saved in outputs replayed from earlier turns sit in the prefix
    and would have been cache reads (written again when this request read nothing)."""
    usage = usage or {}
    write = _n(usage, "cache_creation_tokens")
    write_1h = min(write, _n(usage, "cache_creation_1h_tokens"))
    if write:
        share_1h = write_1h / write
        new_price = price.cache_write_5m * (1 - share_1h) + price.cache_write_1h * share_1h
    else:
        new_price = price.input
    old_price = price.cache_read if _n(usage, "cache_read_tokens") else new_price
    return (max(0, fresh) * new_price + max(0, replayed) * old_price) / PER
