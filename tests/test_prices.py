"""Prices: which row a model's id finds, what a request costs, what a rewrite saved, the files."""

import json

import pytest

from headroom_core.options import ConfigError
from headroom_core.prices import Price, PriceError, Prices, PriceTable, cost, normalize, saving
from headroom_runtime import pricefile

SONNET = Price(input=3.0, output=15.0, cache_write_5m=3.75, cache_write_1h=6.0, cache_read=0.3)


@pytest.mark.parametrize("model, row", [
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("claude-sonnet-4-5", "claude-sonnet-4-5"),
    ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
    ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
    ("claude-opus-4-20250514", "claude-opus-4"),
    ("claude-opus-4-1-20250805", "claude-opus-4-1"),
    ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
    ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
    ("claude-sonnet-4-6[1m]", "claude-sonnet-4-6"),
    ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
    ("gpt-4.1-2025-04-14", "gpt-4.1"),
    ("gpt-5-codex", "gpt-5-codex"),
    ("gpt-5.1-codex-mini", "gpt-5.1-codex-mini"),
    ("o3-2025-04-16", "o3"),
    ("o4-mini-2025-04-16", "o4-mini"),
    ("GPT-5", "gpt-5"),
])
def test_shipped_table_finds_the_row_of_every_spelling(model, row):
    table = pricefile.shipped()
    assert table.lookup(model) is not None
    assert table.lookup(model) == table.models[row]


@pytest.mark.parametrize("model", ["claude-unknown-9", "llama-3-70b", "", None, "gpt"])
def test_unknown_models_have_no_price(model):
    assert pricefile.shipped().lookup(model) is None


def test_shipped_table_names_its_sources_with_a_date():
    table = pricefile.shipped()
    assert set(table.sources) == {"anthropic", "openai"}
    assert all("2026-" in v for v in table.sources.values())
    # Anthropic's published multipliers hold for every shipped Claude row (Haiku 3's prices are
    # published rounded to the cent)
    for name, p in table.models.items():
        if name.startswith("claude-"):
            assert p.cache_write_5m == pytest.approx(p.input * 1.25, abs=0.02), name
            assert p.cache_write_1h == pytest.approx(p.input * 2, abs=0.02), name
            assert p.cache_read == pytest.approx(p.input * 0.1, abs=0.01), name


def test_openai_rows_bill_writes_as_input():
    p = pricefile.shipped().lookup("gpt-4.1")
    assert (p.input, p.cache_write_5m, p.cache_write_1h, p.cache_read, p.output) == (
        2.0, 2.0, 2.0, 0.5, 8.0)


def test_cost_of_a_request_by_token_kind():
    usage = {"input_tokens": 1000, "output_tokens": 500, "cache_read_tokens": 100_000,
             "cache_creation_tokens": 20_000, "cache_creation_1h_tokens": 5_000}
    expected = (1000 * 3 + 15_000 * 3.75 + 5_000 * 6 + 100_000 * 0.3 + 500 * 15) / 1e6
    assert cost(SONNET, usage) == pytest.approx(expected)


def test_cost_ignores_garbage_figures():
    assert cost(SONNET, {"input_tokens": True, "output_tokens": -5, "cache_read_tokens": "9"}) == 0


def test_saving_follows_the_simulators_billing_model():
    # first time: the saved tokens would have been cache writes (5m)
    warm = {"cache_read_tokens": 50_000, "cache_creation_tokens": 4_000}
    assert saving(SONNET, warm, fresh=10_000, replayed=0) == pytest.approx(10_000 * 3.75 / 1e6)
    # later turns: replayed outputs sit in the cached prefix, read at x0.1
    assert saving(SONNET, warm, fresh=0, replayed=10_000) == pytest.approx(10_000 * 0.3 / 1e6)
    # a request that read nothing from the cache would have written the replayed part again
    cold = {"cache_read_tokens": 0, "cache_creation_tokens": 60_000}
    assert saving(SONNET, cold, fresh=0, replayed=10_000) == pytest.approx(10_000 * 3.75 / 1e6)
    # no caching at all: input price
    plain = {"input_tokens": 60_000}
    assert saving(SONNET, plain, fresh=10_000, replayed=10_000) == pytest.approx(
        20_000 * 3 / 1e6)
    # 1-hour writes are priced at their share
    hour = {"cache_creation_tokens": 1000, "cache_creation_1h_tokens": 1000}
    assert saving(SONNET, hour, fresh=1000, replayed=0) == pytest.approx(1000 * 6 / 1e6)


def test_override_rows_replace_and_add(tmp_path):
    f = tmp_path / "prices.json"
    f.write_text(json.dumps({"sources": {"mine": "negotiated 2026-12"}, "models": {
        "claude-sonnet-4-5": {"input": 1, "output": 2},
        "my-local-model": {"input": 0.5, "output": 1, "cache_read": 0.1}}}))
    prices = pricefile.load(f)
    p = prices.of("claude-sonnet-4-5-20250929")
    assert (p.input, p.output, p.cache_write_5m, p.cache_read) == (1, 2, 1, 1)
    assert prices.of("my-local-model").cache_read == 0.1
    assert prices.of("claude-haiku-4-5") is not None  # shipped rows stay
    assert prices.table.sources["mine"] == "negotiated 2026-12"


@pytest.mark.parametrize("content, why", [
    ("{not json", "not JSON"),
    ('{"models": []}', 'expected an object with a "models" object'),
    ('{"models": {"m": {"input": "3"}}}', "input must be a number"),
    ('{"models": {"m": {"input": -1, "output": 1}}}', "input must be a number"),
    ('{"models": {"m": {"input": 1}}}', "output must be a number"),
])
def test_bad_price_files_are_config_errors_naming_the_option(tmp_path, content, why):
    f = tmp_path / "p.json"
    f.write_text(content)
    with pytest.raises(ConfigError) as e:
        pricefile.load(f)
    assert str(e.value).startswith("headroom_prices: invalid value") and why in str(e.value)


def test_missing_price_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it"):
        pricefile.load(tmp_path / "nope.json")


def test_table_from_json_rejects_rows_that_are_not_objects():
    with pytest.raises(PriceError):
        PriceTable.from_json({"models": {"m": 3}})


def test_memo_answers_repeated_models_alike():
    prices = Prices(pricefile.shipped())
    assert prices.of("gpt-5") is prices.of("gpt-5") is prices.table.models["gpt-5"]
    assert prices.of(None) is None


def test_normalize():
    assert normalize("Claude-Sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert normalize("openai/gpt-5") == "gpt-5"
