"""The fetcher against a real local HTTP server: only allowlisted hosts, capped bodies, errors typed for retry."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator

import pytest

from tests.buskit import wait_until
from tests.preprocessorkit import Origin, running_origin
from tubelens.devtools.servers import LOOPBACK
from tubelens.errors import InvalidInput, NotFound, TooLarge, Unavailable
from tubelens.fetch import Fetcher

CAP = 64 * 1024


@pytest.fixture
def origin() -> Iterator[Origin]:
    with running_origin() as origin:
        yield origin


@pytest.fixture
def fetcher() -> Fetcher:
    return Fetcher([LOOPBACK], connect_timeout_s=1.0, read_timeout_s=0.5, max_redirects=2)


def fetch(fetcher: Fetcher, url: str, max_bytes: int = CAP, deadline_s: float = 5.0) -> bytes:
    data, _ = fetcher.fetch_bytes(url, max_bytes=max_bytes, deadline_s=deadline_s)
    return data


def test_a_body_from_an_allowlisted_host_is_fetched_whole(origin: Origin, fetcher: Fetcher) -> None:
    body = bytes(range(256)) * 200
    url = origin.serve("/vi/abc/mqdefault.jpg", body)

    data, fetched = fetcher.fetch_bytes(url, max_bytes=CAP, deadline_s=5)

    assert data == body
    assert (fetched.url, fetched.size) == (url, len(body))


def test_a_body_is_streamed_into_the_sink_it_is_given(origin: Origin, fetcher: Fetcher) -> None:
    body = b"x" * (3 * CAP)
    url = origin.serve("/media.mp4", body, send_length=False)
    sink = io.BytesIO()

    fetched = fetcher.fetch(url, sink, max_bytes=4 * CAP, deadline_s=5)

    assert sink.getvalue() == body and fetched.size == len(body)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://localhost:{port}/thumb.jpg", "host 'localhost' is not on the allowlist"),
        ("http://169.254.169.254/latest/meta-data/", "host '169.254.169.254' is not on the allowlist"),
        ("http://user:secret@127.0.0.1:{port}/thumb.jpg", "credentials in URLs are not allowed"),
        ("http://127.0.0.1:{port}@evil.example/thumb.jpg", "credentials in URLs are not allowed"),
        ("file:///etc/passwd", "only http and https are fetched"),
        ("ftp://127.0.0.1:{port}/thumb.jpg", "only http and https are fetched"),
        ("http://127.0.0.1:{port}\\@evil.example/thumb.jpg", "backslashes"),
        ("//127.0.0.1:{port}/thumb.jpg", "only http and https are fetched"),
    ],
)
def test_a_url_that_is_not_allowed_is_refused_before_any_connection(
    origin: Origin, fetcher: Fetcher, url: str, reason: str
) -> None:
    origin.serve("/thumb.jpg", b"image")
    with pytest.raises(InvalidInput) as caught:
        fetch(fetcher, url.format(port=origin.port))
    assert reason in caught.value.message
    assert origin.requests == [], "nothing was asked of the server"


def test_a_redirect_within_the_allowlist_is_followed(origin: Origin, fetcher: Fetcher) -> None:
    origin.serve("/final.jpg", b"image bytes")
    url = origin.redirect("/moved.jpg", "/final.jpg", status=301)

    data, fetched = fetcher.fetch_bytes(url, max_bytes=CAP, deadline_s=5)

    assert data == b"image bytes"
    assert fetched.url == origin.url("/final.jpg")
    assert origin.requests == ["/moved.jpg", "/final.jpg"]


def test_a_redirect_to_a_host_off_the_allowlist_is_refused_without_following_it(
    origin: Origin, fetcher: Fetcher
) -> None:
    origin.serve("/secret", b"internal data")
    url = origin.redirect("/thumb.jpg", origin.url("/secret", host="localhost"))

    with pytest.raises(InvalidInput) as caught:
        fetch(fetcher, url)

    assert "redirected to a refused URL" in caught.value.message
    assert "host 'localhost' is not on the allowlist" in caught.value.message
    assert origin.requests == ["/thumb.jpg"]


def test_a_chain_of_redirects_longer_than_the_limit_is_refused(origin: Origin, fetcher: Fetcher) -> None:
    for hop in range(5):
        origin.redirect(f"/hop{hop}", f"/hop{hop + 1}")
    with pytest.raises(InvalidInput, match="more than 2 redirects"):
        fetch(fetcher, origin.url("/hop0"))
    assert origin.requests == ["/hop0", "/hop1", "/hop2"]


def test_a_declared_length_over_the_cap_is_refused_before_the_body_is_read(origin: Origin, fetcher: Fetcher) -> None:
    url = origin.serve("/big.jpg", b"x" * (CAP + 1))
    with pytest.raises(TooLarge, match=f"Content-Length {CAP + 1} is over the {CAP}-byte cap"):
        fetch(fetcher, url)


def test_a_body_without_a_length_is_cut_off_once_it_passes_the_cap(origin: Origin, fetcher: Fetcher) -> None:
    total = 32 * 1024 * 1024
    url = origin.serve("/endless.jpg", b"x" * total, send_length=False)

    with pytest.raises(TooLarge, match=f"body is over the {CAP}-byte cap"):
        fetch(fetcher, url)

    wait_until(lambda: "/endless.jpg" in origin.bytes_sent, timeout=5, what="the origin's response finished")
    assert "/endless.jpg" in origin.disconnected, "the client hung up instead of reading on"
    assert origin.bytes_sent["/endless.jpg"] < total // 4


@pytest.mark.parametrize("status", [404, 410])
def test_a_missing_thumbnail_is_not_found_which_is_never_retried(origin: Origin, fetcher: Fetcher, status: int) -> None:
    url = origin.serve("/gone.jpg", b"not here", status=status)
    with pytest.raises(NotFound, match=f"HTTP {status}") as caught:
        fetch(fetcher, url)
    assert not caught.value.retryable


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_unavailable_and_retried(
    origin: Origin, fetcher: Fetcher, status: int
) -> None:
    url = origin.serve("/busy.jpg", b"slow down", status=status)
    with pytest.raises(Unavailable, match=f"HTTP {status}") as caught:
        fetch(fetcher, url)
    assert caught.value.retryable


@pytest.mark.parametrize("status", [400, 401, 403])
def test_other_client_errors_are_refused_for_good(origin: Origin, fetcher: Fetcher, status: int) -> None:
    url = origin.serve("/refused.jpg", b"no", status=status)
    with pytest.raises(InvalidInput, match=f"HTTP {status}, refused") as caught:
        fetch(fetcher, url)
    assert not caught.value.retryable


def test_a_refused_connection_is_unavailable(fetcher: Fetcher) -> None:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port = sock.getsockname()[1]
    with pytest.raises(Unavailable, match="no answer") as refused:
        fetch(fetcher, f"http://{LOOPBACK}:{port}/thumb.jpg")
    assert "NewConnectionError" not in refused.value.message and "refused" not in refused.value.message


def test_a_server_that_does_not_answer_in_time_is_unavailable(origin: Origin, fetcher: Fetcher) -> None:
    url = origin.serve("/stuck.jpg", b"late", delay_s=1.5)
    with pytest.raises(Unavailable, match="no answer") as late:
        fetch(fetcher, url)
    assert "Timeout" not in late.value.message, "a timeout reads like a refused connection: no port scanning"


def test_a_body_trickling_in_past_the_deadline_is_unavailable(origin: Origin, fetcher: Fetcher) -> None:
    # Each chunk arrives well within the read timeout; the whole transfer does not fit the deadline.
    url = origin.serve("/trickle.jpg", b"x" * 4000, chunk_bytes=100, chunk_delay_s=0.05)
    with pytest.raises(Unavailable, match="still downloading at the deadline"):
        fetch(fetcher, url, deadline_s=0.5)


def test_a_transfer_cut_short_of_its_declared_length_is_unavailable(origin: Origin, fetcher: Fetcher) -> None:
    origin.serve("/cut.jpg", b"x" * 1000, send_length=False, headers={"Content-Length": "5000"})
    with pytest.raises(Unavailable):
        fetch(fetcher, origin.url("/cut.jpg"))
