"""Classification of inbound text: sentiment (VADER, a lexicon model tuned for social media),
language (py3langid, when the platform does not say), the admin's keyword lists, and whether
a post asks anything of us."""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import py3langid
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

# Below this many letters a language guess is noise ("ok", "thx").
_MIN_LETTERS_FOR_LANGUAGE = 12
_LETTERS = re.compile(r"[^\W\d_]", re.UNICODE)
_NEGATIVE = -0.05


@cache
def _analyzer() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def sentiment_score(text: str) -> float | None:
    """VADER's compound score in -1..1, or None for text with nothing to judge."""
    if not text.strip():
        return None
    return float(_analyzer().polarity_scores(text)["compound"])


def language_of(text: str, *, stated: str = "") -> str:
    """The platform's language tag when it gives one, else a guess from the text, else ""."""
    if stated:
        return stated
    if len(_LETTERS.findall(text)) < _MIN_LETTERS_FOR_LANGUAGE:
        return ""
    return str(py3langid.classify(text)[0])


@dataclass(frozen=True)
class KeywordMatcher:
    """Compiled keyword lists: name -> one case-insensitive, whole-word pattern."""

    patterns: tuple[tuple[str, re.Pattern[str]], ...]

    @classmethod
    def build(cls, lists: Sequence[tuple[str, Sequence[str]]]) -> "KeywordMatcher":
        compiled = []
        for name, terms in lists:
            words = [re.escape(t.strip()) for t in terms if t.strip()]
            if words:
                alternatives = "|".join(sorted(words, key=len, reverse=True))
                compiled.append((name, re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.I)))
        return cls(tuple(compiled))

    def match(self, text: str) -> list[str]:
        return [name for name, pattern in self.patterns if pattern.search(text)]


def asks_for_action(text: str, *, sentiment: float | None, keywords: Sequence[str]) -> bool:
    """A question, a complaint, or a watched topic: something a person should look at."""
    return "?" in text or (sentiment is not None and sentiment <= _NEGATIVE) or bool(keywords)
