"""The links stage's rules: which submissions are kept (`check_submission`) and how the kept submissions of
one normalised URL become its row of the link table (`merge_link`). Pure functions of a parsed submission
and the `LinkRules`; the stage's local processes (task.py) and its Beam transforms (pipeline.py) call them.
"""

from __future__ import annotations

import argparse
import calendar
import datetime as dt
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from webtext.links import urls
from webtext.runtime import fs, stats

MIN_KARMA = 3                    # GPT-2: "at least 3 karma"
KARMA_RULES = ("per-submission", "sum")
BEFORE = "2018-01-01"            # WebText "does not include links created after Dec 2017"


@dataclass(frozen=True)
class LinkRules:
    """Every rule of the stage, with the GPT-2 recipe as default."""
    min_karma: int = MIN_KARMA
    karma: str = "per-submission"                 # or "sum": applied after merging by key
    drop_self_posts: bool = True
    schemes: frozenset[str] = urls.SCHEMES
    drop_wikipedia: bool = True
    before: int | None = calendar.timegm(dt.date.fromisoformat(BEFORE).timetuple())  # created_utc < before
    after: int | None = None                      # created_utc >= after
    exclude_domains: frozenset[str] = frozenset()
    exclude_subreddits: frozenset[str] = frozenset()  # lowercase
    drop_nsfw: bool = False
    blocked_extensions: frozenset[str] = urls.BLOCKED_EXTENSIONS

    def __post_init__(self):
        if self.karma not in KARMA_RULES:
            raise ValueError(f"--karma must be one of {', '.join(KARMA_RULES)}, not {self.karma!r}")

    def config(self) -> dict:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, frozenset):
                out[k] = sorted(v)
        return out


def _read_list(path: str | None) -> list[str]:
    return fs.read_bytes(path).decode("utf-8").splitlines() if path else []


def rules_from_args(args: argparse.Namespace) -> LinkRules:
    """The rules that the flags of `webtext links` ask for (reads the --exclude-* files)."""
    return LinkRules(
        min_karma=args.min_karma, karma=args.karma, drop_self_posts=not args.keep_self_posts,
        schemes=frozenset(s.strip().lower() for s in args.schemes.split(",") if s.strip()),
        drop_wikipedia=not args.keep_wikipedia, before=args.before, after=args.after,
        exclude_domains=urls.read_domain_list(_read_list(args.exclude_domains)),
        exclude_subreddits=frozenset(s.strip().lower().removeprefix("r/") for s in _read_list(args.exclude_subreddits)
                                     if s.strip() and not s.lstrip().startswith("#")),
        drop_nsfw=args.drop_nsfw, blocked_extensions=args.blocked_extensions)


# What one kept submission contributes to its link: (score, created_utc, id, subreddit, url).
Submission = tuple


class Rejected(Exception):
    """A line that cannot be used: `reason` from schema.ERROR_REASONS, `detail` one line for a human."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _int_field(obj: dict, name: str) -> int:
    value = obj.get(name)
    if value is None:
        raise Rejected("missing_field", f"no {name}")
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is str:  # early dumps wrote some numbers as strings
        try:
            return int(value)
        except ValueError:
            pass
    raise Rejected("bad_type", f"{name} is {type(value).__name__}: {str(value)[:80]}")


def check_submission(obj, rules: LinkRules) -> tuple[str, str | None, Submission | None]:
    """Apply the rules to one parsed submission: ("keep", key, submission) or ("drop", reason, None).
    Raises Rejected if the submission lacks a field the stage needs or has one of the wrong type."""
    if type(obj) is not dict:
        raise Rejected("not_object", f"a JSON {type(obj).__name__}, not an object")
    url = obj.get("url")
    if url is None:
        raise Rejected("missing_field", "no url")
    if type(url) is not str:
        raise Rejected("bad_type", f"url is {type(url).__name__}")
    score = obj.get("score")
    if score is None:
        raise Rejected("missing_field", "no score")
    if type(score) is not int:  # a bool is not a score
        raise Rejected("bad_type", f"score is {type(score).__name__}: {str(score)[:80]}")
    sid = obj.get("id")
    if type(sid) is not str or not sid:
        raise Rejected("missing_field" if sid is None else "bad_type", f"id is {sid!r}"[:100])
    created = obj.get("created_utc")
    if type(created) is not int:
        created = _int_field(obj, "created_utc")

    if rules.karma == "per-submission" and score < rules.min_karma:
        return "drop", "low_karma", None
    if rules.drop_self_posts and obj.get("is_self") is True:
        return "drop", "self_post", None
    if (rules.before is not None and created >= rules.before) or (rules.after is not None and created < rules.after):
        return "drop", "date", None
    subreddit = obj.get("subreddit")
    subreddit = subreddit if type(subreddit) is str else ""
    if rules.exclude_subreddits and subreddit.lower() in rules.exclude_subreddits:
        return "drop", "subreddit", None
    if rules.drop_nsfw and obj.get("over_18") is True:
        return "drop", "nsfw", None
    if urls.scheme_of(url) not in rules.schemes:
        return "drop", "scheme", None
    if rules.blocked_extensions and urls.blocked_extension(urls.path_of(url), rules.blocked_extensions):
        return "drop", "extension", None  # before parse_url, which costs far more
    try:
        parsed = urls.parse_url(url)
    except urls.UrlError as e:
        raise Rejected("bad_url", f"url {url[:200]!r}: {e}") from None
    if rules.drop_wikipedia and urls.is_wikipedia(parsed.host):
        return "drop", "wikipedia", None
    if urls.host_in(parsed.host, rules.exclude_domains):
        return "drop", "domain", None
    return "keep", parsed.key, (score, created, sid, subreddit, url.strip())


def merge_link(key: str, submissions: Iterable[Submission], rules: LinkRules,
               count: stats.Count) -> dict | None:
    """One row of the link table from every kept submission of `key`, or None if the summed karma is too
    low. The row's url is a real submitted URL: from the highest-scored submission, ties to the earliest."""
    by_id: dict[str, Submission] = {}
    n = 0
    for s in submissions:
        n += 1
        prev = by_id.get(s[2])
        if prev is None or s > prev:  # the same submission in two dumps: keep its latest (highest) score
            by_id[s[2]] = s
    if n > len(by_id):
        count("duplicate_submission_ids", n - len(by_id))
    subs = list(by_id.values())
    best = min(subs, key=lambda s: (-s[0], s[1], s[2]))
    score = best[0] if rules.karma == "per-submission" else sum(s[0] for s in subs)
    if score < rules.min_karma:
        count("drop_low_karma_sum")
        return None
    count("links")
    return {
        "url": best[4],
        "key": key,
        "host": urls.host_of(best[4]),
        "score": score,
        "num_submissions": len(subs),
        "subreddits": sorted({s[3] for s in subs if s[3]}),
        "first_created_utc": min(s[1] for s in subs),
        "submission_ids": sorted(by_id),
    }
