"""The links stage: rules, merge, errors, damaged archives, real dumps, determinism (real Beam runner)."""

from __future__ import annotations

import collections
import json
import lzma
import os
from urllib.parse import urlsplit

import orjson
import pytest
from conftest import shared_path

from webtext import cli
from webtext.demo.dump import sample_lines, write_lines, write_sample_dumps
from webtext.links import rules as link_rules
from webtext.links import task, urls
from webtext.links.schema import ERROR_REASONS
from webtext.runtime import datasets, stats

JAN_2018 = 1514764800


def sub(id, url="http://example.com/a", score=5, created=1500000000, **kw) -> dict:
    d = {"id": id, "url": url, "score": score, "created_utc": created, "is_self": False, "over_18": False,
         "subreddit": "news"}
    d.update(kw)
    return d


def run_cli(capsys, *argv) -> tuple[int, str]:
    rc = cli.main(["links", *argv])
    return rc, capsys.readouterr().err


def rules_for(*flags: str) -> link_rules.LinkRules:
    parser, _ = cli.command_parser("links")
    return link_rules.rules_from_args(parser.parse_args(["--input", "x", "--output", "y", *flags]))


def kept_ids(rules: link_rules.LinkRules, subs: list[dict]) -> set[str]:
    return {s["id"] for s in subs if link_rules.check_submission(s, rules)[0] == "keep"}


# ---------------------------------------------------------------------------------------------- rules

def test_defaults_are_the_gpt2_recipe():
    r = rules_for()
    assert r == link_rules.LinkRules()
    assert (r.min_karma, r.karma, r.drop_self_posts, r.drop_wikipedia, r.drop_nsfw) == (3, "per-submission", True,
                                                                                        True, False)
    assert r.schemes == {"http", "https"} and r.before == JAN_2018 and r.after is None


def test_default_rules_drop_each_kind_for_its_reason():
    r = link_rules.LinkRules()
    cases = {
        "low_karma": sub("a", score=2),
        "self_post": sub("b", url="https://www.reddit.com/r/x/comments/b/", is_self=True),
        "date": sub("c", created=JAN_2018),
        "scheme": sub("d", url="ftp://files.example.com/x"),
        "extension": sub("e", url="https://i.redd.it/abc.JPG?x=1"),
        "wikipedia": sub("f", url="https://en.m.wikipedia.org/wiki/GPT-2"),
    }
    for reason, s in cases.items():
        assert link_rules.check_submission(s, r) == ("drop", reason, None), reason
    assert link_rules.check_submission(sub("g", score=3, created=JAN_2018 - 1), r)[0] == "keep"


def test_a_submission_is_counted_under_the_first_rule_it_fails():
    s = sub("a", score=0, is_self=True, url="https://en.wikipedia.org/wiki/X")
    assert link_rules.check_submission(s, link_rules.LinkRules())[1] == "low_karma"


def test_defaults_keep_domains_webtext_kept():
    subs = [sub("gh", url="https://github.com/openai/gpt-2"), sub("go", url="https://www.google.com/maps/place/x"),
            sub("eb", url="http://www.ebay.com/itm/123?hash=item1"), sub("yt", url="https://youtube.com/watch?v=1"),
            sub("nsfw", over_18=True)]
    assert kept_ids(link_rules.LinkRules(), subs) == {"gh", "go", "eb", "yt", "nsfw"}


def test_kept_submission_carries_key_and_submitted_url():
    s = sub("k", url=" https://WWW.Example.com/Story/?utm_source=reddit ", score=7, subreddit="science")
    assert link_rules.check_submission(s, link_rules.LinkRules()) == (
        "keep", "https://example.com/Story", (7, 1500000000, "k", "science", "https://WWW.Example.com/Story/?utm_source=reddit"))


