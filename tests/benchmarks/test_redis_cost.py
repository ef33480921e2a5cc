"""The MONITOR feed ``bench e2e --redis-cost`` replays: every word of a line comes back as
the bytes the client sent (Redis escapes quotes, backslashes and non-printable bytes),
script-internal commands are told apart, and blocking reads lose their BLOCK."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mtdesk.benchmarks.redis_cost import answers_in, messages_in, parse_monitor_line, replayable


def _monitor_escape(word: bytes) -> str:
    """As Redis' sdscatrepr writes a word in a MONITOR line."""
    out = ['"']
    for b in word:
        c = chr(b)
        if c in '\\"':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif c == "\a":
            out.append("\\a")
        elif c == "\b":
            out.append("\\b")
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append(f"\\x{b:02x}")
    out.append('"')
    return "".join(out)


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=6), st.booleans())
def test_a_monitor_line_gives_back_the_words_sent(words: list[bytes], lua: bool) -> None:
    client = "lua" if lua else "127.0.0.1:51234"
    line = f"+1733150000.123456 [14 {client}] " + " ".join(_monitor_escape(w) for w in words)
    assert parse_monitor_line(line) == (lua, words)


def test_what_is_not_a_command_line_is_none() -> None:
    assert parse_monitor_line("+OK") is None
    assert parse_monitor_line("") is None


def test_replayable_keeps_what_clients_sent_and_drops_blocking() -> None:
    feed = [
        (False, [b"EVALSHA", b"abc", b"1", b"mt:in:{3}", b"x"]),
        (True, [b"XADD", b"mt:in:{3}", b"*", b"e", b"x"]),  # inside the script
        (True, [b"XADD", b"mt:t:{t_1}:h:c", b"*", b"m", b"x"]),  # a history, not a partition
        (False, [b"XREADGROUP", b"GROUP", b"g", b"c", b"COUNT", b"5", b"BLOCK", b"500",
                 b"STREAMS", b"mt:in:{3}", b">"]),
        (False, [b"SUBSCRIBE", b"mt:notices"]),
        (False, [b"INFO", b"cpu"]),
        (True, [b"SET", b"mt:t:{t_1}:ctx:messenger:1:2", b"x", b"EX", b"60"]),  # a reply's end
    ]
    assert replayable(feed) == [
        [b"EVALSHA", b"abc", b"1", b"mt:in:{3}", b"x"],
        [b"XREADGROUP", b"GROUP", b"g", b"c", b"COUNT", b"5", b"STREAMS", b"mt:in:{3}", b">"],
    ]
    assert messages_in(feed) == 1
    assert answers_in(feed) == 1
