from pathlib import Path

import pytest

from headroom_core.config import ConfigError, from_options, parse_size


def test_defaults(tmp_path):
    c = from_options({"headroom_dir": str(tmp_path)})
    assert c.headroom_dir == tmp_path
    assert c.events_path == tmp_path / "events.jsonl"
    assert "api.anthropic.com" in c.hosts and c.max_body == 64 << 20


def test_events_off_and_custom(tmp_path):
    assert from_options({"headroom_dir": str(tmp_path), "headroom_events": "off"}).events_path is None
    c = from_options({"headroom_dir": str(tmp_path), "headroom_events": "~/x.jsonl"})
    assert c.events_path == Path("~/x.jsonl").expanduser()


def test_extra_hosts_normalised():
    c = from_options({"headroom_hosts": ["LLM-GW.corp.", "gw.internal:8443"]})
    assert {"llm-gw.corp", "gw.internal", "api.openai.com"} <= c.hosts


@pytest.mark.parametrize("opt,value", [
    ("headroom_hosts", ["bad host"]),
    ("headroom_max_body", "lots"),
    ("headroom_strip_prefixes", ["x bad"]),
])
def test_bad_values_name_the_option(opt, value):
    with pytest.raises(ConfigError) as e:
        from_options({opt: value})
    assert opt.split("_")[1] in str(e.value) and repr(value if isinstance(value, str) else value[0])[:4] in str(e.value)


def test_sizes():
    assert parse_size("x", "512k") == 512 << 10
    assert parse_size("x", "64m") == 64 << 20
    assert parse_size("x", "2GiB") == 2 << 30
    assert parse_size("x", "1000") == 1000