@pytest.mark.parametrize("flags,kept", [
    ([], {"ok", "nsfw", "sub_b", "old"}),
    (["--min-karma", "10"], {"ok"}),
    (["--min-karma", "0"], {"ok", "low", "nsfw", "sub_b", "old"}),
    (["--keep-self-posts"], {"ok", "nsfw", "sub_b", "old", "self"}),
    (["--keep-wikipedia"], {"ok", "nsfw", "sub_b", "old", "wiki"}),
    (["--drop-nsfw"], {"ok", "sub_b", "old"}),
    (["--schemes", "http,https,ftp"], {"ok", "nsfw", "sub_b", "old", "ftp"}),
    (["--before", "none"], {"ok", "nsfw", "sub_b", "old", "new"}),
    (["--before", "none", "--after", "2017-01-01"], {"ok", "nsfw", "sub_b", "new"}),
    (["--before", "2016-06-01T00:00:00+00:00"], {"old"}),
    (["--blocked-extensions", "none"], {"ok", "nsfw", "sub_b", "old", "pdf"}),
    (["--blocked-extensions", "html"], {"nsfw", "sub_b", "old", "pdf"}),
])
def test_rule_flags(flags, kept):
    subs = [
        sub("ok", url="https://news.example.com/a.html", score=12, created=1500000000),
        sub("low", score=1),
        sub("nsfw", url="https://b.example.net/x", over_18=True),
        sub("sub_b", url="https://c.example.org/y", subreddit="B_Sub"),
        sub("old", url="https://d.example.org/z", created=1400000000),
        sub("new", url="https://e.example.org/z", created=JAN_2018 + 10),
        sub("self", url="https://www.reddit.com/r/x/comments/s/", is_self=True),
        sub("wiki", url="https://de.wikipedia.org/wiki/X"),
        sub("ftp", url="ftp://f.example.org/file"),
        sub("pdf", url="https://g.example.org/paper.PDF?dl=1"),
    ]
    assert kept_ids(rules_for(*flags), subs) == kept


def test_exclude_files(tmp_path):
    (tmp_path / "domains.txt").write_text("# spam\nexample.net\nwww.c.example.org\n")
    (tmp_path / "subs.txt").write_text("r/b_sub\n# comment\n")
    subs = [sub("a", url="https://x.example.net/1"), sub("b", url="https://c.example.org/2"),
            sub("c", url="https://notexample.net/3"), sub("d", url="https://ok.org/4", subreddit="B_Sub"),
            sub("e", url="https://ok.org/5", subreddit="other")]
    r = rules_for("--exclude-domains", str(tmp_path / "domains.txt"),
                  "--exclude-subreddits", str(tmp_path / "subs.txt"))
    assert kept_ids(r, subs) == {"c", "e"}
    assert link_rules.check_submission(subs[0], r)[1] == "domain"
    assert link_rules.check_submission(subs[3], r)[1] == "subreddit"


@pytest.mark.parametrize("obj,reason", [
    ([1, 2], "not_object"),
    ("a string", "not_object"),
    ({"id": "1", "score": 5, "created_utc": 1}, "missing_field"),
    ({"id": "1", "url": None, "score": 5, "created_utc": 1}, "missing_field"),
    ({"id": "1", "url": "http://a.com", "created_utc": 1}, "missing_field"),
    ({"id": "1", "url": 42, "score": 5, "created_utc": 1}, "bad_type"),
    ({"id": "1", "url": "http://a.com", "score": "5", "created_utc": 1}, "bad_type"),
    ({"id": "1", "url": "http://a.com", "score": 5.5, "created_utc": 1}, "bad_type"),
    ({"id": "1", "url": "http://a.com", "score": True, "created_utc": 1}, "bad_type"),
    ({"url": "http://a.com", "score": 5, "created_utc": 1}, "missing_field"),
    ({"id": 7, "url": "http://a.com", "score": 5, "created_utc": 1}, "bad_type"),
    ({"id": "1", "url": "http://a.com", "score": 5}, "missing_field"),
    ({"id": "1", "url": "http://a.com", "score": 5, "created_utc": "soon"}, "bad_type"),
    ({"id": "1", "url": "http://[::1", "score": 5, "created_utc": 1}, "bad_url"),
    ({"id": "1", "url": "https:///nohost", "score": 5, "created_utc": 1}, "bad_url"),
])
def test_unusable_submissions_are_rejected_with_a_reason(obj, reason):
    with pytest.raises(link_rules.Rejected) as e:
        link_rules.check_submission(obj, link_rules.LinkRules())
    assert e.value.reason == reason and reason in ERROR_REASONS  # the closed set the errors dataset documents
    assert e.value.detail


