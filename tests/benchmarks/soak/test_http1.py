"""The minimal HTTP/1.1 client's parsing, fed bytes directly (no sockets)."""

import asyncio

import pytest

from benchmarks.soak.http1 import BadResponse, _read_body, parse_head


def test_parse_head_lowercases_headers_and_reads_keep_alive():
    status, headers, keep = parse_head(
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 10"
    )
    assert (status, headers, keep) == (503, {"retry-after": "1", "content-length": "10"}, True)
    assert parse_head(b"HTTP/1.1 200 OK\r\nConnection: close")[2] is False
    assert parse_head(b"HTTP/1.0 200 OK")[2] is False


@pytest.mark.parametrize("head", [b"garbage", b"HTTP/1.1 abc OK", b"HTTP/1.1 200 OK\r\nnocolon"])
def test_parse_head_refuses_what_it_does_not_understand(head):
    with pytest.raises(BadResponse):
        parse_head(head)


def read(data: bytes, headers: dict[str, str]) -> tuple[bytes, bool]:
    async def go() -> tuple[bytes, bool]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await _read_body(reader, headers)

    return asyncio.run(go())


def test_read_body_by_content_length_leaves_the_rest_for_the_next_answer():
    assert read(b'{"a":1}HTTP/1.1 200', {"content-length": "7"}) == (b'{"a":1}', True)


def test_read_body_chunked_with_trailers():
    data = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n"
    assert read(data, {"transfer-encoding": "chunked"}) == (b"Wikipedia", True)


def test_read_body_until_close_makes_the_connection_unusable():
    assert read(b"plain text", {}) == (b"plain text", False)


def test_read_body_short_is_an_error():
    with pytest.raises(asyncio.IncompleteReadError):
        read(b"abc", {"content-length": "10"})
