"""Generated Reddit submission dumps that look like the real ones, for the demo, tests and benchmarks.

Each line is a pushshift-style submission with the real ~60-field layout. The mix follows the real dumps:
about a third self posts, image and video hosts, a few percent NSFW, scores mostly 0-2 with about
`SHARE_AT_3_KARMA` at 3 or more, the same story submitted again (with `www.`, tracking parameters or a trailing
slash) and popular links reposted across months, Wikipedia, GitHub, Google and eBay among the domains, some
non-ASCII titles, and one malformed line every `malformed_every` lines (bad JSON, missing url, a score of
the wrong type, a JSON array, invalid UTF-8, a blank line). Same arguments, same bytes.
"""

from __future__ import annotations

import calendar
import datetime as dt
import os
import random
from collections.abc import Iterator

import orjson
import zstandard

SHARE_AT_3_KARMA = 0.08     # the real dumps' share of submissions at score >= 3
SHARE_SELF = 0.33
SHARE_NSFW = 0.04
SHARE_REPOST = 0.10         # same story again within the month, often with a URL variant
SHARE_VIRAL = 0.03          # one of a fixed set of links reposted in every month
MALFORMED_EVERY = 2000
ZSTD_LEVEL = 3
ZSTD_WINDOW_LOG = 31        # as the published dumps (`zstd --long=31`)

_WORDS = ("the new study finds that city council votes on plan to ban why you should never trust a "
          "startup raises million for open source tool scientists discover ancient water under mars "
          "how I built my own house from scratch local man wins lottery twice in one week").split()
_UNICODE = ("Café", "naïve", "Zürich", "東京", "Москва", "😀", "São Paulo", "Ελλάδα")
_SUBREDDITS = ("news", "worldnews", "technology", "programming", "science", "pics", "funny", "gaming",
               "politics", "AskReddit", "videos", "todayilearned", "movies", "Music", "gonewild", "nsfw")
_NEWS = ("www.cnn.com", "www.bbc.co.uk", "www.nytimes.com", "www.theguardian.com", "arstechnica.com",
         "www.reuters.com", "techcrunch.com", "medium.com", "www.washingtonpost.com", "blog.example.org",
         "www.npr.org", "www.wired.com", "xn--bcher-kva.de", "www.lemonde.fr")
_TRACKING = ("utm_source=reddit", "utm_medium=social&utm_campaign=share", "fbclid=IwAR0abc", "gclid=xyz1")

_TEMPLATE = {
    "archived": False, "author": "", "author_flair_background_color": None, "author_flair_css_class": None,
    "author_flair_richtext": [], "author_flair_text": None, "author_flair_text_color": None,
    "author_flair_type": "text", "brand_safe": True, "can_gild": True, "contest_mode": False,
    "created_utc": 0, "distinguished": None, "domain": "", "edited": False, "gilded": 0, "hidden": False,
    "hide_score": False, "id": "", "is_crosspostable": True, "is_reddit_media_domain": False, "is_self": False,
    "is_video": False, "link_flair_css_class": None, "link_flair_richtext": [], "link_flair_text": None,
    "link_flair_text_color": "dark", "link_flair_type": "text", "locked": False, "media": None,
    "media_embed": {}, "no_follow": True, "num_comments": 0, "num_crossposts": 0, "over_18": False,
    "parent_whitelist_status": "all_ads", "permalink": "", "pinned": False, "pwls": 6, "retrieved_on": 0,
    "rte_mode": "markdown", "score": 0, "secure_media": None, "secure_media_embed": {}, "selftext": "",
    "send_replies": True, "spoiler": False, "stickied": False, "subreddit": "", "subreddit_id": "",
    "subreddit_name_prefixed": "", "subreddit_subscribers": 0, "subreddit_type": "public",
    "suggested_sort": None, "thumbnail": "default", "thumbnail_height": None, "thumbnail_width": None,
    "title": "", "url": "", "whitelist_status": "all_ads", "wls": 6,
}


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def _score(rng: random.Random) -> int:
    if rng.random() < SHARE_AT_3_KARMA:
        return 3 + int(rng.paretovariate(1.1)) - 1 + (rng.random() < 0.3) * rng.randrange(50)
    return rng.choices((0, 1, 2), weights=(20, 60, 12))[0]


