"""Cleaning filters applied to extracted text: plain functions, each a named option with a drop counter.

Every function takes the text (and its settings) plus an injected `count(name, n=1)`, and says why it drops
a document through a counter named `dropped_<filter>`. `clean_document` applies them in a fixed order and
returns the cleaned text with its measures, or None. Defaults and their sources:

- min words 100: WebText-style corpora (OpenWebText2, the Pile) drop documents under 128 GPT-2 tokens; at
  OpenAI's rule of thumb of ~0.75 English words per token that is ~100 words. Words are whitespace-separated
  words, and each Chinese/Japanese character counts as one (those scripts use no spaces).
- max words 100,000: Gopher (Rae et al. 2021, appendix A1.1) keeps documents of 50 to 100,000 words.
- boilerplate lines (on): C4's policy phrases, JavaScript notices and "lorem ipsum" (Raffel et al. 2020,
  `c4_utils.py`). Two changes from C4: only short lines (<= 30 words) are removed, because C4's rule also
  deletes real paragraphs that mention JavaScript or a privacy policy; and "lorem ipsum" removes the line,
  not the page (C4 drops the page, which loses real articles with one leftover placeholder; a page of
  placeholder text still ends under the minimum length).
- repetition (off): Gopher's line/paragraph repetition rules: drop when duplicate lines or paragraphs are
  over 30% of them, or hold over 20% of the characters.
- symbol-to-word ratio (off; Gopher's threshold 0.1): `#` and ellipses per word.
- language (off): keep only the listed ISO 639-1 codes, as decided by py3langid (offline, bundled model).
  The language column is filled either way.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import threading
from collections.abc import Callable

Count = Callable[..., None]

MIN_WORDS = 100                  # ~128 GPT-2 tokens (WebText-style minimum)
MAX_WORDS = 100_000              # Gopher
BOILERPLATE_MAX_WORDS = 30       # only lines this short can be boilerplate
MAX_DUP_LINE_FRACTION = 0.30     # Gopher
MAX_DUP_LINE_CHAR_FRACTION = 0.20
MAX_DUP_PARAGRAPH_FRACTION = 0.30
MAX_DUP_PARAGRAPH_CHAR_FRACTION = 0.20
MAX_SYMBOL_RATIO = 0.1           # Gopher, when the symbol filter is on
LANGUAGE_SAMPLE_CHARS = 1000     # py3langid is linear in length; this many characters suffice

# C4 (c4_utils.py): lines with these are policy/cookie notices, "enable JavaScript" notices or placeholder text.
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
                     "use cookies")
JAVASCRIPT = "javascript"
LOREM_IPSUM = "lorem ipsum"

FILTERS = ("too_short", "too_long", "repetition", "symbols", "language")

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    min_words: int = MIN_WORDS
    max_words: int = MAX_WORDS               # 0 = no maximum
    boilerplate_lines: bool = True
    repetition: bool = False
    max_symbol_ratio: float = 0.0            # 0 = off; Gopher uses MAX_SYMBOL_RATIO
    languages: frozenset[str] = frozenset()  # empty = keep every language

    def config(self) -> dict:
        d = dataclasses.asdict(self)
        d["languages"] = sorted(self.languages)
        return d


@dataclasses.dataclass(frozen=True)
class Cleaned:
    text: str
    chars: int
    words: int
    language: str | None


def count_words(text: str) -> int:
    """Whitespace-separated words, each CJK character counting as one word."""
    cjk = len(_CJK.findall(text))
    if not cjk:
        return len(text.split())
    return len(_CJK.sub(" ", text).split()) + cjk


def normalize_lines(text: str) -> list[str]:
    """Lines stripped of surrounding whitespace, blank lines dropped."""
    return [line for line in (raw.strip() for raw in text.splitlines()) if line]


def is_boilerplate_line(line: str) -> bool:
    if len(line.split()) > BOILERPLATE_MAX_WORDS:
        return False
    lower = line.lower()
    return JAVASCRIPT in lower or LOREM_IPSUM in lower or any(s in lower for s in POLICY_SUBSTRINGS)


def remove_boilerplate_lines(lines: list[str], count: Count) -> list[str]:
    kept = [line for line in lines if not is_boilerplate_line(line)]
    if len(kept) != len(lines):
        count("lines_boilerplate", len(lines) - len(kept))
    return kept


def _duplicate_shares(parts: list[str]) -> tuple[float, float]:
    """(share of parts that repeat an earlier one, share of characters in those repeats)."""
    if not parts:
        return 0.0, 0.0
    seen: collections.Counter = collections.Counter()
    dup_parts = dup_chars = 0
    for part in parts:
        if seen[part]:
            dup_parts += 1
            dup_chars += len(part)
        seen[part] += 1
    total_chars = sum(map(len, parts)) or 1
    return dup_parts / len(parts), dup_chars / total_chars


def is_repetitive(text: str, lines: list[str]) -> bool:
    """Gopher's line and paragraph repetition rules."""
    line_share, line_chars = _duplicate_shares(lines)
    if line_share > MAX_DUP_LINE_FRACTION or line_chars > MAX_DUP_LINE_CHAR_FRACTION:
        return True
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    para_share, para_chars = _duplicate_shares(paragraphs)
    return para_share > MAX_DUP_PARAGRAPH_FRACTION or para_chars > MAX_DUP_PARAGRAPH_CHAR_FRACTION


