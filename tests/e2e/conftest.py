import hashlib
from pathlib import Path

import pytest

from tests.e2e.fake_upstream import FakeUpstream
from tests.e2e.proxy import Mitmdump

FAULT = Path(__file__).resolve().parent / "fault.py"


@pytest.fixture(scope="session")
def upstream():
    up = FakeUpstream()
    yield up
    up.close()


@pytest.fixture(autouse=True)
def _fresh_upstream_log(request):
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").clear()


@pytest.fixture(scope="module")
def reverse_proxy(upstream):
    with Mitmdump(mode=f"reverse:{upstream.url}", extra_args=["-s", str(FAULT)]) as p:
        yield p


@pytest.fixture(scope="module")
def regular_proxy(upstream):
    with Mitmdump(mode="regular", redirect_to=upstream.tls_port) as p:
        yield p


class Capture:
    """httpx event hook that remembers the exact request bytes a client sent."""

    def __init__(self) -> None:
        self.requests: list = []

    def __call__(self, request) -> None:
        request.read()
        self.requests.append(request)

    @property
    def last(self):
        return self.requests[-1]

    def last_sha(self) -> str:
        return hashlib.sha256(self.last.content).hexdigest()


@pytest.fixture
def capture():
    return Capture()
