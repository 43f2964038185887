"""The option table: every option parses its default, bad values name option, value and rule."""

from collections.abc import Sequence
from pathlib import Path

import pytest

from headroom_core import options
from headroom_core.options import OPTIONS, ConfigError, from_options, make, parse_size


def test_every_default_parses_and_every_option_has_help():
    c = options.Config()
    for o in OPTIONS:
        assert o.name.startswith("headroom_") and len(o.help) > 20
        assert getattr(c, o.key) == o(o.default)
        assert o.type in (str, bool, int, Sequence[str])
    assert len({o.name for o in OPTIONS}) == len(OPTIONS)


def test_defaults(tmp_path):
    c = make(dir=str(tmp_path))
    assert c.dir == tmp_path
    assert c.events_path == tmp_path / "events.jsonl"
    assert "api.anthropic.com" in c.hosts and c.max_body == 64 << 20
    assert c.local_clients == ()


def test_events_off_and_custom(tmp_path):
    assert make(dir=str(tmp_path), events="off").events_path is None
    c = make(dir=str(tmp_path), events="~/x.jsonl")
    assert c.events_path == Path("~/x.jsonl").expanduser()


def test_extra_hosts_normalised():
    c = from_options({"headroom_hosts": ["LLM-GW.corp.", "gw.internal:8443"]})
    assert {"llm-gw.corp", "gw.internal", "api.openai.com"} <= c.hosts


# One bad value per kind of option: the message names the option, the value and the rule.
@pytest.mark.parametrize("opt,value,rule", [
    ("headroom_hosts", ["bad host"], "host name"),
    ("headroom_max_body", "lots", "size"),
    ("headroom_strip_prefixes", ["x bad"], "header name"),
    ("headroom_compress_min_tokens", "abc", "whole number >= 0"),
    ("headroom_compress_min_tokens", -1, "whole number >= 0"),
    ("headroom_beta_max_sessions", "0", "whole number >= 1"),
    ("headroom_stream_sse", "maybe", "true or false"),
    ("headroom_store_mode", "cahce", "one of off, cache, record, replay, once"),
    ("headroom_compress", "bogus", "one of off, auto, on"),
    ("headroom_compress_min_ratio", "1.5", "fraction"),
    ("headroom_store_ttl", "soon", "duration"),
    ("headroom_flush_interval", "0", "seconds between"),
    ("headroom_namespace", "a b", "letters, digits"),
    ("headroom_ccr_host", "http://x", "host[:port]"),
    ("headroom_local_clients", ["everyone"], "address or network"),
    ("headroom_store_exclude", ["a..b"], "invalid JSON path"),
    ("headroom_store_exclude", ["headers."], "expected headers.NAME"),
    ("headroom_store_exclude", ["headers.anthropic-version[0]"], "expected headers.NAME"),
    ("headroom_compress_min_bytes", ["pdf=1k"], "kind=size"),
    ("headroom_dir", "  ", "directory path"),
])
def test_bad_values_name_option_value_and_rule(opt, value, rule):
    with pytest.raises(ConfigError) as e:
        from_options({opt: value})
    msg = str(e.value)
    shown = value if isinstance(value, (str, int)) else value[0]
    assert msg.startswith(opt + ": invalid value ") and repr(shown) in msg and rule in msg
    assert "\n" not in msg


def test_unknown_option_suggests_the_closest():
    with pytest.raises(ConfigError) as e:
        from_options({"headroom_store_mod": "cache"})
    assert "headroom_store_mod: " in str(e.value) and "did you mean headroom_store_mode?" in str(e.value)
    assert options.suggest("headroom_complete_nonsense_xyz") is None
    assert "known options" in options.unknown_message("headroom_complete_nonsense_xyz")


def test_flags_and_numbers_accept_what_mitmproxy_passes():
    assert make(stream_sse=False).stream_sse is False
    assert make(stream_sse="").stream_sse is True  # `--set headroom_stream_sse` alone
    assert make(compress_min_tokens=" 12 ").compress_min_tokens == 12
    with pytest.raises(ConfigError):
        make(compress_min_tokens=True)


def test_sizes():
    assert parse_size("x", "512k") == 512 << 10
    assert parse_size("x", "64m") == 64 << 20
    assert parse_size("x", "2GiB") == 2 << 30
    assert parse_size("x", "1000") == 1000


def test_config_is_immutable_and_replaceable(tmp_path):
    c = make(dir=str(tmp_path))
    with pytest.raises(AttributeError):
        c.store_mode = "cache"
    assert c.replace(store_mode="cache").store_mode == "cache" and c.store_mode == "off"


def test_readme_options_table_is_generated_from_the_table():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert options.markdown_table() in readme


def test_cassette_and_header_exclusions_parse():
    c = from_options({"headroom_cassette": " ~/fixtures/llm ", "headroom_store_mode": "once",
                      "headroom_store_exclude": ["headers.anthropic-version", "metadata.x"]})
    assert c.cassette == Path("~/fixtures/llm").expanduser() and c.store_mode == "once"
    assert c.store_exclude == ("headers.anthropic-version", "metadata.x")
    assert from_options({}).cassette is None and from_options({"cassette": "  "}).cassette is None

