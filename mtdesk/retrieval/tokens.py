"""Token counting and the word normalization the lexical parts share.

Sizes in the knowledge base are counted in *tokens* of a simple regex word tokenizer
(a run of letters/digits, or one punctuation mark). It is not a model's BPE tokenizer:
for English prose it counts about 0.75-0.9 of what a BPE tokenizer counts, which is
close enough to size chunks and prompt budgets with a margin.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    s t don doesn didn isn aren wasn weren won wouldn shouldn couldn can't i'm i've let us
    please hi hello thanks thank get got""".split()
)


def count_tokens(text: str) -> int:
    """Number of tokens of ``text`` under the regex word tokenizer."""
    return len(_TOKEN.findall(text))


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def stem(word: str) -> str:
    """A light English suffix stripper (refunds → refund, shipping → ship)."""
    w = word
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    for suffix in ("ing", "ed", "es", "ly", "s"):
        if len(w) - len(suffix) >= 3 and w.endswith(suffix):
            w = w[: -len(suffix)]
            if suffix in ("ing", "ed") and len(w) > 3 and w[-1] == w[-2]:
                w = w[:-1]  # shipping → shipp → ship
            return w
    return w


def terms(text: str) -> list[str]:
    """Lower-cased, stemmed content words of ``text`` (stopwords dropped)."""
    out: list[str] = []
    for raw in _WORD.findall(text.lower()):
        if raw in STOPWORDS:
            continue
        out.append(stem(raw))
    return out


def trim_to_tokens(text: str, budget: int) -> str:
    """The longest prefix of ``text`` holding at most ``budget`` tokens."""
    if budget <= 0:
        return ""
    for i, match in enumerate(_TOKEN.finditer(text)):
        if i == budget:
            return text[: match.start()].rstrip()
    return text
