"""The pytest plugin's own rules, without a proxy (tests/e2e/test_pytest_plugin.py drives it)."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from headroom_pytest import plugin


def test_loading_the_plugin_imports_no_mitmproxy():
    # every pytest run of a project with Headroom installed loads the plugin
    code = ("import sys, headroom_pytest.plugin; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('mitmproxy', 'headroom_core', 'headroom_runtime')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("ci,mode", [(None, "once"), ("", "once"), ("true", "replay"),
                                     ("1", "replay"), ("TRUE", "replay"), ("false", "once"),
                                     ("0", "once")])
def test_default_mode_follows_ci(monkeypatch, ci, mode):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    assert plugin.default_mode() == mode


class Marker(SimpleNamespace):
    pass


def item(nodeid, marker=None, path="/repo/tests/agents/test_flow.py"):
    return SimpleNamespace(path=Path(path), nodeid=nodeid,
                           get_closest_marker=lambda name: marker)


def test_cassette_folders():
    base = Path("/repo/tests/agents")
    assert plugin.cassette_for(item("tests/agents/test_flow.py::test_a")) == (
        base / "cassettes" / "test_flow" / "test_a", None)
    assert plugin.cassette_for(item("tests/agents/test_flow.py::TestX::test_b[gpt-x/1]")) == (
        base / "cassettes" / "test_flow" / "TestX.test_b_gpt-x_1", None)
    module = Marker(args=(), kwargs={"scope": "module", "mode": "record"})
    assert plugin.cassette_for(item("x::test_a", module)) == (
        base / "cassettes" / "test_flow", "record")
    named = Marker(args=("fixtures/shared",), kwargs={})
    assert plugin.cassette_for(item("x::test_a", named)) == (base / "fixtures" / "shared", None)
    with pytest.raises(pytest.UsageError):
        plugin.cassette_for(item("x::t", Marker(args=(), kwargs={"scope": "session"})))
    with pytest.raises(pytest.UsageError):
        plugin.cassette_for(item("x::t", Marker(args=(), kwargs={"mode": "all"})))