def symbol_ratio(text: str, words: int) -> float:
    """Gopher's symbol-to-word ratio: hash signs and ellipses per word."""
    symbols = text.count("#") + text.count("...") + text.count("\u2026")
    return symbols / max(1, words)


_identifier = None
_identifier_lock = threading.Lock()


def language_identifier():
    """py3langid's identifier, loaded once per process by whichever thread asks first (the others wait for
    it). Loading is mostly decompressing the model, which runs without holding the GIL: a
    stage can start it on a thread (`load_language_identifier`) before its first document needs it."""
    global _identifier
    if _identifier is None:
        with _identifier_lock:
            if _identifier is None:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier

                _identifier = LanguageIdentifier.from_model_file(MODEL_FILE)  # as py3langid.classify's own
    return _identifier


def load_language_identifier() -> None:
    """Start loading the language identifier on a thread of its own. A failure there is left for the first
    document to raise, where it stops the stage with its cause."""
    def load():
        try:
            language_identifier()
        except Exception:  # noqa: BLE001 - raised again, and reported, by the caller that needs the model
            pass

    threading.Thread(target=load, name="webtext-language-model", daemon=True).start()


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the text's language by py3langid (first LANGUAGE_SAMPLE_CHARS characters)."""
    sample = text[:LANGUAGE_SAMPLE_CHARS]
    if not sample.strip():
        return None
    return language_identifier().classify(sample)[0]


def clean_document(text: str, config: FilterConfig, count: Count) -> Cleaned | None:
    """The cleaned document, or None after counting `dropped_<filter>` for the first filter it fails."""
    lines = normalize_lines(text)
    if config.boilerplate_lines:
        lines = remove_boilerplate_lines(lines, count)
    cleaned = "\n".join(lines)
    words = count_words(cleaned)
    if words < config.min_words or not cleaned:
        count("dropped_too_short")
        return None
    if config.max_words and words > config.max_words:
        count("dropped_too_long")
        return None
    # Repetition is judged on the text as extracted: paragraph breaks are gone from `cleaned`.
    if config.repetition and is_repetitive(text, lines):
        count("dropped_repetition")
        return None
    if config.max_symbol_ratio and symbol_ratio(cleaned, words) > config.max_symbol_ratio:
        count("dropped_symbols")
        return None
    language = detect_language(cleaned)
    if config.languages and language not in config.languages:
        count("dropped_language")
        return None
    return Cleaned(cleaned, len(cleaned), words, language)
