"""Fixtures shared across test modules: a real redis-server (tests/redis_server.py), and a
look at which files this process holds open."""

import gc
import os

import pytest

from tests.redis_server import MISSING, RedisServer, binary
from tests.runtime_util import open_files_under


def _need_redis() -> None:
    if binary() is None:
        if os.environ.get("CI"):
            # .ci/run installs it: a missing binary there is a broken CI, not a reason to skip.
            pytest.fail(f"{MISSING} (CI is set: .ci/run should have installed it)")
        pytest.skip(MISSING)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One redis-server on a free loopback port for the whole run (flushed per test)."""
    _need_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server):
    """The shared server's URL, emptied first."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def redis_proc(tmp_path):
    """A redis-server of this test's own, to stop, pause and restart."""
    _need_redis()
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.close()


@pytest.fixture
def redis_unix(tmp_path):
    """A redis-server listening on a unix socket only (port 0)."""
    _need_redis()
    server = RedisServer(tmp_path / "redis-unix", unix=True).start()
    yield server
    server.close()


@pytest.fixture
def redis_factory(tmp_path):
    """`make(password=None)`: a redis-server of this test's own, not started yet (fault tests
    that need Redis down at first, or a password); stopped at the end."""
    _need_redis()
    servers = []

    def make(**kwargs) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def open_files():
    """`open_files(path)`: this process's open files under `path` (Linux /proc), with the
    garbage collector off for the test, so that nothing closes a forgotten SQLite connection
    (which sits in a reference cycle) behind its back."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc")
    gc.disable()
    try:
        yield open_files_under
    finally:
        gc.enable()
