"""What Headroom decided for a conversation's previous request, so the next turn is not redone.

Clients resend the whole conversation every turn. A `Turn` keeps the previous request's body
(as the client sent it, decoded), where its messages are, and the decision for each tool output
in them. The next request of the same conversation that starts with the same messages (one byte
comparison per check) reuses those decisions; only the messages after them are parsed and
decided. An edit, a truncation or a fork shortens what is reused, down to nothing: the request is
then worked out in full. Bounded by conversations and bytes, least recently used first.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .jsonspan import Span
from .ledger import Entry
from .livezone import Candidate

MAX_SESSIONS = 1000
MAX_BYTES = 64 << 20  # the memoised bodies, all conversations together
# The ledger refreshes an entry's age when a lookup finds it (least-recently-stored eviction);
# a conversation served from the memo looks its entries up again at least this often.
FULL_PASS_EVERY = 1800.0


@dataclass(slots=True)
class Known:
    """One tool output of a memoised request, and what was decided for it."""

    cand: Candidate  # as in that request (its `live` flag may change on the next turn)
    # Its literal and where it is in that request's body; None until a turn needed it (then
    # found inside its message, whose bytes every later turn that reuses it shares).
    span: Span | None
    literal: bytes | None
    entry: Entry | None  # what the ledger holds for it (then it is replayed), if anything
    decision: Any  # for a live output not in the ledger: the rewriter's decision
    user: bool  # in a user message (only those are ever live)


@dataclass(slots=True)
class Turn:
    body: bytes  # the request as the client sent it (decoded)
    spans: list[Span]  # of each message element
    assistants: list[int]  # indices of assistant messages
    names: list[list[tuple[str, str]]]  # the tool_use (id, name) pairs each message defines
    known: list[Known]  # every tool output, in document order
    refreshed: float  # when the ledger was last consulted for all of them
    # Just after the messages array: no later `messages` key can start from here on
    # (`jsonspan.no_later_key`); -1: not known.
    tail_at: int = -1
    # Every tool_use (id -> name) of the request, as `names_before(len(spans))` gives it; None:
    # not kept (then it is worked out from `names`). Never mutated once the turn is memoised.
    names_all: dict[str, str] | None = None

    def shared(self, body: bytes) -> int:
        """How many leading messages `body` has byte for byte as this turn had them (the bytes
        before the first message included). A binary search of prefix comparisons."""
        spans, old = self.spans, memoryview(self.body)  # (compared in place, never copied)
        if not spans or not body.startswith(old[:spans[0][1]]):
            return 0
        lo, hi = 1, len(spans)
        if body.startswith(old[:spans[hi - 1][1]]):
            return hi
        # Usually all but the last: the client moved its cache marker off that message.
        if hi > 2 and body.startswith(old[:spans[hi - 2][1]]):
            return hi - 1
        while hi - lo > 1:  # invariant: lo messages shared, hi not
            mid = (lo + hi) // 2
            if body.startswith(old[:spans[mid - 1][1]]):
                lo = mid
            else:
                hi = mid
        return lo

    def assistants_before(self, j: int) -> list[int]:
        return self.assistants[:bisect.bisect_left(self.assistants, j)]

    def last_assistant_before(self, j: int) -> int:
        k = bisect.bisect_left(self.assistants, j)
        return self.assistants[k - 1] if k else -1

    def names_before(self, j: int) -> dict[str, str]:
        """The tool_use names the first `j` messages define (a new dict, the caller's)."""
        # The messages from `j` on usually define none (the one a new turn changes is the
        # previous user message, whose cache marker moved): then they are all of them.
        if self.names_all is not None and not any(self.names[j:]):
            return dict(self.names_all)
        names: dict[str, str] = {}
        for pairs in self.names[:j]:
            names.update(pairs)
        return names


class TurnMemo:
    """Turns by conversation key (tenant, session, endpoint, model), LRU-bounded."""

    def __init__(self, max_sessions: int = MAX_SESSIONS, max_bytes: int = MAX_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions, self.max_bytes, self.clock = max_sessions, max_bytes, clock
        self._turns: OrderedDict[tuple, Turn] = OrderedDict()
        self.bytes = 0
        self._lock = threading.Lock()  # requests of one rewriter may run in worker threads

    def __len__(self) -> int:
        return len(self._turns)

    def get(self, key: tuple) -> Turn | None:
        with self._lock:
            turn = self._turns.get(key)
            if turn is None:
                return None
            if self.clock() - turn.refreshed > FULL_PASS_EVERY:
                self._drop(key)
                return None
            self._turns.move_to_end(key)
            return turn

    def put(self, key: tuple, turn: Turn) -> None:
        with self._lock:
            self._drop(key)
            if len(turn.body) > self.max_bytes // 4:
                return  # one huge conversation must not push every other one out
            self._turns[key] = turn
            self.bytes += len(turn.body)
            while self._turns and (len(self._turns) > self.max_sessions
                                   or self.bytes > self.max_bytes):
                _, old = self._turns.popitem(last=False)
                self.bytes -= len(old.body)

    def drop(self, key: tuple) -> None:
        with self._lock:
            self._drop(key)

    def _drop(self, key: tuple) -> None:
        old = self._turns.pop(key, None)
        if old is not None:
            self.bytes -= len(old.body)
