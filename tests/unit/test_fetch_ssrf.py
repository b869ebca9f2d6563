"""SSRF: every trick to make the fetcher (the preprocessor's thumbnails and media, the predictor's image URLs) reach
the cluster's own network is refused with InvalidInput naming the field, before a connection is opened; a host name
is resolved once and the connection goes to the address that was checked. A real local HTTP server stands behind
every URL; host names resolve through a stand-in for DNS (a table), the one part no test can own otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.preprocessorkit import Origin, running_origin
from tubelens.devtools.servers import LOOPBACK
from tubelens.errors import InvalidInput
from tubelens.fetch import Fetcher
from tubelens.predictor.inputs import ImageLimits, ImageResolver
from tubelens.v1 import predictor_pb2

CAP = 64 * 1024
# What the stand-in DNS answers: names an attacker could own (or an allowlisted name whose records were changed).
DNS = {
    "metadata.test": ["169.254.169.254"],
    "loopback.test": ["127.0.0.2"],
    "private10.test": ["10.0.0.5"],
    "private172.test": ["172.16.3.4"],
    "private192.test": ["192.168.1.1"],
    "shared.test": ["100.64.0.1"],
    "zero.test": ["0.0.0.0"],
    "v6loopback.test": ["::1"],
    "v6linklocal.test": ["fe80::1%eth0"],
    "v6unique.test": ["fd00::1"],
    "v6mapped.test": ["::ffff:127.0.0.1"],
    "mixed.test": ["93.184.216.34", "10.0.0.5"],  # one public address is not enough: every one must be
    "public.test": ["93.184.216.34"],
}
NAMES = tuple(DNS) + ("localhost",)


def table_resolver(host: str, port: int) -> list[str]:
    if host == "localhost":
        return ["127.0.0.1"]
    return DNS[host]


@pytest.fixture
def origin() -> Iterator[Origin]:
    with running_origin() as origin:
        yield origin


@pytest.fixture
def fetcher() -> Fetcher:
    """Everything allowlisted, the origin's loopback address listed by the operator itself (as the local stack does);
    what must still be refused is what the addresses and spellings behind the names are."""
    listed = [LOOPBACK, "169.254.169.254", "[::ffff:169.254.169.254]", "2130706433", "0x7f000001", "0177.0.0.1"]
    listed += ["127.1", "0x7f.0.0.1", *NAMES]
    return Fetcher(listed, connect_timeout_s=1.0, read_timeout_s=1.0, max_redirects=2, resolve=table_resolver)


NOT_PUBLIC = "is, or resolves to, an address that is not public"
DOTTED = "write an IP address as a dotted quad"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", NOT_PUBLIC),  # listed, but link-local is never fetched
        ("http://[::ffff:169.254.169.254]/latest/meta-data/", NOT_PUBLIC),
        ("http://metadata.test/latest/meta-data/", NOT_PUBLIC),
        ("http://localhost:{port}/thumb.jpg", NOT_PUBLIC),
        ("http://loopback.test:{port}/thumb.jpg", NOT_PUBLIC),
        ("http://private10.test/thumb.jpg", NOT_PUBLIC),
        ("http://private172.test/thumb.jpg", NOT_PUBLIC),
        ("http://private192.test/thumb.jpg", NOT_PUBLIC),
        ("http://shared.test/thumb.jpg", NOT_PUBLIC),
        ("http://zero.test:{port}/thumb.jpg", NOT_PUBLIC),
        ("http://v6loopback.test:{port}/thumb.jpg", NOT_PUBLIC),
        ("http://v6linklocal.test/thumb.jpg", NOT_PUBLIC),
        ("http://v6unique.test/thumb.jpg", NOT_PUBLIC),
        ("http://v6mapped.test:{port}/thumb.jpg", NOT_PUBLIC),
        ("http://mixed.test/thumb.jpg", NOT_PUBLIC),
        ("http://2130706433:{port}/thumb.jpg", DOTTED),  # decimal
        ("http://0x7f000001:{port}/thumb.jpg", DOTTED),  # hex
        ("http://0177.0.0.1:{port}/thumb.jpg", DOTTED),  # octal
        ("http://127.1:{port}/thumb.jpg", DOTTED),  # short form
        ("http://0x7f.0.0.1:{port}/thumb.jpg", DOTTED),  # mixed
        ("http://3232235777/thumb.jpg", DOTTED),  # 192.168.1.1 in decimal, not even listed
        ("http://user@127.0.0.1:{port}/thumb.jpg", "credentials in URLs are not allowed"),
        ("http://user:pw@public.test/thumb.jpg", "credentials in URLs are not allowed"),
        ("file:///etc/passwd", "only http and https are fetched"),
        ("gopher://127.0.0.1:{port}/_GET%20/", "only http and https are fetched"),
        ("dict://127.0.0.1:{port}/info", "only http and https are fetched"),
        ("http://unlisted.example/thumb.jpg", "is not on the allowlist"),
    ],
)
def test_every_ssrf_trick_is_refused_before_any_connection(
    origin: Origin, fetcher: Fetcher, url: str, reason: str
) -> None:
    origin.serve("/thumb.jpg", b"image")
    with pytest.raises(InvalidInput) as caught:
        fetcher.fetch_bytes(url.format(port=origin.port), max_bytes=CAP, deadline_s=5)
    assert reason in caught.value.message
    assert caught.value.field == "url"
    assert origin.requests == [], "nothing was asked of the server"
    # The addresses a name resolved to stay out of the message: they would map the cluster's DNS for the caller.
    for name, addresses in DNS.items():
        if f"//{name}" in url:
            assert not [address for address in addresses if address.split("%")[0] in caught.value.message]


@pytest.mark.parametrize(
    "location",
    [
        "http://metadata.test/latest/meta-data/",
        "http://169.254.169.254/latest/meta-data/",
        "http://private10.test/admin",
        "http://localhost:{port}/secret",
        "http://2130706433:{port}/secret",
        "file:///etc/passwd",
        "gopher://127.0.0.1:{port}/_x",
    ],
)
def test_a_redirect_to_any_refused_target_is_not_followed(origin: Origin, fetcher: Fetcher, location: str) -> None:
    origin.serve("/secret", b"internal data")
    url = origin.redirect("/thumb.jpg", location.format(port=origin.port))

    with pytest.raises(InvalidInput) as caught:
        fetcher.fetch_bytes(url, max_bytes=CAP, deadline_s=5)

    assert "redirected to a refused URL" in caught.value.message and caught.value.field == "url"
    assert origin.requests == ["/thumb.jpg"]


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected_to(origin: Origin) -> None:
    """DNS rebinding: the name first resolves to an address the operator trusts, then (too late) to another."""
    answers = [["127.0.0.1"], ["10.0.0.5"], ["10.0.0.5"]]
    asked: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[len(asked) - 1]

    # A deployment whose image mirror is inside the cluster trusts that one address behind a name.
    fetcher = Fetcher(
        ["thumbs.test"], connect_timeout_s=1.0, read_timeout_s=1.0, resolve=rebinding, trusted_addresses=[LOOPBACK]
    )
    url = origin.serve("/thumb.jpg", b"image bytes").replace(LOOPBACK, "thumbs.test")

    data, fetched = fetcher.fetch_bytes(url, max_bytes=CAP, deadline_s=5)

    assert data == b"image bytes" and fetched.url == url
    assert asked == ["thumbs.test"]  # resolved once, before connecting; never again by the HTTP library
    assert origin.hosts == [f"thumbs.test:{origin.port}"]  # the name still goes to the server as its Host


def test_a_public_name_is_pinned_to_the_address_it_resolved_to(fetcher: Fetcher) -> None:
    target = fetcher.target("https://public.test/vi/abc/mqdefault.jpg")
    assert (target.address, target.host, target.port, target.scheme) == ("93.184.216.34", "public.test", 443, "https")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/thumb.jpg",
        "http://2130706433/thumb.jpg",
        "http://user@public.test/thumb.jpg",
        "file:///etc/passwd",
        "gopher://public.test/_x",
    ],
)
def test_the_predictor_refuses_them_as_invalid_input_naming_the_request_field(fetcher: Fetcher, url: str) -> None:
    images = ImageResolver(
        ImageLimits(max_bytes=CAP, max_pixels=10_000_000, fetch_deadline_s=5.0),
        store=None,  # type: ignore[arg-type] - a URL source never reads the store
        catalogue=_no_catalogue,
        fetcher=fetcher,
    )
    with pytest.raises(InvalidInput) as caught:
        images.image(predictor_pb2.ImageInput(image_url=url), "candidates[1].image")
    assert caught.value.field == "candidates[1].image.image_url"
    assert caught.value.message.startswith("candidates[1].image.image_url: refused URL")
    assert "/tmp" not in caught.value.message and "Traceback" not in caught.value.message


def _no_catalogue():  # noqa: ANN202 - never called: a URL source does not read the catalogue
    raise AssertionError("a URL source read the catalogue")