def test_old_dumps_number_fields_as_strings_or_floats():
    assert link_rules.check_submission(sub("a", created="1500000000"), link_rules.LinkRules())[0] == "keep"
    assert link_rules.check_submission(sub("b", created=1500000000.0), link_rules.LinkRules())[2][1] == 1500000000


# ---------------------------------------------------------------------------------------------- merge

def test_merge_takes_url_of_best_submission_ties_to_earliest():
    totals, count = stats.dict_counter()
    subs = [(5, 300, "c", "news", "https://example.com/a?utm_source=x"),
            (9, 200, "b", "pics", "https://www.example.com/a/"),
            (9, 100, "a", "news", "https://example.com/a"),
            (1, 50, "d", "", "http://example.com/a")]
    row = link_rules.merge_link("https://example.com/a", subs, link_rules.LinkRules(), count)
    assert row == {"url": "https://example.com/a", "key": "https://example.com/a", "host": "example.com",
                   "score": 9, "num_submissions": 4, "subreddits": ["news", "pics"], "first_created_utc": 50,
                   "submission_ids": ["a", "b", "c", "d"]}
    assert totals == {"links": 1}


def test_merge_sum_rule_and_duplicate_submissions():
    totals, count = stats.dict_counter()
    r = link_rules.LinkRules(karma="sum")
    subs = [(1, 100, "a", "x", "http://e.com/"), (1, 90, "b", "y", "http://www.e.com"),
            (2, 100, "a", "x", "http://e.com/")]  # "a" again, from a later dump: counted once, latest score
    row = link_rules.merge_link("http://e.com", subs, r, count)
    assert (row["score"], row["num_submissions"], row["url"], row["submission_ids"]) == (3, 2, "http://e.com/",
                                                                                        ["a", "b"])
    assert link_rules.merge_link("http://f.com", [(1, 1, "z", "", "http://f.com")], r, count) is None
    assert totals == {"links": 1, "duplicate_submission_ids": 1, "drop_low_karma_sum": 1}


def test_merge_is_independent_of_input_order():
    subs = [(3, i % 7, f"id{i}", f"s{i % 3}", f"http://e.com/?v={i % 4}") for i in range(30)]
    _, count = stats.dict_counter()
    rows = {orjson.dumps(link_rules.merge_link("k", order, link_rules.LinkRules(), count))
            for order in (subs, subs[::-1], sorted(subs, key=lambda s: s[2]))}
    assert len(rows) == 1


# ---------------------------------------------------------------------------------------------- the stage