def _title(rng: random.Random) -> str:
    words = rng.sample(_WORDS, rng.randrange(4, 14))
    if rng.random() < 0.1:
        words.insert(rng.randrange(len(words)), rng.choice(_UNICODE))
    return " ".join(words).capitalize()


def _viral_url(j: int) -> str:
    return f"https://www.popular.example.com/story/{j}"


def _link(rng: random.Random, serial: int, month: str) -> tuple[str, str]:
    """(url, domain) of a link post."""
    r = rng.random()
    if r < 0.20:
        return f"https://i.redd.it/{_base36(serial * 7919)}.{rng.choice(('jpg', 'png', 'gif'))}", "i.redd.it"
    if r < 0.33:
        ext = rng.choice(("jpg", "JPG", "png", "gifv"))
        return f"https://i.imgur.com/{_base36(serial * 104729)}.{ext}", "i.imgur.com"
    if r < 0.37:
        return f"https://imgur.com/a/{_base36(serial * 31)}", "imgur.com"
    if r < 0.47:
        return f"https://www.youtube.com/watch?v={_base36(serial * 15485863)}", "youtube.com"
    if r < 0.51:
        return f"https://v.redd.it/{_base36(serial * 17)}", "v.redd.it"
    if r < 0.53:
        lang = rng.choice(("en", "en.m", "de", "fr"))
        return f"https://{lang}.wikipedia.org/wiki/Article_{serial % 5000}", f"{lang}.wikipedia.org"
    if r < 0.55:
        return f"https://github.com/user{serial % 997}/project{serial}", "github.com"
    if r < 0.56:
        return f"https://www.google.com/maps/place/{serial}", "google.com"
    if r < 0.57:
        return f"https://www.ebay.com/itm/{serial}", "ebay.com"
    if r < 0.58:
        return f"http://example.net/files/report{serial}.{rng.choice(('pdf', 'PDF', 'zip', 'mp4'))}", "example.net"
    if r < 0.585:
        return f"ftp://ftp.example.org/pub/{serial}", "ftp.example.org"
    host = rng.choice(_NEWS)
    path = f"/{month.replace('-', '/')}/{'-'.join(rng.sample(_WORDS, 4))}-{serial}"
    return f"https://{host}{path}{rng.choice(('', '', '/', '.html'))}", host.removeprefix("www.")


def _variant(rng: random.Random, url: str) -> str:
    """The same page as another submitter might paste it."""
    r = rng.random()
    if r < 0.3:
        return url + ("&" if "?" in url else "?") + rng.choice(_TRACKING)
    if r < 0.45 and "://www." in url:
        return url.replace("://www.", "://", 1)
    if r < 0.6:
        return url + "#comments"
    return url


