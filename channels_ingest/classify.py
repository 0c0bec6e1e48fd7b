"""Classification of inbound text: sentiment from VADER, a lexicon model tuned for social media."""

from functools import cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer


@cache
def _analyzer() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def sentiment_score(text: str) -> float | None:
    """VADER's compound score in -1..1, or None for text with nothing to judge."""
    if not text.strip():
        return None
    return float(_analyzer().polarity_scores(text)["compound"])
