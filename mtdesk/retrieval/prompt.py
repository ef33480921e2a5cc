"""The prompt an LLM provider sees: instructions, the retrieved knowledge, recent turns.

:func:`fit_prompt` is the one prompt builder (the providers' path in
:mod:`mtdesk.actors.llm` and :func:`build_prompt` both use it). It returns chat
messages, a system message first, that fit a token budget: by default the model's
context window (:func:`context_window`: ``bot.context_tokens`` when set, else the
window of a known model family, else :data:`DEFAULT_CONTEXT_TOKENS`) less the answer's
``bot.max_tokens`` and a margin. Sizes are estimated with :func:`estimate_tokens`, which
counts high (at least a token a word and one per three characters), so an estimate
within the budget is within the provider's real count.

What is cut first when space runs out: the oldest turns, then the weakest passages; the
instructions and the newest message are always kept (the message trimmed only if it
alone overflows, the bot's own prompt only if it would leave no room).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from mtdesk.core.ports import BotConfig, ChatMessage, Passage
from mtdesk.retrieval.tokens import count_tokens, trim_to_tokens

DEFAULT_CONTEXT_TOKENS = 8192  # a safe size for a model we do not know
# Context windows of model families, matched as a substring of the lower-cased model
# name (the first match wins: more specific names first).
KNOWN_CONTEXTS: tuple[tuple[str, int], ...] = (
    ("gpt-4o", 128_000), ("gpt-4.1", 1_000_000), ("gpt-4-turbo", 128_000),
    ("gpt-3.5-turbo", 16_385), ("o1", 128_000), ("o3", 200_000), ("o4-mini", 200_000),
    ("claude", 200_000), ("gemini", 1_000_000), ("llama-v3p1", 131_072),
    ("llama-3.1", 131_072), ("llama-3.3", 131_072), ("mixtral", 32_768),
    ("moonshot-v1-8k", 8_192), ("moonshot-v1-32k", 32_768), ("moonshot-v1-128k", 131_072),
    ("kimi", 131_072), ("minimax", 1_000_000), ("deepseek", 65_536), ("qwen", 32_768),
)
MARGIN_TOKENS = 64  # the chat format's own tokens, and a little slack
_SPACES = re.compile(r"\s+")

KNOWLEDGE_ONLY = (
    "Answer ONLY from the knowledge below. If it does not contain the answer, reply with "
    "exactly this sentence and nothing else: \"{fallback}\". Do not use outside knowledge, "
    "do not guess prices, dates, policies or contact details."
)
GENERAL = (
    "Prefer the knowledge below and follow it when it applies. When it has nothing "
    "relevant you may answer from general knowledge, but never invent facts about this "
    "business (prices, policies, hours, contact details); for those, if the knowledge is "
    "silent, reply: \"{fallback}\"."
)
CITATION = "When you use a piece of knowledge, name its source in brackets, e.g. [returns policy]."
NO_KNOWLEDGE = (
    "No knowledge about this business is available to you. Never state facts about the "
    "business (products, prices, stock, dates, policies, hours, contact details) and do "
    "not use outside knowledge about it: to any question about the business reply with "
    "exactly this sentence and nothing else: \"{fallback}\". You may answer greetings "
    "and thanks briefly, and ask the customer what they need."
)


def shown_passages(bot: BotConfig, passages: Sequence[Passage]) -> list[Passage]:
    """The passages an LLM may be shown: those scoring at least ``bot.min_score``."""
    return [p for p in passages if p.score >= bot.min_score]


def grounding_rules(bot: BotConfig) -> str:
    """The rule for a prompt WITH knowledge (``general`` also keeps it without)."""
    rule = GENERAL if bot.grounding == "general" else KNOWLEDGE_ONLY
    return rule.format(fallback=bot.fallback_message) + " " + CITATION


def no_knowledge_rule(bot: BotConfig) -> str:
    """The rule of a ``knowledge_only`` bot that has no knowledge to show the model (the
    tenant has no knowledge base yet, or it could not be read): no business facts at
    all; questions about the business get the fallback message."""
    return NO_KNOWLEDGE.format(fallback=bot.fallback_message)


def _one_line(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def render_passage(number: int, passage: Passage) -> str:
    """One line ``[n] (source: NAME) text`` (a Q&A pair: ``Q: … A: …``): the format the
    fake provider (and people) read."""
    body = f"Q: {passage.text} A: {passage.answer}" if passage.answer else passage.text
    return f"[{number}] (source: {_one_line(passage.source) or 'unknown'}) {_one_line(body)}"


def context_window(bot: BotConfig, model: str | None = None) -> int:
    """The context size (in tokens) of ``model`` (default ``bot.model``) for this bot."""
    if bot.context_tokens > 0:
        return bot.context_tokens
    name = (model if model is not None else bot.model).lower()
    for family, size in KNOWN_CONTEXTS:
        if family in name:
            return size
    return DEFAULT_CONTEXT_TOKENS


def estimate_tokens(text: str) -> int:
    """A high estimate of a BPE tokenizer's count for ``text`` (our word tokenizer counts
    0.75-0.9 of it for English; scripts without spaces count about a token a character)."""
    return max(math.ceil(count_tokens(text) * 4 / 3), math.ceil(len(text) / 3))


def _trim(text: str, budget: int) -> str:
    """A prefix of ``text`` whose estimate is at most ``budget``."""
    if estimate_tokens(text) <= budget:
        return text
    cut = trim_to_tokens(text, max(1, budget * 3 // 4))
    return cut[: max(1, budget * 3)].rstrip()


def prompt_budget(bot: BotConfig, model: str | None = None) -> int:
    """Tokens the prompt may take for ``model``: its window less the answer and a margin."""
    return max(256, context_window(bot, model) - bot.max_tokens - MARGIN_TOKENS)


IMAGE_TOKENS = 1100


def fit_prompt(
    bot: BotConfig, messages: Sequence[ChatMessage], passages: Sequence[Passage], *,
    budget_tokens: int | None = None, model: str | None = None,
) -> list[ChatMessage]:
    """The prompt: a system message (the bot's prompt, its grounding rule and the
    passages that fit), the turns that fit, and the newest message.

    ``messages`` are the conversation, oldest first, ending with the message to answer;
    ``passages`` are the ones the model may be shown, best first. ``budget_tokens``
    defaults to :func:`prompt_budget` for ``model`` (default ``bot.model``).
    """
    budget = prompt_budget(bot, model) if budget_tokens is None else budget_tokens
    *history, last = list(messages) or [ChatMessage("user", "")]
    with_knowledge = f"{grounding_rules(bot)}\n\nKnowledge:\n"
    if bot.grounding == "general":
        without_knowledge = f"{grounding_rules(bot)}\n\nKnowledge: (nothing relevant was found)"
    else:
        without_knowledge = no_knowledge_rule(bot)
    rule_cost = max(estimate_tokens(with_knowledge), estimate_tokens(without_knowledge)) + 8
    own = _trim(bot.system_prompt.strip(), max(0, (budget - rule_cost) // 2))
    room = budget - rule_cost - estimate_tokens(own)
    # A picture costs a provider up to ~1,100 tokens (OpenAI's high detail of a large one).
    room -= IMAGE_TOKENS * len(last.images)
    newest = ChatMessage(last.role, _trim(last.content, max(16, room // 2)), last.images)
    room -= estimate_tokens(newest.content) + 4
    knowledge: list[str] = []
    passage_room = max(0, int(room * 0.7)) if history else max(0, room)
    used = 0
    for i, passage in enumerate(passages, 1):
        block = render_passage(i, passage)
        cost = estimate_tokens(block) + 2
        if used + cost > passage_room:
            left = passage_room - used
            if left > 40:  # a cut passage is still worth having if a good part of it fits
                knowledge.append(_trim(block, left - 2))
                used = passage_room
            break
        knowledge.append(block)
        used += cost
    room -= used
    turns: list[ChatMessage] = []
    for turn in reversed(history):
        cost = estimate_tokens(turn.content) + 4
        if cost > room:
            break
        turns.insert(0, turn)
        room -= cost
    rule = with_knowledge + "\n".join(knowledge) if knowledge else without_knowledge
    system = f"{own}\n\n{rule}" if own else rule
    return [ChatMessage("system", system), *turns, newest]


def build_prompt(
    bot: BotConfig, query: str, passages: Sequence[Passage], history: Sequence[ChatMessage] = (),
    *, budget_tokens: int = 3000,
) -> list[ChatMessage]:
    """:func:`fit_prompt` for one question: ``history`` holds earlier turns, oldest
    first, without ``query``; ``passages`` are shown as given (best first)."""
    return fit_prompt(bot, [*history, ChatMessage("user", query)], passages,
                      budget_tokens=budget_tokens)