def _malformed(rng: random.Random, good: bytes, k: int) -> bytes:
    kind = k % 7
    if kind == 0:
        return good[: len(good) // 2]                                   # cut mid-object
    if kind == 1:
        d = orjson.loads(good)
        d.pop("url", None)
        return orjson.dumps(d)
    if kind == 2:
        d = orjson.loads(good)
        d["score"] = str(d["score"])
        return orjson.dumps(d)
    if kind == 3:
        return b"[1, 2, 3]"
    if kind == 4:
        return good.replace(b'"title":"', b'"title":"\xff\xfe', 1)    # invalid UTF-8
    if kind == 5:
        return b""
    d = orjson.loads(good)
    d["url"] = None
    return orjson.dumps(d)


def sample_lines(n: int, month: str = "2017-10", seed: int = 0,
                 malformed_every: int = MALFORMED_EVERY) -> Iterator[bytes]:
    """`n` NDJSON lines (without newlines) of submissions created in `month` ("YYYY-MM")."""
    rng = random.Random(f"{seed}-{month}")
    year, mon = map(int, month.split("-"))
    start = calendar.timegm(dt.date(year, mon, 1).timetuple())
    seconds = calendar.monthrange(year, mon)[1] * 86400
    serial0 = (year * 12 + mon) * 10_000_000
    recent: list[str] = []
    malformed_k = mon  # so each month's file starts on a different kind of damage
    for i in range(n):
        serial = serial0 + i
        d = dict(_TEMPLATE)
        sub = rng.choice(_SUBREDDITS)
        sid = _base36(serial)
        d.update(id=sid, author=f"user{rng.randrange(100_000)}", score=_score(rng),
                 created_utc=start + (i * seconds) // max(n, 1), subreddit=sub, subreddit_id=f"t5_{len(sub)}",
                 subreddit_name_prefixed=f"r/{sub}", num_comments=rng.randrange(40), title=_title(rng),
                 retrieved_on=start + seconds + 86400, over_18=sub in ("gonewild", "nsfw") or rng.random() < SHARE_NSFW,
                 permalink=f"/r/{sub}/comments/{sid}/post/")
        if rng.random() < SHARE_SELF:
            d.update(is_self=True, domain=f"self.{sub}", url=f"https://www.reddit.com{d['permalink']}",
                     selftext=" ".join(rng.choices(_WORDS, k=rng.randrange(0, 200))))
        else:
            r = rng.random()
            if r < SHARE_VIRAL:
                url, domain = _viral_url(rng.randrange(1000)), "popular.example.com"
            elif r < SHARE_VIRAL + SHARE_REPOST and recent:
                url, domain = _variant(rng, rng.choice(recent)), ""
            else:
                url, domain = _link(rng, serial, month)
                recent.append(url)
                if len(recent) > 500:
                    recent.pop(0)
            d.update(url=url, domain=domain or url.split("/")[2].removeprefix("www."),
                     is_video="v.redd.it" in url, thumbnail="https://b.thumbs.redditmedia.com/x.jpg")
        line = orjson.dumps(d)
        if malformed_every and i % malformed_every == malformed_every - 1:
            line = _malformed(rng, line, malformed_k)
            malformed_k += 1
        yield line


def write_lines(path: str, lines, level: int = ZSTD_LEVEL) -> str:
    """Write NDJSON lines to `path`, compressed by its extension: .zst (window 2^31, as `zstd --long=31`),
    .xz, .bz2, .gz, or plain."""
    import bz2
    import gzip
    import lzma

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as raw:
        if path.endswith(".zst"):
            params = zstandard.ZstdCompressionParameters.from_level(level, window_log=ZSTD_WINDOW_LOG)
            out = zstandard.ZstdCompressor(compression_params=params).stream_writer(raw, closefd=False)
        elif path.endswith(".xz"):
            out = lzma.open(raw, "wb")
        elif path.endswith(".bz2"):
            out = bz2.open(raw, "wb")
        elif path.endswith(".gz"):
            out = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)
        else:
            out = None
        sink = out or raw
        batch: list[bytes] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= 4096:
                sink.write(b"\n".join(batch) + b"\n")
                batch = []
        if batch:
            sink.write(b"\n".join(batch) + b"\n")
        if out is not None:
            out.close()
    os.replace(tmp, path)
    return path


def month_names(first: str, count: int) -> list[str]:
    year, mon = map(int, first.split("-"))
    out = []
    for _ in range(count):
        out.append(f"{year:04d}-{mon:02d}")
        year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    return out


def write_sample_dumps(output_dir: str, lines: int, files: int = 4, first_month: str = "2017-09",
                       seed: int = 0, suffix: str = ".zst", malformed_every: int = MALFORMED_EVERY) -> list[str]:
    """`lines` submissions split over `files` monthly dumps `RS_YYYY-MM{suffix}` under `output_dir`."""
    paths = []
    per_file = [lines // files + (i < lines % files) for i in range(files)]
    for month, n in zip(month_names(first_month, files), per_file):
        path = os.path.join(output_dir, f"RS_{month}{suffix}")
        paths.append(write_lines(path, sample_lines(n, month, seed, malformed_every)))
    return paths
