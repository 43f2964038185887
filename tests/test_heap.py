"""The startup heap is frozen once for the garbage collector and given back before parts are
dropped."""

import gc
import weakref

import pytest

from headroom_runtime import heap


@pytest.fixture(autouse=True)
def thawed():
    heap.thaw()
    yield
    heap.thaw()


def test_freeze_once_then_thaw():
    assert not heap.frozen()
    count = heap.freeze_startup()
    assert count > 1000 and gc.get_freeze_count() > count // 2 and heap.frozen()
    assert heap.freeze_startup() == 0  # once per process until thawed
    heap.thaw()
    assert gc.get_freeze_count() == 0 and not heap.frozen()
    heap.thaw()  # twice is harmless


def test_a_cycle_dropped_after_a_thaw_is_collected():
    class Part:
        pass

    a, b = Part(), Part()
    a.other, b.other = b, a  # a cycle, as engine parts have
    heap.freeze_startup()
    gone = []
    ref = weakref.ref(a, lambda _: gone.append(True))
    del a, b
    gc.collect()
    assert ref() is not None  # frozen: no collection walks it
    heap.thaw()
    gc.collect()
    assert ref() is None and gone
