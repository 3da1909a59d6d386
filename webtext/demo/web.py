"""A small offline web for the demo, made from real text that ships with Python, and a server for it.

`make_sample_web()` turns the documentation in Python's standard library (`pydoc_data.topics`, the language
reference, and the docstrings of stdlib modules) into articles, wraps them in varied page templates with real
boilerplate (navigation, cookie notices, sidebars, comment sections), plants syndicated near-duplicates and exact
copies under other URLs, and adds failing and hostile URLs (404, 500, a slow drip, a redirect chain, a redirect
to the cloud metadata address, an image, a robots.txt disallow). `serve()` serves it from a threaded HTTP
server on 127.0.0.1, dispatching on the Host header, so many virtual hosts share one port.
`submissions()` writes the Reddit-style submissions that link to it, with scores around the 3-karma line.

Everything is derived from a seed: the same seed gives the same web and the same dump.
"""

from __future__ import annotations

import dataclasses
import html
import importlib
import inspect
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Stdlib modules whose docstrings become articles (imported only for their documentation).
DOC_MODULES = (
    "argparse", "asyncio", "base64", "bisect", "bz2", "calendar", "codecs", "collections", "colorsys",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fnmatch",
    "fractions", "functools", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "http.client",
    "io", "ipaddress", "itertools", "json", "locale", "logging", "lzma", "mailbox", "math", "mimetypes", "mmap",
    "operator", "os", "pathlib", "pickle", "pprint", "queue", "random", "re", "sched", "secrets", "selectors",
    "shelve", "shlex", "shutil", "signal", "socket", "sqlite3", "ssl", "statistics", "string", "struct",
    "subprocess", "tarfile", "tempfile", "textwrap", "threading", "time", "timeit", "typing", "unicodedata",
    "unittest", "urllib.parse", "uuid", "wave", "weakref", "xml.dom", "zipfile", "zlib",
)

HOSTS = ("docs.sample.test", "blog.sample.test", "news.sample.test", "mirror.sample.test",
         "forum.sample.test", "notes.sample.test")
HOSTILE_HOST = "trouble.sample.test"
SUBREDDITS = ("Python", "programming", "learnpython", "coding", "compsci", "technology")

BOILERPLATE = {
    "cookie": "We use cookies to improve your experience on our website. By continuing to browse, you agree to "
              "our use of cookies. Accept all cookies | Manage preferences",
    "newsletter": "Subscribe to our newsletter and never miss an update. Enter your email address below.",
    "share": "Share this article: Facebook | Twitter | LinkedIn | Email | Print",
    "copyright": "Copyright 2017 Sample Media Group. All rights reserved. Terms of use | Privacy policy | Contact",
    "related": "Related posts: Ten tips for better code | Why testing matters | A tour of the standard library",
}


@dataclasses.dataclass(frozen=True)
class Article:
    slug: str
    title: str
    paragraphs: tuple[str, ...]


@dataclasses.dataclass
class Page:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    delay_per_chunk: float = 0.0      # seconds between 1-byte chunks: a slow drip
    kind: str = "article"             # article, duplicate, near_duplicate, failing, hostile


@dataclasses.dataclass
class SampleWeb:
    pages: dict[tuple[str, str], Page]     # (host, path) -> page
    robots: dict[str, str]                 # host -> robots.txt
    links: list[tuple[str, str, str]]      # (host, path, kind) in a stable order

    def url(self, host: str, path: str, port: int) -> str:
        return f"http://{host}:{port}{path}"


def _articles() -> list[Article]:
    import pydoc_data.topics

    out = []
    for name, text in sorted(pydoc_data.topics.topics.items()):
        paras = _paragraphs(text)
        if sum(len(p.split()) for p in paras) >= 120:
            out.append(Article(f"reference/{name}", name.replace("-", " ").title(), tuple(paras)))
    for module_name in DOC_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        parts = [inspect.getdoc(module) or ""]
        for attr in sorted(getattr(module, "__all__", None) or dir(module)):
            obj = getattr(module, attr, None)
            if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            doc = inspect.getdoc(obj)
            if doc and len(doc.split()) >= 12:
                parts.append(f"{attr}: {doc}")
        paras = [p for part in parts for p in _paragraphs(part)]
        if sum(len(p.split()) for p in paras) >= 120:
            out.append(Article(f"library/{module_name.replace('.', '-')}", f"The {module_name} module",
                               tuple(paras[:40])))
    return out


