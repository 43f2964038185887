"""pytest plugin: run agent tests against recorded model-API answers (Headroom cassettes).

    def test_agent(headroom):          # ANTHROPIC_BASE_URL / OPENAI_BASE_URL point at Headroom
        client = anthropic.Anthropic()
        ...

One Headroom mitmdump per test session, a reverse proxy in front of api.anthropic.com and
api.openai.com (`--headroom-upstream-anthropic/-openai` or `$HEADROOM_UPSTREAM_ANTHROPIC/_OPENAI`
point it elsewhere). Each test using the `headroom` fixture gets its own cassette,
`<test file dir>/cassettes/<module>/<test>/` (`@pytest.mark.headroom_cassette(scope="module")`:
one per module; a path argument: that folder, relative to the test file). Modes
(`--headroom-record-mode`): `replay` (never forwards; the default when $CI is set), `once` (the
default otherwise: records into an empty cassette, replays a recorded one), `record`, `cache`.
A request without a recording fails the test with Headroom's explanation of what differs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .proxy import HeadroomProxy

MODES = ("once", "replay", "record", "cache")
MARKER = "headroom_cassette"
UPSTREAMS = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com"}
# In replay mode the SDKs still want a key; recordings replay with any (a cassette is its own
# tenant), so a placeholder is set when the environment has none.
PLACEHOLDER_KEY = "headroom-replay-no-key"


class HeadroomWarning(pytest.PytestWarning):
    """A test took the `headroom` fixture but sent Headroom nothing."""


def default_mode() -> str:
    ci = os.environ.get("CI", "").strip().lower()
    return "replay" if ci and ci not in ("0", "false", "no", "off") else "once"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("headroom", "Headroom cassettes (recorded model-API answers)")
    g.addoption("--headroom-record-mode", choices=MODES, default=None,
                help="replay: never reach the API (default when $CI is set); once: record into "
                     "an empty cassette, replay a recorded one (default otherwise); record: "
                     "always forward and re-record; cache: replay what is recorded, record the "
                     "rest.")
    for name, url in UPSTREAMS.items():
        g.addoption(f"--headroom-upstream-{name}", default=None, metavar="URL",
                    help=f"where {name} requests go when recording (default "
                         f"$HEADROOM_UPSTREAM_{name.upper()} or {url})")
    g.addoption("--headroom-exclude", action="append", default=[], metavar="PATH",
                help="leave a JSON path or headers.NAME out of the recording key (as "
                     "headroom_store_exclude), e.g. headers.anthropic-version")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(path=None, *, scope='test', mode=None): the Headroom cassette of "
        "a test: a folder relative to the test file, one per test (default) or per module, and "
        "a record mode for it")


@dataclass
class Cassette:
    """What the `headroom` fixture gives a test."""

    path: Path
    mode: str  # as asked
    effective_mode: str  # what Headroom runs: `once` became replay or record
    anthropic_url: str
    openai_url: str
    problems: list[str] = field(default_factory=list)  # cassette files skipped (name: line: why)
    _proxy: HeadroomProxy | None = field(default=None, repr=False)

    def misses(self) -> list[dict]:
        """Requests answered with a replay miss or refusal since the last call."""
        return self._proxy.misses() if self._proxy is not None else []


@pytest.fixture(scope="session")
def headroom_proxy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The session's Headroom mitmdump (started when a test first uses `headroom`)."""
    opt = request.config.getoption
    upstreams = {name: opt(f"--headroom-upstream-{name}")
                 or os.environ.get(f"HEADROOM_UPSTREAM_{name.upper()}") or url
                 for name, url in UPSTREAMS.items()}
    proxy = HeadroomProxy(tmp_path_factory.mktemp("headroom"), mode=session_mode(request.config),
                          exclude=opt("--headroom-exclude"), **upstreams)
    proxy.start()
    yield proxy
    proxy.stop()


def session_mode(config: pytest.Config) -> str:
    return config.getoption("--headroom-record-mode") or default_mode()


