"""The cleaning filters: plain functions, each dropping for a named, counted reason."""

from __future__ import annotations

import pytest

from webtext.extract import filters
from webtext.extract.filters import FilterConfig, clean_document
from webtext.runtime.stats import dict_counter

SENTENCES = [
    "The committee met on Tuesday to discuss the new library building on the river bank.",
    "Several residents asked whether the reading rooms would stay open during the renovation works.",
    "The architect explained that the old facade would be kept and the roof insulated again.",
    "Funding comes partly from the city and partly from a regional cultural heritage programme.",
    "A final decision on the opening hours is expected before the end of the summer holidays.",
    "Children's books will move to the ground floor, next to a new garden with benches and trees.",
    "The mayor thanked the volunteers who had catalogued thousands of donated books last winter.",
    "Parking remains a concern, and the council promised to study a shuttle bus from the station.",
]


def article(n_sentences: int = 16) -> str:
    return "\n".join(f"{SENTENCES[i % len(SENTENCES)]} ({i})" for i in range(n_sentences))


def run(text: str, **config):
    totals, count = dict_counter()
    return clean_document(text, FilterConfig(**config), count), totals


def test_a_normal_article_passes_with_its_measures():
    doc, totals = run(article())
    assert doc is not None and not totals
    assert doc.words == filters.count_words(doc.text) > 200
    assert doc.chars == len(doc.text)
    assert doc.language == "en"


def test_min_and_max_length():
    short = " ".join(article().split()[:99])
    assert run(short)[0] is None and run(short)[1] == {"dropped_too_short": 1}
    assert run(short, min_words=50)[0] is not None
    assert run(article(), max_words=100) == (None, {"dropped_too_long": 1})
    assert run(article(200), max_words=0)[0] is not None  # 0 = no maximum


def test_words_count_cjk_characters_one_each():
    assert filters.count_words("one two  three\nfour") == 4
    assert filters.count_words("東京は日本の首都です") == 10
    assert filters.count_words("Tokyo 東京 is big") == 5
    chinese = "北京是中华人民共和国的首都，也是全国的政治和文化中心。" * 6
    assert run(chinese)[0] is not None  # ~160 characters: long enough, though it has no spaces


def test_boilerplate_lines_are_removed_and_counted():
    text = article() + ("\nThis website uses cookies. See our cookie policy.\n"
                        "Please enable JavaScript to view comments.\nLorem ipsum dolor sit amet.")
    doc, totals = run(text)
    assert "cookie" not in doc.text and "JavaScript" not in doc.text and "Lorem" not in doc.text
    assert totals == {"lines_boilerplate": 3}
    long_line = "Our privacy policy was discussed at length: " + SENTENCES[0] * 3  # > 30 words: real content
    doc, totals = run(article() + "\n" + long_line)
    assert long_line in doc.text and not totals
    doc, _ = run(text, boilerplate_lines=False)
    assert "cookie policy" in doc.text


def test_repetition_is_optional_and_follows_gopher():
    repeated = "\n".join([SENTENCES[0]] * 10 + SENTENCES)  # 9 of 18 lines repeat an earlier one
    assert run(repeated)[0] is not None
    assert run(repeated, repetition=True) == (None, {"dropped_repetition": 1})
    assert run(article(), repetition=True)[0] is not None
    paragraphs = "\n\n".join(["Subscribe to our newsletter for weekly updates on the library project now."] * 3
                             + [article(12)])
    assert filters.is_repetitive(paragraphs, filters.normalize_lines(paragraphs))


def test_symbol_ratio_is_optional():
    hashtags = article(10) + "\n" + " ".join(f"#tag{i}" for i in range(40))
    assert run(hashtags)[0] is not None
    assert run(hashtags, max_symbol_ratio=filters.MAX_SYMBOL_RATIO) == (None, {"dropped_symbols": 1})
    assert run(article(), max_symbol_ratio=filters.MAX_SYMBOL_RATIO)[0] is not None


@pytest.mark.parametrize("text,language", [
    (article(), "en"),
    ("Der Ausschuss traf sich am Dienstag, um über das neue Bibliotheksgebäude am Flussufer zu sprechen. " * 20,
     "de"),
])
def test_language_is_detected_and_optionally_filtered(text, language):
    doc, _ = run(text)
    assert doc.language == language
    assert run(text, languages=frozenset({language}))[0] is not None
    other = "fr"
    assert run(text, languages=frozenset({other})) == (None, {"dropped_language": 1})


def test_whitespace_is_normalised():
    doc, _ = run("  " + article().replace("\n", "\n\n   \n  ") + "  \n")
    assert doc.text == article()


def test_the_language_model_loads_once_whichever_threads_ask_first():
    """A stage starts loading the model on a thread before its first document; a document that comes
    sooner waits for that load instead of starting a second one, and both see the same identifier."""
    import threading

    import py3langid

    filters._identifier = None  # as in a fresh process
    filters.load_language_identifier()
    seen = []
    askers = [threading.Thread(target=lambda: seen.append(filters.language_identifier())) for _ in range(3)]
    for t in askers:
        t.start()
    for t in askers:
        t.join()
    assert len(seen) == 3 and all(s is seen[0] for s in seen) and filters.language_identifier() is seen[0]
    sample = "The quick brown fox jumps over the lazy dog while the committee reviews its annual budget."
    assert filters.detect_language(sample) == py3langid.classify(sample)[0] == "en"
