"""The fetch stage's HTTP client against a real loopback server: every misbehaviour -> the right error class."""

from __future__ import annotations

import gzip
import time

import pytest
from support_webserver import LoopbackWeb, loopback_only

from webtext.fetch.http import (
    AddressPolicy,
    ClientConfig,
    FetchError,
    HttpClient,
    accept_type,
    decide_charset,
    parse_resolve_overrides,
    parse_retry_after,
)

TOTAL = 1.5


@pytest.fixture(scope="module")
def web(request):
    from conftest import shared_path

    shared_path("web", "trafilatura-eval")
    with LoopbackWeb(https=True) as w:
        yield w


@pytest.fixture
def client(monkeypatch):
    refused = loopback_only(monkeypatch)
    c = HttpClient(ClientConfig(allow_networks=("127.0.0.1/32",), resolve=(("*.test", "127.0.0.1"),),
                                connect_timeout=1.0, read_timeout=0.7, total_timeout=TOTAL, max_bytes=1 << 20))
    yield c
    c.close()
    assert refused == []


def get(client, url):
    return client.request(url, time.monotonic() + TOTAL)


def error_of(client, url) -> FetchError:
    with pytest.raises(FetchError) as info:
        get(client, url)
    return info.value


def test_real_pages_every_encoding(web, client):
    # host0..3 serve gzip, br, identity and deflate; the stored body is always the decoded page
    for n in range(4):
        hop = get(client, web.url(f"host{n}.test", web.page_path(n)))
        assert hop.status == 200 and hop.body == web.page_bytes(n)
        assert hop.content_type == "text/html" and hop.ip == "127.0.0.1"
        assert hop.charset and hop.charset_source in ("meta", "detector", "bom")
        assert dict((k.lower(), v) for k, v in hop.request_headers)["user-agent"].startswith("webtext/")


@pytest.mark.parametrize("path, error, transient", [
    ("/x/status/500", "http_5xx", True),
    ("/x/status/501", "http_5xx", False),
    ("/x/status/503", "http_5xx", True),
    ("/x/status/404", "http_4xx", False),
    ("/x/status/429", "http_4xx", True),
    ("/x/status/408", "http_4xx", True),
    ("/x/huge", "too_large", False),             # streamed, no Content-Length: cut at max_bytes
    ("/x/huge-cl", "too_large", False),          # refused on the Content-Length alone
    ("/x/gzip-bomb", "too_large", False),
    ("/x/br-bomb", "too_large", False),
    ("/x/bad-gzip", "decode", False),
    ("/x/pdf", "content_type", False),
    ("/x/png-as-html", "content_type", False),
    ("/x/octet-binary", "content_type", False),
    ("/x/text-plain", "content_type", False),
    ("/x/cl-short", "reset", True),
    ("/x/reset", "reset", True),
])
def test_misbehaving_endpoints(web, client, path, error, transient):
    t0 = time.monotonic()
    e = error_of(client, web.url("odd.test", path))
    assert (e.error, e.transient) == (error, transient), e.detail
    assert time.monotonic() - t0 < 1.0  # none of these needs the deadline


def test_content_type_refused_before_the_body(web, client):
    # /x/pdf promises 50 MiB and then stalls: refusing it must not wait for (or read) the body
    t0 = time.monotonic()
    assert error_of(client, web.url("odd.test", "/x/pdf")).error == "content_type"
    assert time.monotonic() - t0 < 0.3


def test_bombs_cost_little_memory_and_time(web, client):
    web.bomb("gzip"), web.bomb("br")  # built once, outside the timing
    for path in ("/x/gzip-bomb", "/x/br-bomb"):
        t0 = time.monotonic()
        assert error_of(client, web.url("odd.test", path)).error == "too_large"
        assert time.monotonic() - t0 < 0.5


def test_slow_drip_is_cut_at_the_total_deadline(web, client):
    # a byte every 0.1 s never trips the 0.7 s idle timeout; only the total deadline stops it
    for path in ("/x/drip?every=0.1&n=1000", "/x/drip-headers?every=0.1"):
        t0 = time.monotonic()
        e = error_of(client, web.url("odd.test", path))
        took = time.monotonic() - t0
        assert (e.error, e.transient) == ("timeout", True)
        assert TOTAL - 0.05 <= took < TOTAL + 0.5