def independent_result(paths: list[str]) -> tuple[collections.Counter, dict]:
    """The default rules re-derived with plain Python and the stdlib json, for comparison with the stage."""
    counts: collections.Counter = collections.Counter()
    by_key: dict[str, list] = collections.defaultdict(list)
    for path in paths:
        with lzma.open(path) as f:
            for line in f:
                counts["lines_read"] += 1
                d = json.loads(line)
                url = d["url"]
                ext = urlsplit(url).path.rsplit("/", 1)[-1].rpartition(".")[2].lower()
                if d["score"] < 3:
                    counts["drop_low_karma"] += 1
                elif d["is_self"]:
                    counts["drop_self_post"] += 1
                elif int(d["created_utc"]) >= JAN_2018:
                    counts["drop_date"] += 1
                elif not url.lower().startswith(("http://", "https://")):
                    counts["drop_scheme"] += 1
                elif "." in urlsplit(url).path.rsplit("/", 1)[-1] and ext in urls.BLOCKED_EXTENSIONS:
                    counts["drop_extension"] += 1
                elif urlsplit(url).hostname.endswith("wikipedia.org"):
                    counts["drop_wikipedia"] += 1
                else:
                    counts["kept_submissions"] += 1
                    by_key[urls.normalize_url(url)].append(d)
    expected = {}
    for key, ds in by_key.items():
        best = sorted(ds, key=lambda d: (-d["score"], d["created_utc"], d["id"]))[0]
        expected[key] = {"url": best["url"], "key": key, "host": urlsplit(best["url"]).hostname.lower(),
                         "score": best["score"], "num_submissions": len(ds),
                         "subreddits": sorted({d["subreddit"] for d in ds}),
                         "first_created_utc": min(d["created_utc"] for d in ds),
                         "submission_ids": sorted(d["id"] for d in ds)}
    counts["links"] = len(expected)
    return counts, expected


def test_real_dumps_match_an_independent_count(tmp_path, capsys):
    paths = sorted(str(p) for p in shared_path("reddit").glob("RS_*.xz"))
    assert len(paths) == 2
    rc, err = run_cli(capsys, "--input", *paths, "--output", str(tmp_path), "--workers", "1")
    assert rc == 0
    counts, expected = independent_result(paths)
    assert counts["lines_read"] == 1182 and counts["drop_low_karma"] == 1182 - 840  # as documented for the data
    st = stats.read_stats(str(tmp_path))
    got = {k: v for k, v in st["counters"].items() if k != "files_read"}
    assert got == dict(counts)
    rows = datasets.read_rows(str(tmp_path), "links")
    assert {r["key"]: r for r in rows} == expected
    assert datasets.read_table(str(tmp_path), "errors").num_rows == 0
    assert "unique links" in err and f"{counts['links']:,}" in err
    assert st["config"]["min_karma"] == 3 and st["config"]["inputs"] == paths


def test_bad_lines_go_to_errors_and_the_run_goes_on(tmp_path, capsys):
    good = orjson.dumps(sub("g1", url="https://good.example.com/1"))
    lines = [
        good,
        b'{"id": "x1", "url": "http://a.com", "score": ',              # 2: cut mid-object
        b"",                                                              # 3: blank
        b"[1, 2, 3]",                                                     # 4: not an object
        orjson.dumps({"id": "x2", "score": 9, "created_utc": 1}),         # 5: no url
        orjson.dumps(sub("x3", score="12")),                              # 6: score of the wrong type
        orjson.dumps(sub("x4", url=["http://a.com"])),                    # 7: url of the wrong type
        b'{"id":"x5","title":"\xff\xfe","url":"http://a.com","score":5,"created_utc":1}',  # 8: invalid UTF-8
        orjson.dumps(sub("x6", url="http://[::1/x")),                     # 9: URL that cannot be parsed
        orjson.dumps(sub("g2", url="https://good.example.com/2")),
    ]
    path = tmp_path / "in" / "RS_2017-10.ndjson"
    path.parent.mkdir()
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    rc, err = run_cli(capsys, "--input", str(path), "--output", str(out), "--workers", "1")
    assert rc == 0
    errors = datasets.read_rows(str(out), "errors")
    assert [(e["position"], e["reason"]) for e in errors] == [
        (2, "bad_json"), (4, "not_object"), (5, "missing_field"), (6, "bad_type"), (7, "bad_type"),
        (8, "bad_json"), (9, "bad_url")]
    assert all(e["source"] == str(path) and e["stage"] == "links" and e["detail"] for e in errors)
    assert [e["raw"].encode("utf-8", "replace") for e in errors if e["position"] in (2, 4, 6)] == \
        [lines[1], lines[3], lines[5]]
    assert {r["submission_ids"][0] for r in datasets.read_rows(str(out), "links")} == {"g1", "g2"}
    c = stats.read_stats(str(out))["counters"]
    assert (c["lines_read"], c["blank_lines"], c["kept_submissions"], c["links"]) == (10, 1, 2, 2)
    assert (c["error_bad_json"], c["error_not_object"], c["error_missing_field"], c["error_bad_type"],
            c["error_bad_url"]) == (2, 1, 1, 2, 1)
    assert "7 lines could not be used" in err


