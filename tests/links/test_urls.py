"""The one URL normaliser and the URL rules of the links stage: table tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webtext.links import urls

# (submitted URL, dedup key)
KEYS = [
    # scheme and host case
    ("HTTP://Example.COM/Path", "http://example.com/Path"),
    ("https://EXAMPLE.com/a", "https://example.com/a"),
    # the scheme stays part of the key
    ("http://example.com/a", "http://example.com/a"),
    # www. collapsed, but not other subdomains, and not when nothing but a suffix would remain
    ("http://www.example.com/a", "http://example.com/a"),
    ("http://WWW.Example.com/a", "http://example.com/a"),
    ("http://www2.example.com/a", "http://www2.example.com/a"),
    ("http://www.com/", "http://www.com"),
    # trailing slash collapsed
    ("http://example.com/a/", "http://example.com/a"),
    ("http://example.com/", "http://example.com"),
    ("http://example.com", "http://example.com"),
    ("http://example.com/a//", "http://example.com/a"),
    # fragment dropped
    ("http://example.com/a#section-2", "http://example.com/a"),
    ("http://example.com/a?x=1#frag", "http://example.com/a?x=1"),
    # default ports dropped, other ports kept
    ("http://example.com:80/a", "http://example.com/a"),
    ("https://example.com:443/a", "https://example.com/a"),
    ("http://example.com:8080/a", "http://example.com:8080/a"),
    ("https://example.com:80/a", "https://example.com:80/a"),
    # tracking parameters stripped, any case
    ("http://example.com/a?utm_source=reddit&utm_medium=social", "http://example.com/a"),
    ("http://example.com/a?id=7&fbclid=IwAR0", "http://example.com/a?id=7"),
    ("http://example.com/a?gclid=1&UTM_Campaign=x&page=2", "http://example.com/a?page=2"),
    ("http://example.com/a?ref=home", "http://example.com/a?ref=home"),  # not a tracking parameter
    # the remaining query sorted; duplicate keys kept, ordered by value
    ("http://example.com/a?b=2&a=1", "http://example.com/a?a=1&b=2"),
    ("http://example.com/a?a=2&b=1&a=1", "http://example.com/a?a=1&a=2&b=1"),
    ("http://example.com/a?a=1&a=1", "http://example.com/a?a=1&a=1"),
    ("http://example.com/?", "http://example.com"),
    # percent-encoding normalised: unreserved characters decoded, hex upper case, spaces and non-ASCII encoded
    ("http://example.com/%7euser", "http://example.com/~user"),
    ("http://example.com/a%2fb", "http://example.com/a%2Fb"),
    ("http://example.com/a b", "http://example.com/a%20b"),
    ("http://example.com/caf%C3%A9", "http://example.com/caf%C3%A9"),
    ("http://example.com/café", "http://example.com/caf%C3%A9"),
    ("http://example.com/?q=%41", "http://example.com?q=A"),
    # IDN hosts to punycode
    ("http://Bücher.de/", "http://xn--bcher-kva.de"),
    ("http://xn--bcher-kva.de/", "http://xn--bcher-kva.de"),
    ("http://www.bücher.de/a", "http://xn--bcher-kva.de/a"),
    # credentials and a trailing dot of the host are not part of the page's identity
    ("http://user:secret@example.com/a", "http://example.com/a"),
    ("http://example.com./a", "http://example.com/a"),
    # surrounding whitespace from the dump
    ("  http://example.com/a\n", "http://example.com/a"),
    # IPv6 literal
    ("http://[::1]:80/x", "http://[::1]/x"),
]


@pytest.mark.parametrize("url,key", KEYS)
def test_normalize_url(url, key):
    assert urls.normalize_url(url) == key


def test_variants_of_one_page_share_a_key():
    variants = ["https://www.example.com/story/", "https://example.com/story", "HTTPS://EXAMPLE.COM:443/story#c",
                "https://example.com/story?utm_source=x", "https://www.example.com/story/?fbclid=1"]
    assert len({urls.normalize_url(v) for v in variants}) == 1


def test_different_pages_have_different_keys():
    pages = ["https://example.com/a", "https://example.com/b", "https://example.com/a?page=2",
             "http://example.com/a", "https://example.org/a", "https://example.com/A"]
    assert len({urls.normalize_url(v) for v in pages}) == len(pages)


@pytest.mark.parametrize("url", ["http://[::1", "http:///path", "http://", "http://a.com:99999/",
                                 "http://exa mple.com/", "not a url", "http://a.com:port/"])
def test_unparsable_urls_raise(url):
    with pytest.raises(urls.UrlError):
        urls.parse_url(url)


def test_parse_url_parts():
    p = urls.parse_url("HTTPS://WWW.Example.COM:443/A/b.HTML?utm_source=x&z=1#top")
    assert p.scheme == "https"
    assert p.host == "www.example.com"
    assert p.path == "/A/b.HTML"
    assert p.key == "https://example.com/A/b.HTML?z=1"


@pytest.mark.parametrize("url,host", [
    ("http://WWW.Example.com:8080/x", "www.example.com"),
    ("https://Bücher.de", "xn--bcher-kva.de"),
    ("http://example.com./", "example.com"),
])
def test_host_of(url, host):
    assert urls.host_of(url) == host


@pytest.mark.parametrize("url,scheme", [("HTTP://a.com", "http"), (" https://a.com", "https"),
                                        ("ftp://a.com/x", "ftp"), ("mailto:a@b.c", "mailto"),
                                        ("www.example.com/no-scheme", "")])
def test_scheme_of(url, scheme):
    assert urls.scheme_of(url) == scheme


@pytest.mark.parametrize("url,path", [
    ("http://a.com/x/y.jpg?size=large#top", "/x/y.jpg"),
    ("http://a.com?next=/img.png", ""),
    ("http://a.com#/a.png", ""),
    ("http://a.com", ""),
    ("https://a.com/", "/"),
])
def test_path_of(url, path):
    assert urls.path_of(url) == path


@pytest.mark.parametrize("host,wiki", [
    ("en.wikipedia.org", True), ("en.m.wikipedia.org", True), ("de.wikipedia.org", True),
    ("wikipedia.org", True), ("www.wikipedia.org", True), ("wikipedia.de", True), ("simple.m.wikipedia.org", True),
    ("en.wiktionary.org", False), ("wikimedia.org", False), ("notwikipedia.org", False),
    ("wikipedia.example.com", False), ("github.com", False),
])
def test_is_wikipedia(host, wiki):
    assert urls.is_wikipedia(host) is wiki


def test_host_in_matches_domain_and_subdomains_only():
    domains = frozenset({"example.com", "bad.org"})
    assert urls.host_in("example.com", domains)
    assert urls.host_in("www.example.com", domains)
    assert urls.host_in("a.b.bad.org", domains)
    assert not urls.host_in("notexample.com", domains)
    assert not urls.host_in("example.com.evil.net", domains)
    assert not urls.host_in("example.com", frozenset())


@pytest.mark.parametrize("path,ext", [
    ("/a/photo.JPG", "jpg"), ("/clip.mp4", "mp4"), ("/song.mp3", "mp3"), ("/src.tar.gz", "gz"),
    ("/paper.pdf", "pdf"), ("/deck.PPTX", "pptx"), ("/setup.exe", "exe"), ("/script.py", "py"),
    ("/a.gifv", "gifv"), ("/x.jpg;jsessionid=1", "jpg"),
    ("/index.html", None), ("/page.php", None), ("/news/story", None), ("/dir.pdf/", None),
    ("/v1.2/readme", None), ("", None), ("/", None),
])
def test_blocked_extension(path, ext):
    assert urls.blocked_extension(path) == ext


def test_default_blocklist_keeps_what_webtext_kept():
    for url in ("https://github.com/openai/gpt-2", "https://www.google.com/search?q=x",
                "https://www.ebay.com/itm/123", "https://www.nytimes.com/2017/10/01/a.html"):
        assert urls.blocked_extension(urls.path_of(url)) is None


def test_read_domain_list():
    lines = ["# a comment", "", "Example.COM", "www.news.org  # trailing comment", "*.cdn.net",
             "https://www.shop.io/some/path", "bücher.de", "  spaced.com  "]
    assert urls.read_domain_list(lines) == frozenset(
        {"example.com", "news.org", "cdn.net", "shop.io", "xn--bcher-kva.de", "spaced.com"})


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60))
def test_any_text_parses_or_raises_url_error(text):
    for candidate in (text, "http://" + text, "https://example.com/" + text):
        try:
            parsed = urls.parse_url(candidate)
        except urls.UrlError:
            continue
        assert parsed.host and parsed.key.startswith(parsed.scheme + "://")


_label = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(scheme=st.sampled_from(["http", "HTTPS", "Http"]), www=st.booleans(),
       labels=st.lists(_label, min_size=1, max_size=3),
       tld=st.sampled_from(["com", "org", "de", "co.uk"]), port=st.sampled_from(["", ":80", ":443", ":8080"]),
       path=st.lists(st.text(max_size=8), max_size=3),
       query=st.lists(st.tuples(st.text(max_size=5), st.text(max_size=5)), max_size=3),
       slash=st.booleans(), fragment=st.text(max_size=5))
def test_normalize_url_is_idempotent(scheme, www, labels, tld, port, path, query, slash, fragment):
    from urllib.parse import quote, urlencode

    url = (f"{scheme}://{'www.' if www else ''}{'.'.join(labels)}.{tld}{port}/"
           + "/".join(quote(p, safe="") for p in path) + ("/" if slash else "")
           + ("?" + urlencode(query) if query else "") + ("#" + quote(fragment) if fragment else ""))
    key = urls.normalize_url(url)
    assert urls.normalize_url(key) == key
    assert "#" not in key and not key.endswith("/")


def test_perl_cgi_pages_are_not_mistaken_for_code_files():
    assert not urls.blocked_extension("http://example.com/cgi-bin/search.pl?q=reddit", urls.BLOCKED_EXTENSIONS)
    assert urls.blocked_extension("http://example.com/src/main.py", urls.BLOCKED_EXTENSIONS)