def _clean(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "_"


def cassette_for(item: pytest.Item) -> tuple[Path, str | None]:
    """The cassette folder of a test and the mode its marker asks for."""
    marker = item.get_closest_marker(MARKER)
    args, kwargs = (marker.args, marker.kwargs) if marker else ((), {})
    base = Path(item.path).parent
    module = Path(item.path).stem
    path = kwargs.get("path", args[0] if args else None)
    scope = kwargs.get("scope", "test")
    if scope not in ("test", "module"):
        raise pytest.UsageError(f"{MARKER}: scope must be 'test' or 'module', not {scope!r}")
    mode = kwargs.get("mode")
    if mode is not None and mode not in MODES:
        raise pytest.UsageError(f"{MARKER}: mode must be one of {', '.join(MODES)}")
    if path is not None:
        return (base / path).resolve(), mode
    folder = base / "cassettes" / _clean(module)
    if scope == "test":
        folder = folder / _clean(".".join(item.nodeid.split("::")[1:]))
    return folder, mode


@pytest.fixture
def headroom(request: pytest.FixtureRequest, headroom_proxy: HeadroomProxy,
             monkeypatch: pytest.MonkeyPatch) -> Cassette:
    """Headroom in front of the model APIs for this test, on this test's cassette: sets
    ANTHROPIC_BASE_URL and OPENAI_BASE_URL (and placeholder API keys when replaying without
    any). A request the cassette cannot answer fails the test with the explanation."""
    path, mode = cassette_for(request.node)
    mode = mode or session_mode(request.config)
    info = headroom_proxy.use(path, mode)
    headroom_proxy.misses()  # what earlier tests left
    monkeypatch.setenv("ANTHROPIC_BASE_URL", headroom_proxy.anthropic_url)
    monkeypatch.setenv("OPENAI_BASE_URL", headroom_proxy.openai_url)
    if info["mode"] == "replay":
        for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
            if not os.environ.get(var):
                monkeypatch.setenv(var, PLACEHOLDER_KEY)
    cassette = Cassette(path, mode, info["mode"], headroom_proxy.anthropic_url,
                        headroom_proxy.openai_url, info.get("problems") or [], headroom_proxy)
    yield cassette
    headroom_proxy.flush()  # the recordings are on disk when the test is over


def explain(cassette: Cassette, misses: list[dict]) -> str:
    lines = [f"headroom: {len(misses)} request(s) without a recording in cassette "
             f"{cassette.path} (mode {cassette.mode}, running {cassette.effective_mode}):"]
    lines += [f"  {m['method']} {m['path']}: {m['message']}" for m in misses]
    if cassette.problems:
        lines.append("cassette files skipped: " + "; ".join(cassette.problems))
    if cassette.mode == "once":
        lines.append("To record: delete the cassette folder (mode once records only into an "
                     "empty one), or run with --headroom-record-mode=cache (adds what is "
                     "missing) or record (re-records).")
    else:
        lines.append("To record: run without CI set (mode once records into an empty "
                     "cassette), or with --headroom-record-mode=record (re-records) or cache "
                     "(adds what is missing).")
    return "\n".join(lines)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A model call without a recording fails the test that made it, even when its code caught
    the SDK's error. Other requests to the API hosts that could not be answered (Claude Code's
    `HEAD /` reachability probe, say: never a 2xx, so never recorded) are reported only."""
    cassette = getattr(item, "funcargs", {}).get("headroom")
    if not isinstance(cassette, Cassette):
        return (yield)
    try:
        result = yield
    except BaseException:
        misses = cassette.misses()
        if misses:
            item.add_report_section("call", "headroom", explain(cassette, misses))
        raise
    misses = cassette.misses()
    if cassette._proxy is not None and cassette._proxy.requests_seen == 0:
        # Most often a client made before the test (at import time): it read the base URL
        # before the fixture set it, so its requests went around Headroom (in CI: to the API).
        item.warn(HeadroomWarning(
            "headroom: this test sent Headroom no request. A client created before the test "
            "started (at import time, or in a wider-scoped fixture) does not see the "
            "ANTHROPIC_BASE_URL / OPENAI_BASE_URL the `headroom` fixture sets: create it in "
            "the test, or pass base_url=headroom.anthropic_url / headroom.openai_url."))
    failing = [m for m in misses if m.get("model_call", True)]
    if failing:
        pytest.fail(explain(cassette, failing), pytrace=False)
    if misses:
        item.add_report_section("call", "headroom", explain(cassette, misses))
    return result
