import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from headroom_core.compress import tokens
from headroom_core.compress.tokens import (
    ESTIMATE,
    O200K,
    count_tokens,
    estimate_tokens,
    saves_enough,
    tokenizer_name,
)

ROOT = Path(__file__).resolve().parents[1]

# Reference counts computed with tiktoken's o200k_base (the published vocabulary, sha256
# 446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d).
O200K_REFERENCE = [
    ("hello world", 2),
    ("Hello, world! It's 12345678 o'clock.", 12),
    ("def f(x):\n    return x  # ünïcödé 中文 😀\n", 16),
    ("error[E0308]: mismatched types\n --> src/main.rs:4:18", 17),
    ("<|endoftext|>", 7),  # special tokens count as plain text
    ("", 0),
]


def test_the_o200k_tokenizer_loads_offline_from_the_installed_wheel():
    assert tokenizer_name() == O200K


def test_counts_match_tiktoken_o200k_base():
    for text, expected in O200K_REFERENCE:
        assert count_tokens(text) == expected, text


def test_lone_surrogates_are_counted_not_raised():
    n = count_tokens("abc\ud800def")
    assert isinstance(n, int) and n >= 2


@given(st.text())
def test_count_never_raises_and_is_bounded_by_bytes(text):
    n = count_tokens(text)
    assert 0 <= n <= len(text.encode("utf-8", "surrogatepass"))


@given(st.text())
def test_estimate_is_ceil_bytes_over_4(text):
    size = len(text.encode("utf-8", "surrogatepass"))
    assert estimate_tokens(text) == -(-size // 4)


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_without_the_tokenizer_package_counts_fall_back_to_the_estimate():
    code = (
        "import sys; sys.modules['rs_bpe'] = None\n"
        "from headroom_core.compress import tokens\n"
        "print(tokens.tokenizer_name(), tokens.count_tokens('abcdefgh'), tokens.count_tokens('ééé'))"
    )
    assert _run(code) == f"{ESTIMATE} 2 2"


def test_concurrent_first_use_loads_once_and_agrees():
    code = (
        "import threading\n"
        "from headroom_core.compress import tokens\n"
        "res = []\n"
        "def work():\n"
        "    res.append((tokens.count_tokens('hello world ' * 50), tokens.tokenizer_name()))\n"
        "ts = [threading.Thread(target=work) for _ in range(8)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "print(len(set(res)), res[0][0], res[0][1])"
    )
    assert _run(code) == f"1 {tokens.count_tokens('hello world ' * 50)} {O200K}"


def test_saves_enough_needs_both_the_ratio_and_the_absolute_saving():
    assert saves_enough(1000, 900, 0.10, 100)
    assert not saves_enough(1000, 901, 0.10, 50)  # ratio missed
    assert not saves_enough(1000, 850, 0.10, 200)  # absolute saving missed
    assert saves_enough(1000, 800, 0.10, 200)
