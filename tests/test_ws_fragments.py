"""addons/headroom_ws_fragments.py: a changed text message is framed between characters."""

import sys
from pathlib import Path

import wsproto.events
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy.proxy.layers.websocket import Fragmentizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "addons"))
import headroom_ws_fragments  # noqa: E402


def test_installed_on_this_mitmproxy():
    assert headroom_ws_fragments.install() and headroom_ws_fragments.installed()


def test_cuts_move_back_to_the_start_of_their_character():
    text = "aé✓😀".encode()  # 1, 2, 3 and 4 bytes
    assert headroom_ws_fragments.char_cuts(text, [1, 2, 3, 4, 5, 6, 7, 8, 9]) == [1, 3, 6]
    assert headroom_ws_fragments.char_cuts(b"abc", [0, 3]) == []


@settings(max_examples=60, deadline=None)
@given(text=st.text(min_size=0, max_size=3000), size=st.integers(min_value=1, max_value=50),
       same_length=st.booleans(), data=st.data())
def test_a_changed_message_arrives_whole_in_any_framing(text, size, same_length, data):
    headroom_ws_fragments.install()
    content = text.encode()
    if same_length and content:  # the original frames' sizes are kept (any of them)
        cuts = sorted(data.draw(st.sets(st.integers(1, len(content)), max_size=8)) | {len(content)})
        lengths = [b - a for a, b in zip([0, *cuts], cuts)]
    else:
        lengths = [len(content) + 1]
    frag = Fragmentizer([b"x" * n for n in lengths], True)
    frag.FRAGMENT_SIZE = size
    msgs = list(frag(content))
    assert all(isinstance(m, wsproto.events.TextMessage) for m in msgs)
    assert "".join(m.data for m in msgs) == text  # nothing replaced by U+FFFD
    assert [m.message_finished for m in msgs] == [False] * (len(msgs) - 1) + [True]
    assert all(m.data for m in msgs[:-1])  # no empty frame in the middle


def test_binary_messages_keep_mitmproxys_framing():
    headroom_ws_fragments.install()
    frag = Fragmentizer([b"ab"], False)
    frag.FRAGMENT_SIZE = 3
    assert [m.data for m in frag(b"\xe2\x9c\x93\xe2\x9c\x93")] == [b"\xe2\x9c\x93", b"\xe2\x9c\x93"]