def _paragraphs(text: str) -> list[str]:
    paras = []
    for block in text.split("\n\n"):
        line = " ".join(block.split())
        if len(line.split()) >= 6 and not line.startswith((">>>", "...")):
            paras.append(line)
    return paras


def _near_duplicate(article: Article, rng: random.Random) -> Article:
    """A syndicated copy: a few words changed, a sentence added, as a news mirror does."""
    paras = list(article.paragraphs)
    for _ in range(max(1, len(paras) // 8)):
        i = rng.randrange(len(paras))
        words = paras[i].split()
        j = rng.randrange(len(words))
        words[j] = rng.choice(("indeed", "however", "notably", "also", "today"))
        paras[i] = " ".join(words)
    paras.append("This article was originally published elsewhere and is reproduced with permission.")
    return Article(article.slug, article.title, tuple(paras))


def _render(article: Article, template: int, rng: random.Random) -> bytes:
    title = html.escape(article.title)
    body = "\n".join(f"<p>{html.escape(p)}</p>" for p in article.paragraphs)
    nav = "".join(f'<li><a href="/{s}">{s.title()}</a></li>' for s in ("home", "about", "archive", "contact"))
    comments = "".join(
        f'<div class="comment"><b>user{rng.randrange(1000)}</b>: {c}</div>'
        for c in ("Great post, thanks!", "I disagree with the second point.", "First!"))
    if template == 0:  # blog: sidebar, share bar, comments
        page = (f"<header><nav><ul>{nav}</ul></nav></header><main><article><h1>{title}</h1>{body}"
                f"<p>{BOILERPLATE['share']}</p></article><section id='comments'>{comments}</section></main>"
                f"<aside>{BOILERPLATE['related']}</aside><footer>{BOILERPLATE['copyright']}</footer>")
    elif template == 1:  # news: cookie banner, newsletter box
        page = (f"<div class='cookie-banner'>{BOILERPLATE['cookie']}</div><nav><ul>{nav}</ul></nav>"
                f"<div class='content'><h1 class='headline'>{title}</h1><div class='story'>{body}</div></div>"
                f"<div class='newsletter'>{BOILERPLATE['newsletter']}</div><footer>{BOILERPLATE['copyright']}</footer>")
    else:  # documentation: table-ish layout, breadcrumbs
        page = (f"<div id='breadcrumbs'>Home &raquo; Docs &raquo; {title}</div><table><tr><td class='menu'>"
                f"<ul>{nav}</ul></td><td class='body'><div class='section'><h1>{title}</h1>{body}</div></td></tr>"
                f"</table><div class='footer'>{BOILERPLATE['copyright']}</div>")
    doc = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title></head>"
           f"<body>{page}</body></html>")
    return doc.encode("utf-8")


def make_sample_web(seed: int = 0, max_articles: int | None = None) -> SampleWeb:
    rng = random.Random(seed)
    articles = _articles()
    rng.shuffle(articles)
    if max_articles:
        articles = articles[:max_articles]
    pages: dict[tuple[str, str], Page] = {}
    links: list[tuple[str, str, str]] = []

    def add(host: str, path: str, page: Page) -> None:
        pages[(host, path)] = page
        links.append((host, path, page.kind))

    originals = [h for h in HOSTS if h != "mirror.sample.test"]  # the mirror carries only copies
    for i, article in enumerate(articles):
        host = originals[i % len(originals)]
        add(host, f"/{article.slug}", Page(body=_render(article, i % 3, rng)))
        if i % 10 == 3:  # syndicated near-duplicate on the mirror
            add("mirror.sample.test", f"/syndicated/{article.slug}",
                Page(body=_render(_near_duplicate(article, rng), (i + 1) % 3, rng), kind="near_duplicate"))
        if i % 15 == 7:  # the same page under a second URL
            add(host, f"/amp/{article.slug}", Page(body=_render(article, i % 3, rng), kind="duplicate"))

    h = HOSTILE_HOST
    add(h, "/missing", Page(status=404, body=b"<html><body>Not found</body></html>", kind="failing"))
    add(h, "/broken", Page(status=500, body=b"<html><body>Internal error</body></html>", kind="failing"))
    add(h, "/photo.html", Page(body=b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, content_type="image/png",
                               kind="failing"))
    add(h, "/drip", Page(body=b"<html><body>" + b"slow " * 200 + b"</body></html>", delay_per_chunk=0.05,
                         kind="hostile"))
    add(h, "/hop1", Page(status=302, headers=(("Location", "/hop2"),), kind="failing"))
    pages[(h, "/hop2")] = Page(status=302, headers=(("Location", "/hop1"),))  # a redirect loop
    add(h, "/metadata", Page(status=302, headers=(("Location", "http://169.254.169.254/latest/meta-data/"),),
                             kind="hostile"))
    add("forum.sample.test", "/private/members", Page(body=_render(articles[0], 0, rng), kind="failing"))
    robots = {host: "User-agent: *\nAllow: /\n" for host in HOSTS}
    robots["forum.sample.test"] = "User-agent: *\nDisallow: /private/\n"
    robots[h] = "User-agent: *\nAllow: /\n"
    return SampleWeb(pages, robots, links)


class _Handler(BaseHTTPRequestHandler):
    web: SampleWeb
    server_version = "webtext-sample/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet: the demo prints its own progress
        pass

    def do_GET(self):
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        path = self.path.split("?")[0]
        if path == "/robots.txt" and host in self.web.robots:
            page = Page(body=self.web.robots[host].encode(), content_type="text/plain")
        else:
            page = self.web.pages.get((host, path)) or Page(status=404, body=b"<html>Not found</html>")
        self.send_response(page.status)
        self.send_header("Content-Type", page.content_type)
        self.send_header("Content-Length", str(len(page.body)))
        for k, v in page.headers:
            self.send_header(k, v)
        self.end_headers()
        if not page.delay_per_chunk:
            self.wfile.write(page.body)
            return
        for i in range(len(page.body)):
            self.wfile.write(page.body[i:i + 1])
            self.wfile.flush()
            time.sleep(page.delay_per_chunk)


class _Server(ThreadingHTTPServer):
    # The fetch stage opens dozens of connections at once; the default backlog of 5 drops SYNs, which the
    # client then sees as connect timeouts.
    request_queue_size = 256

    def handle_error(self, request, client_address):
        # A crawler that gives up on the slow or oversized endpoints hangs up mid-answer: that is the
        # behaviour being demonstrated, not a server fault worth a traceback in the demo's output.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class SampleServer:
    """The sample web on 127.0.0.1:PORT in a background thread; use as a context manager."""

    def __init__(self, web: SampleWeb, port: int = 0):
        handler = type("Handler", (_Handler,), {"web": web})
        self.httpd = _Server(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> SampleServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def submissions(web: SampleWeb, port: int, seed: int = 0) -> list[dict]:
    """Reddit-style submissions linking to the sample web: pushshift's field names, scores around the
    3-karma line, a few self posts and repeated submissions of the same URL."""
    rng = random.Random(seed + 1)
    base = 1_420_070_400  # 2015-01-01
    out = []
    for n, (host, path, _kind) in enumerate(web.links):
        for repeat in range(1 + (n % 9 == 0)):
            created = base + n * 3_600 + repeat * 86_400
            sid = f"{n:05x}{repeat}"
            sub = SUBREDDITS[rng.randrange(len(SUBREDDITS))]
            out.append({
                "id": sid, "url": web.url(host, path, port), "domain": host, "is_self": False,
                "score": rng.choice((0, 1, 2, 3, 3, 4, 5, 8, 13, 40, 120)), "over_18": False,
                "subreddit": sub, "created_utc": created, "num_comments": rng.randrange(50),
                "title": f"Interesting read: {path.rsplit('/', 1)[-1]}", "author": f"user{rng.randrange(500)}",
                "permalink": f"/r/{sub}/comments/{sid}/", "selftext": "",
            })
    for k in range(10):
        sub = SUBREDDITS[k % len(SUBREDDITS)]
        out.append({"id": f"self{k}", "url": f"https://www.reddit.com/r/{sub}/comments/self{k}/", "domain":
                    f"self.{sub}", "is_self": True, "score": 10, "over_18": False, "subreddit": sub,
                    "created_utc": base + k, "num_comments": 1, "title": "A question", "author": "asker",
                    "permalink": f"/r/{sub}/comments/self{k}/", "selftext": "How do I learn Python?"})
    out.sort(key=lambda s: (s["created_utc"], s["id"]))
    return out
