"""The one URL normaliser of webtext, and the URL rules of the links stage.

`normalize_url(url)` gives the dedup key of a link; `parse_url(url)` gives the key together with the host,
path and scheme the rules look at. Later stages (fetch, extract) import this module, so its API stays small:

    parse_url(url) -> ParsedUrl        raises UrlError for a URL that cannot be parsed
    normalize_url(url) -> str          the dedup key (parse_url(url).key)
    host_of(url) -> str                lowercase IDNA host, no port, no trailing dot
    scheme_of(url), path_of(url)       scheme and path as written: cheap, for rules that run before parsing
    is_wikipedia(host) -> bool         every Wikipedia domain, every language, mobile too
    host_in(host, domains) -> bool     host or one of its parent domains is in `domains`
    blocked_extension(path, blocklist) the file extension if `path` names a non-HTML file, else None
    read_domain_list(lines) -> frozenset

The key is the URL with: lowercase scheme and host, IDNA host, default port, fragment and tracking
parameters dropped, percent-encoding normalised, the remaining query pairs sorted (duplicate keys are kept,
ordered by value), and, for the key only, a leading `www.` and trailing slashes collapsed. The URL a later
stage fetches is never the key but one URL as it was submitted.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

import tldextract
from w3lib.url import canonicalize_url

SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}

# Query parameters that identify a click or a campaign, not a page. Names are matched case-insensitively;
# a name starting with one of TRACKING_PREFIXES is dropped too.
TRACKING_PARAMS = frozenset({
    "fbclid", "gclid", "gclsrc", "dclid", "msclkid", "yclid", "twclid", "ttclid", "igshid", "li_fat_id",
    "mc_cid", "mc_eid", "_ga", "_gl", "_hsenc", "_hsmi", "mkt_tok", "oly_anon_id", "oly_enc_id", "vero_id",
    "wickedid", "rb_clickid", "s_cid", "__twitter_impression",
})
TRACKING_PREFIXES = ("utm_",)

# Files that are not web pages (the paper kept HTML). Matched on the last path segment, without the query,
# case-insensitively. Script-generated pages (.php, .asp, .cgi, .jsp) are HTML and stay.
BLOCKED_EXTENSIONS = frozenset({
    # images
    "jpg", "jpeg", "jpe", "png", "gif", "gifv", "bmp", "tif", "tiff", "webp", "svg", "ico", "heic", "avif", "psd",
    # video
    "mp4", "m4v", "mov", "avi", "wmv", "flv", "mkv", "webm", "mpg", "mpeg", "3gp", "ogv", "swf",
    # audio
    "mp3", "wav", "ogg", "oga", "flac", "m4a", "aac", "wma", "opus", "mid", "midi",
    # archives and disk images
    "zip", "tar", "gz", "tgz", "bz2", "xz", "zst", "7z", "rar", "iso", "dmg",
    # office documents and PDF
    "pdf", "ps", "eps", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt", "ods", "odp", "rtf", "epub", "djvu",
    # code and binaries ("pl" is left out on purpose: /cgi-bin/*.pl scripts serve HTML pages)
    "exe", "msi", "apk", "jar", "deb", "rpm", "bin", "class", "py", "js", "css", "c", "h", "cpp", "java",
    "rb", "sh", "ipynb",
})

_WWW = "www."
_EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)  # bundled suffix list, never the network


class UrlError(ValueError):
    """A URL that cannot be parsed into scheme, host and path."""


class ParsedUrl(NamedTuple):
    scheme: str   # lowercase
    host: str     # lowercase, IDNA (punycode), no port, no trailing dot
    path: str     # canonical path, percent-encoded, without query
    key: str      # the dedup key


def _is_tracking(name: str) -> bool:
    name = name.lower()
    return name in TRACKING_PARAMS or name.startswith(TRACKING_PREFIXES)


def _clean_query(query: str) -> str:
    # canonicalize_url has already sorted the pairs; keep that order.
    if not query:
        return ""
    return "&".join(p for p in query.split("&") if p and not _is_tracking(p.split("=", 1)[0]))


def _port(parts) -> int | None:
    try:
        return parts.port
    except ValueError as e:  # a port out of range or not a number
        raise UrlError(f"bad port: {e}") from None


@functools.lru_cache(maxsize=1 << 16)
def parse_url(url: str) -> ParsedUrl:
    """Scheme, host, canonical path and dedup key of `url`; UrlError if it has no usable host."""
    if not isinstance(url, str):
        raise UrlError(f"not a string: {type(url).__name__}")
    url = url.strip()
    try:
        canonical = canonicalize_url(url)
        parts = urlsplit(canonical)
    except (ValueError, UnicodeError) as e:
        raise UrlError(str(e) or type(e).__name__) from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlError("no host")
    if any(c in host for c in " <>\"\\{}|^`%"):
        raise UrlError(f"bad host {host!r}")
    port = _port(parts)
    netloc = f"[{host}]" if ":" in host else host  # IPv6 literal
    if port is not None and DEFAULT_PORTS.get(scheme) != port:
        netloc = f"{netloc}:{port}"
    path = parts.path
    key_host = netloc[len(_WWW):] if netloc.startswith(_WWW) and "." in netloc[len(_WWW):] else netloc
    key = urlunsplit((scheme, key_host, path.rstrip("/"), _clean_query(parts.query), ""))
    return ParsedUrl(scheme, host, path, key)


def normalize_url(url: str) -> str:
    """The dedup key of `url` (see the module docstring); UrlError if it cannot be parsed."""
    return parse_url(url).key


def host_of(url: str) -> str:
    """Lowercase IDNA host of `url`, without port or trailing dot; UrlError if it has none."""
    return parse_url(url).host


def scheme_of(url: str) -> str:
    """Lowercase scheme, without parsing the rest: cheap enough to run before `parse_url`."""
    head, sep, _ = url.strip().partition(":")
    return head.lower() if sep else ""


def path_of(url: str) -> str:
    """The path of `url` as written, without query and fragment; cheap (string cuts, no validation), so
    rules on the path can run before `parse_url`."""
    rest = url.split("#", 1)[0].split("?", 1)[0].partition("://")[2]
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else ""


def is_wikipedia(host: str) -> bool:
    """True for every Wikipedia domain: any language (en., de.), mobile (en.m.), any suffix (wikipedia.de)."""
    return "wikipedia" in host and _EXTRACT(host).domain == "wikipedia"


def host_in(host: str, domains: frozenset[str]) -> bool:
    """True if `host` or one of its parent domains is in `domains` (lowercase, no `www.`)."""
    if not domains:
        return False
    labels = host.split(".")
    return any(".".join(labels[i:]) in domains for i in range(len(labels)))


def blocked_extension(path: str, blocklist: frozenset[str] = BLOCKED_EXTENSIONS) -> str | None:
    """The extension of the path's last segment if it is in `blocklist`, else None (case-insensitive)."""
    segment = path.rsplit("/", 1)[-1].split(";", 1)[0]
    if "." not in segment:
        return None
    ext = segment.rsplit(".", 1)[1].lower()
    return ext if ext in blocklist else None


_COMMENT = re.compile(r"#.*")


def read_domain_list(lines: Iterable[str]) -> frozenset[str]:
    """Domains, one per line (`#` comments, blank lines, a leading `www.` or `*.` and a URL form allowed)."""
    out = set()
    for line in lines:
        line = _COMMENT.sub("", line).strip().lower()
        if not line:
            continue
        if "/" in line:
            line = urlsplit(line if "://" in line else "http://" + line).hostname or ""
        for prefix in ("*.", _WWW):
            if line.startswith(prefix):
                line = line[len(prefix):]
        line = line.strip(".")
        if line:
            out.add(line.encode("idna").decode("ascii") if not line.isascii() else line)
    return frozenset(out)
