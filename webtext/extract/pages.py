"""Pages on their way to extraction, as plain functions: which fetched responses to read, whether a body is an
HTML page, how it is cut and decoded, and the document row a page becomes. Counters are injected as
`count(name, n=1)`."""

from __future__ import annotations

import hashlib

from webtext.extract.sandbox import MAX_HTML_CHARS
from webtext.runtime.stats import Count

MAX_HTML_BYTES = MAX_HTML_CHARS  # body bytes read per page; the rest is cut before decoding (counted)
SNIFF_BYTES = 1024               # body prefix checked for binary signatures
OK_STATUSES = range(200, 300)


def doc_id(key: str) -> str:
    """The document id: first 16 bytes of sha256 of the normalised URL key, in hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def keep_fetched(row: dict, count: Count) -> bool:
    """Log rows that point at a stored successful response."""
    if not row.get("warc_file"):
        count("skipped_not_fetched")
        return False
    if row.get("status") not in OK_STATUSES:
        count("skipped_status")
        return False
    return True


def cap_body(body: bytes, max_bytes: int, count: Count) -> bytes:
    if len(body) > max_bytes:
        count("html_truncated")
        return body[:max_bytes]
    return body


def decode_body(body: bytes, charset: str | None, content_type: str | None) -> str:
    """The page as text: with the charset the fetch stage recorded, else (or if Python does not know it)
    with the charset decided here exactly as the fetch stage decides it."""
    from webtext.fetch.http import decide_charset

    if charset:
        try:
            return body.decode(charset, errors="replace")
        except LookupError:
            pass
    return body.decode(decide_charset(content_type, body)[0], errors="replace")


def html_problem(body: bytes, content_type: str | None) -> str | None:
    """Why this body is not an HTML page to extract ("not_html", "binary", "blank_page"), or None."""
    from webtext.fetch.http import HTML_TYPES, binary_signature, looks_like_html, media_type

    mt = media_type(content_type)
    if mt and mt not in HTML_TYPES and not (mt in ("text/plain", "application/octet-stream")
                                            and looks_like_html(body[:SNIFF_BYTES])):
        return "not_html"
    if binary_signature(body[:SNIFF_BYTES]):
        return "binary"
    if not body.strip():
        return "blank_page"
    return None


def page(url: str, key: str, host: str, html: str, payload_digest: str, source: str, offset: int | None,
         link: dict | None = None) -> dict:
    """One page on its way to extraction: the document's identity and link metadata, and its HTML."""
    link = link or {}
    return {"url": url, "key": key, "host": host, "html": html, "payload_digest": payload_digest,
            "source": source, "offset": offset, "score": link.get("score"),
            "num_submissions": link.get("num_submissions"), "subreddits": list(link.get("subreddits") or []),
            "first_created_utc": link.get("first_created_utc")}


def document_row(pg: dict, text: str, chars: int, words: int, language: str | None, title: str | None,
                 date: str | None) -> dict:
    return {"doc_id": doc_id(pg["key"]), "url": pg["url"], "key": pg["key"], "host": pg["host"],
            "title": title, "date": date, "text": text, "language": language, "chars": chars, "words": words,
            "score": pg["score"], "num_submissions": pg["num_submissions"], "subreddits": pg["subreddits"],
            "first_created_utc": pg["first_created_utc"], "payload_digest": pg["payload_digest"]}