def test_truncated_archive_is_named_and_other_files_are_still_written(tmp_path, capsys):
    good = shared_path("reddit", "RS_v2_2005-06.xz")
    lines = list(sample_lines(4000, month="2017-10", seed=5, malformed_every=0))
    full = write_lines(str(tmp_path / "full" / "RS_2017-10.zst"), lines)
    data = open(full, "rb").read()
    cut = tmp_path / "in" / "RS_2017-10.zst"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    rc, err = run_cli(capsys, "--input", str(good), str(cut), "--output", str(out), "--workers", "1",
                      "--before", "none")
    assert rc == 1
    assert f"damaged input: {cut}" in err and "truncated" in err
    errors = datasets.read_rows(str(out), "errors")
    damaged = [e for e in errors if e["reason"] == "damaged_file"]
    assert {e["reason"] for e in errors} <= set(ERROR_REASONS)
    assert len(damaged) == 1 and damaged[0]["source"] == str(cut)
    st = stats.read_stats(str(out))
    assert st["damaged_files"] == [damaged[0]["detail"]]
    # every complete line before the damage was used: the stage agrees with the lines the reader could give
    readable = damaged[0]["position"] - 1
    assert 0 < readable < len(lines)
    rows = datasets.read_rows(str(out), "links")
    ids = {i for r in rows for i in r["submission_ids"]}
    _, from_good = independent_result([str(good)])
    assert len(from_good) > 50 and set(from_good) <= {r["key"] for r in rows}
    expected_cut = {orjson.loads(line)["id"] for line in lines[:readable]
                    if link_rules.check_submission(orjson.loads(line), link_rules.LinkRules(before=None))[0] == "keep"}
    assert expected_cut and expected_cut <= ids
    assert st["counters"]["lines_read"] == 103 + readable


def test_sum_karma_merges_before_the_threshold(tmp_path, capsys):
    subs = [sub("a", url="http://e.com/x", score=1), sub("b", url="http://www.e.com/x/", score=2),
            sub("c", url="http://f.com/y", score=2), sub("d", url="http://g.com/z", score=-5)]
    path = tmp_path / "RS.ndjson.gz"
    write_lines(str(path), [orjson.dumps(s) for s in subs])
    out = tmp_path / "out"
    rc, _ = run_cli(capsys, "--input", str(path), "--output", str(out), "--workers", "1", "--karma", "sum")
    assert rc == 0
    rows = datasets.read_rows(str(out), "links")
    assert [(r["key"], r["score"], r["num_submissions"], r["url"]) for r in rows] == [
        ("http://e.com/x", 3, 2, "http://www.e.com/x/")]
    c = stats.read_stats(str(out))["counters"]
    assert c["drop_low_karma_sum"] == 2 and c["kept_submissions"] == 4 and "drop_low_karma" not in c


def test_missing_input_is_a_clear_error(tmp_path, capsys):
    rc, err = run_cli(capsys, "--input", str(tmp_path / "nothing-*.zst"), "--output", str(tmp_path / "o"))
    assert rc == 2 and err.startswith("webtext links: error: ") and "nothing-*.zst" in err
    assert not (tmp_path / "o").exists()