def test_hang_is_an_idle_timeout(web, client):
    t0 = time.monotonic()
    e = error_of(client, web.url("odd.test", "/x/hang?s=5"))
    assert e.error == "timeout" and "no data" in e.detail
    assert 0.6 < time.monotonic() - t0 < TOTAL


def test_lying_content_length_cannot_make_us_read_more(web, client):
    hop = get(client, web.url("odd.test", "/x/cl-long"))
    assert len(hop.body) == 2000


def test_sniffing_and_charsets(web, client):
    hop = get(client, web.url("odd.test", "/x/no-type"))
    assert hop.content_type == "text/html"
    hop = get(client, web.url("odd.test", "/x/octet-html"))
    assert hop.content_type == "text/html"
    hop = get(client, web.url("odd.test", "/x/wrong-charset"))  # header says utf-8, body and <meta> cp1251
    assert (hop.charset, hop.charset_source) == ("cp1251", "meta")
    hop = get(client, web.url("odd.test", "/x/wrong-charset-no-meta"))
    assert (hop.charset, hop.charset_source) == ("cp1251", "detector")
    assert "Съешь" in hop.body.decode(hop.charset)
    hop = get(client, web.url("odd.test", "/x/bom"))
    assert (hop.charset, hop.charset_source) == ("utf-8", "bom")
    hop = get(client, web.url("odd.test", "/x/unknown-charset"))
    assert hop.charset_source == "detector" and hop.body.decode(hop.charset).count("café") == 10


def test_text_plain_when_allowed(web):
    c = HttpClient(ClientConfig(allow_networks=("127.0.0.1/32",), resolve=(("*.test", "127.0.0.1"),),
                                allow_text_plain=True, total_timeout=TOTAL))
    assert get(c, web.url("odd.test", "/x/text-plain")).content_type == "text/plain"


def test_redirect_is_returned_not_followed(web, client):
    hop = get(client, web.url("odd.test", "/x/chain/3"))
    assert hop.status == 301 and hop.location == "/x/chain/2" and hop.body == b""


def test_proxy_settings_from_the_environment_are_ignored(web, client, monkeypatch):
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://10.9.9.9:3128")  # the socket guard fails the test if it is used
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert get(client, web.url("odd.test", "/x/ok")).status == 200


def test_untrusted_certificate_is_tls_error(web, client):
    e = error_of(client, web.url("secure.test", "/x/ok", tls=True))
    assert e.error == "tls" and not e.transient


def test_connection_refused(web, client):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    e = error_of(client, f"http://odd.test:{port}/")
    assert (e.error, e.transient) == ("connect", True)


def test_bad_urls(client):
    for url in ("ftp://example.test/", "http:///nohost", "http://[::1/", "javascript:alert(1)"):
        assert error_of(client, url).error == "bad_url", url


def test_retry_after_is_read(web, client):
    e = error_of(client, web.url("odd.test", "/x/status/503?retry_after=7"))
    assert e.retry_after == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 30) == pytest.approx(30.0)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# ---------------------------------------------------------------------------------------------------------
# pure functions

@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
    "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "2002:7f00:1::1", "::127.0.0.1",
    "2001:db8::1", "fe80::1%eth0", "not-an-ip",
])
def test_policy_blocks_everything_but_public_unicast(address):
    assert AddressPolicy().blocked(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:93.184.216.34",
                                     "2002:5db8:d822::1"])
def test_policy_allows_public_addresses(address):
    assert AddressPolicy().blocked(address) is None


def test_policy_opens_only_the_named_range():
    p = AddressPolicy.from_cidrs(["127.0.0.1/32"])
    assert p.blocked("127.0.0.1") is None
    assert p.blocked("127.0.0.2") and p.blocked("::1") and p.blocked("10.0.0.1") and p.blocked("0.0.0.0")
    assert p.blocked("::ffff:127.0.0.2")
    assert AddressPolicy.from_cidrs(["10.0.0.0/8"]).blocked("10.1.2.3") is None


def test_resolve_overrides():
    assert parse_resolve_overrides(["*.test=127.0.0.1"]) == (("*.test", "127.0.0.1"),)
    with pytest.raises(ValueError):
        parse_resolve_overrides(["nohost"])
    with pytest.raises(ValueError):
        parse_resolve_overrides(["a.test=not-an-ip"])


