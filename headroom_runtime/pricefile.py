"""Reading the price tables: the one shipped in the package, plus `headroom_prices=FILE`.

The figures and the cost arithmetic are `headroom_core.prices`; this reads the bytes. A file that
cannot be read or parsed is a configuration error naming the option, the path and why.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import orjson

from headroom_core.options import ConfigError
from headroom_core.prices import PriceError, Prices, PriceTable

OPTION = "headroom_prices"


def shipped() -> PriceTable:
    data = resources.files("headroom_core").joinpath("data/prices.json").read_bytes()
    return PriceTable.from_json(orjson.loads(data), "headroom_core/data/prices.json")


def load(path: Path | None) -> Prices:
    """The shipped table, with the rows of `path` (if any) added or replacing its own."""
    table = shipped()
    if path is None:
        return Prices(table)
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except OSError as e:
        raise ConfigError(OPTION, str(path), f"cannot read it: {e.strerror or e}") from None
    except orjson.JSONDecodeError as e:
        raise ConfigError(OPTION, str(path), f"not JSON: {e}") from None
    try:
        return Prices(table.merged(PriceTable.from_json(doc, str(path))))
    except PriceError as e:
        raise ConfigError(OPTION, str(path), str(e)) from None