def test_bad_flags_are_errors_before_anything_is_written(tmp_path, capsys):
    dump = tmp_path / "RS.ndjson"
    dump.write_bytes(orjson.dumps(sub("a")) + b"\n")
    for flags, message in ((["--rows-per-shard", "0"], "--rows-per-shard must be at least 1"),
                           (["--exclude-domains", str(tmp_path / "none.txt")], "none.txt"),
                           (["--runner", "dataflow"], "--runner dataflow needs --project")):
        rc, err = run_cli(capsys, "--input", str(dump), "--output", str(tmp_path / "o"), *flags)
        assert rc == 2 and err.startswith("webtext links: error: ") and message in err, (flags, err)
    assert not (tmp_path / "o").exists()


def test_help_example_names_the_command():
    parser, _ = cli.command_parser("links")
    assert "webtext links --input" in parser.format_help()


@pytest.mark.slow
def test_same_output_bytes_for_one_and_two_workers(tmp_path, capsys):
    paths = write_sample_dumps(str(tmp_path / "in"), 12_000, files=2, first_month="2017-11", seed=3, suffix=".zst")
    paths += write_sample_dumps(str(tmp_path / "in"), 6_000, files=2, first_month="2017-09", seed=4, suffix=".bz2")
    outs = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        rc, _ = run_cli(capsys, "--input", str(tmp_path / "in" / "RS_*"), "--output", str(out),
                        "--workers", str(workers), "--rows-per-shard", "200")
        assert rc == 0
        outs[workers] = {f: (out / f).read_bytes() for f in sorted(os.listdir(out)) if f.endswith(".parquet")}
        assert stats.read_stats(str(out))["counters"]["lines_read"] == 18_000
    assert len([f for f in outs[1] if f.startswith("links-")]) > 1
    assert outs[1] == outs[2]


def test_file_links_decides_every_line_as_check_submission_does(tmp_path):
    # file_links short-cuts the commonest case inline; it must agree with the rules line by line,
    # malformed lines of every kind included.
    lines = list(sample_lines(5000, month="2017-12", seed=9, malformed_every=40))
    lines += [b"   ", b'{"id":"z","url":"http://a.com","score":1,"created_utc":"1500000000"}',
              b'{"id":"","url":"http://a.com","score":1,"created_utc":1}', b'{"id":"y","url":7,"score":1}']
    path = write_lines(str(tmp_path / "RS_2017-12.ndjson"), lines)
    for rules in (link_rules.LinkRules(), link_rules.LinkRules(karma="sum"),
                  link_rules.LinkRules(min_karma=0, before=None)):
        expected: collections.Counter = collections.Counter()
        kept, errors = [], []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                expected["blank_lines"] += 1
                continue
            try:
                status, key, s = link_rules.check_submission(orjson.loads(line), rules)
            except link_rules.Rejected as e:
                expected["error_" + e.reason] += 1
                errors.append((i, e.reason))
                continue
            except orjson.JSONDecodeError:
                expected["error_bad_json"] += 1
                errors.append((i, "bad_json"))
                continue
            if status == "keep":
                expected["kept_submissions"] += 1
                kept.append((key, s))
            else:
                expected["drop_" + key] += 1
        expected.update(lines_read=len(lines), files_read=1)
        totals, count = stats.dict_counter()
        out = list(task.file_links(path, rules, count))
        assert [item for ok, item in out if ok] == kept
        assert [(e["position"], e["reason"]) for ok, e in out if not ok] == errors
        assert totals == expected
        assert expected["drop_low_karma"] + expected["kept_submissions"] > 1000
        assert len(errors) > 50


def test_progress_hears_of_every_line_read(tmp_path, monkeypatch):
    monkeypatch.setattr(task, "PROGRESS_LINES", 4)
    path = tmp_path / "RS_x.jsonl"
    rows = [{"id": f"p{i}", "url": f"http://h{i}.test/a", "score": 5, "created_utc": 1_420_070_400,
             "is_self": False, "over_18": False, "subreddit": "s"} for i in range(10)]
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    ticks = []
    _, count = stats.dict_counter()
    list(task.file_links(str(path), link_rules.LinkRules(before=None), count, tick=ticks.append))
    assert ticks == [4, 4, 2]  # every PROGRESS_LINES lines, then the rest