def test_accept_type():
    assert accept_type("text/html; charset=utf-8", b"<html>", False) == ("text/html", None)
    assert accept_type("application/xhtml+xml", b"<?xml version='1.0'?><html>", False)[0] == "application/xhtml+xml"
    assert accept_type("image/png", b"", False)[0] is None
    assert accept_type(None, b"  <!DOCTYPE html><html>", False) == ("text/html", None)
    assert accept_type(None, b"hello world", False)[0] is None
    assert accept_type("text/html", gzip.compress(b"<html>"), False)[0] is None
    assert accept_type("text/html", "<html>é".encode("utf-16"), False)[0] == "text/html"


def test_decide_charset_order():
    body = "<html><head><meta charset='iso-8859-2'></head><body>zażółć</body></html>"
    assert decide_charset("text/html; charset=utf-8", b"\xef\xbb\xbf" + body.encode()) == ("utf-8", "bom")
    assert decide_charset("text/html; charset=iso-8859-2", body.encode("iso-8859-2")) == ("iso8859-2", "header")
    assert decide_charset("text/html", body.encode("iso-8859-2")) == ("iso8859-2", "meta")
    # a header the body plainly contradicts is passed over
    assert decide_charset("text/html; charset=utf-8", body.encode("iso-8859-2"))[1] == "meta"
    assert decide_charset("text/html", b"<html>plain</html>") == ("ascii", "detector")
    assert decide_charset("text/html", "<p>Grüße aus Köln</p>".encode(), detect=lambda b: None) == ("utf-8", "default")


def test_ip_literals_skip_dns_and_are_checked(web, client):
    e = error_of(client, f"http://127.0.0.2:{web.port}/x/ok")
    assert e.error == "blocked_address"  # loopback, but not the allowed 127.0.0.1/32


# ---------------------------------------------------------------------------------------------------------
# properties

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.ip_addresses(v=4))
def test_mapped_and_embedded_forms_judged_like_the_ipv4_address(v4):
    p = AddressPolicy()
    blocked = bool(p.blocked(str(v4)))
    assert bool(p.blocked(f"::ffff:{v4}")) == blocked
    assert bool(p.blocked(f"64:ff9b::{v4}")) or not blocked  # NAT64 of a blocked address is blocked
    sixtofour = "2002:{:02x}{:02x}:{:02x}{:02x}::1".format(*v4.packed)
    assert bool(p.blocked(sixtofour)) or not blocked


@given(st.ip_addresses(v=4, network="10.0.0.0/8") | st.ip_addresses(v=4, network="169.254.0.0/16")
       | st.ip_addresses(v=4, network="127.0.0.0/8") | st.ip_addresses(v=4, network="100.64.0.0/10")
       | st.ip_addresses(v=4, network="192.168.0.0/16") | st.ip_addresses(v=6, network="fc00::/7")
       | st.ip_addresses(v=6, network="fe80::/10"))
def test_private_ranges_always_blocked(ip):
    assert AddressPolicy().blocked(str(ip))


_bodies = st.binary(max_size=20_000) | st.tuples(st.binary(min_size=1, max_size=40), st.integers(1, 20_000)).map(
    lambda t: t[0] * t[1])  # highly compressible: long matches, bomb-like ratios


@settings(max_examples=40, deadline=None)
@given(_bodies, st.sampled_from(["gzip", "deflate", "br", "identity"]), st.integers(1, 200_000))
def test_capped_decoder_gives_the_body_or_stops_at_the_cap(body, encoding, cap):
    import zlib as _zlib

    import brotli as _brotli

    from webtext.fetch.http import _Decoder

    wire = {"gzip": lambda b: gzip.compress(b), "deflate": _zlib.compress, "br": _brotli.compress,
            "identity": lambda b: b}[encoding](body)
    d, out, over = _Decoder(encoding), b"", False
    for i in range(0, len(wire), 997):
        out += d.feed(wire[i:i + 997], cap - len(out))
        while d.has_more() and len(out) <= cap:
            out += d.drain(cap - len(out))
        if len(out) > cap:
            over = True
            break
    if not over:
        while d.has_more() and len(out) <= cap:
            out += d.drain(cap - len(out))
        over = len(out) > cap
    assert over == (len(body) > cap)
    # memory stays bounded: at most one input chunk (identity) or one brotli buffer step past the cap
    slack = {"identity": 997, "br": 2 * 65536, "gzip": 1, "deflate": 1}[encoding]
    assert len(out) <= cap + slack
    if not over:
        assert out == body
