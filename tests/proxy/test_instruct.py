"""Reading the origin's Grip-* headers the way Pushpin does."""

from __future__ import annotations

import pytest

from drf_grip.protocol import (
    Channel,
    InstructError,
    MalformedEvents,
    WebSocketEvent,
    decode_events,
    encode_events,
    parse_instruct,
    whole_number,
)


def headers(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in pairs]


def test_channels_with_prev_ids_and_a_next_link():
    instruct = parse_instruct(headers(
        ("Grip-Hold", "stream"),
        ("Grip-Channel", 'a; prev-id=1, b'),
        ("Grip-Channel", 'c; prev-id="x, y"'),
        ("Grip-Link", "</next/t0k/?q=1>; rel=next; timeout=30"),
        ("Grip-Keep-Alive", "\\\\n\\n; format=cstring; timeout=20; mode=interval"),
    ))
    assert instruct.channels == [Channel("a", "1"), Channel("b"), Channel("c", "x, y")]
    assert instruct.next_link.uri == "/next/t0k/?q=1" and instruct.next_link.timeout == 30
    assert instruct.keep_alive.data == b"\\n\n"  # one backslash, not three (django-grip's bug)
    assert instruct.keep_alive.mode == "interval"


def test_status_timeout_and_defaults():
    instruct = parse_instruct(headers(
        ("Grip-Hold", "response"), ("Grip-Channel", "a"), ("Grip-Timeout", "20"),
        ("Grip-Status", "304 Not Modified"),
    ))
    assert instruct.hold == "response"
    assert (instruct.timeout, instruct.status) == (20, (304, "Not Modified"))
    assert not parse_instruct(headers(("Content-Type", "text/plain"))).is_grip


@pytest.mark.parametrize("text, status", [("0", (0, None)), ("+201", (201, None)),
                                          ("999 Odd", (999, "Odd"))])
def test_grip_status_is_any_code_pushpin_takes(text, status):
    """Pushpin 1.36 takes any code from 0 to 999 (handler/instruct.cpp); which of them a
    server can send is the embedded proxy's concern, not the protocol's."""
    assert parse_instruct(headers(("Grip-Status", text))).status == status


def test_channels_without_grip_hold_are_no_hold():
    # Pushpin 1.36 relays such an answer at once; the embedded proxy held it (a probe).
    instruct = parse_instruct(headers(("Grip-Channel", "a"), ("Grip-Timeout", "20")))
    assert instruct.hold is None and not instruct.is_grip


@pytest.mark.parametrize("pairs", [
    [("Grip-Hold", "forever"), ("Grip-Channel", "a")],
    [("Grip-Hold", "response")],
    [("Grip-Channel", "a"), ("Grip-Timeout", "soon")],
    [("Grip-Channel", "a"), ("Grip-Keep-Alive", "x; format=rot13")],
    # Pushpin 1.36 reads its timeouts as C ints (handler/instruct.cpp).
    [("Grip-Hold", "response"), ("Grip-Channel", "a"), ("Grip-Timeout", "5.5")],
    [("Grip-Hold", "response"), ("Grip-Channel", "a"), ("Grip-Timeout", "99999999999")],
    [("Grip-Hold", "response"), ("Grip-Channel", "a"), ("Grip-Timeout", "\uff15")],
    [("Grip-Hold", "stream"), ("Grip-Channel", "a"), ("Grip-Keep-Alive", "x; timeout=0.5")],
    [("Grip-Hold", "stream"), ("Grip-Channel", "a"), ("Grip-Link", "</n/>; rel=next; timeout=1.5")],
])
def test_malformed_instructions_are_errors(pairs):
    with pytest.raises(InstructError):
        parse_instruct(headers(*pairs))


def test_timeouts_are_whole_seconds_as_pushpin_reads_them():
    instruct = parse_instruct(headers(
        ("Grip-Hold", "response"), ("Grip-Channel", "a"), ("Grip-Timeout", " +7 "),
    ))
    assert instruct.timeout == 7
    stream = parse_instruct(headers(
        ("Grip-Hold", "stream"), ("Grip-Channel", "a"), ("Grip-Keep-Alive", "x"),
        ("Grip-Link", "</n/>; rel=next"),
    ))
    assert (stream.keep_alive.timeout, stream.next_link.timeout) == (55, 120)  # the defaults


@pytest.mark.parametrize("text, number", [
    ("5", 5), (" +7 ", 7), ("-3", -3), ("1.5", None), ("abc", None), ("", None),
    ("1_0", None), ("99999999999", None), ("\uff15", None),
])
def test_numbers_are_read_as_pushpin_reads_them(text, number):
    """Pushpin 1.36 reads Grip-Timeout (handler/instruct.cpp) and a WebSocket-over-HTTP
    answer's Keep-Alive-Interval (proxy/websocketoverhttp.cpp, ``toInt(&ok)``) with Qt's
    ``QByteArray::toInt``: ``Keep-Alive-Interval: 1.5`` turns keep-alives off, where the
    embedded proxy called every 1.5 s (raised to 20)."""
    assert whole_number(text) == number


def test_websocket_events_round_trip_and_errors():
    events = [
        WebSocketEvent("OPEN"),
        WebSocketEvent("TEXT", b"hi\r\nthere"),
        WebSocketEvent("CLOSE", b"\x03\xe8"),
    ]
    assert decode_events(encode_events(events)) == events
    for bad in (b"TEXT 5\r\nhi\r\n", b"SHOUT\r\n", b"TEXT zz\r\nhi\r\n", b"OPEN"):
        with pytest.raises(MalformedEvents):
            decode_events(bad)
