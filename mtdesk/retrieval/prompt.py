"""The prompt an LLM provider sees: instructions, the retrieved knowledge, recent turns.

``build_prompt(bot, query, passages, history, budget_tokens=…)`` returns chat messages
that fit ``budget_tokens`` (counted with :func:`~mtdesk.retrieval.tokens.count_tokens`,
a word tokenizer: keep a margin under the model's real window). What is cut first when
space runs out: the oldest turns, then the weakest passages; the instructions and the
user's question are always kept (the question trimmed only if it alone overflows).
"""

from __future__ import annotations

from collections.abc import Sequence

from mtdesk.core.ports import BotConfig, ChatMessage, Passage
from mtdesk.retrieval.tokens import count_tokens, trim_to_tokens

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


def render_passage(number: int, passage: Passage) -> str:
    if passage.answer is not None:
        body = f"Q: {passage.text}\nA: {passage.answer}"
    else:
        body = passage.text
    # One line "[n] (source: NAME) text": the format the fake provider (and people) read.
    return f"[{number}] (source: {passage.source}) {body}"


def build_prompt(
    bot: BotConfig, query: str, passages: Sequence[Passage], history: Sequence[ChatMessage] = (),
    *, budget_tokens: int = 3000,
) -> list[ChatMessage]:
    """System message (prompt + grounding rules + knowledge), recent turns, the question.

    ``history`` holds earlier turns, oldest first, without the current ``query``.
    ``passages`` are taken best first (as the retriever returns them).
    """
    head = f"{bot.system_prompt.strip()}\n\n{grounding_rules(bot)}"
    budget = budget_tokens - count_tokens(head) - 8
    question = trim_to_tokens(query, max(16, budget // 2))
    budget -= count_tokens(question) + 4
    knowledge: list[str] = []
    passage_budget = max(0, int(budget * 0.7)) if history else budget
    used = 0
    for i, passage in enumerate(passages, 1):
        block = render_passage(i, passage)
        cost = count_tokens(block) + 2
        if used + cost > passage_budget:
            room = passage_budget - used
            if room > 40:  # a cut passage is still worth having if a good part of it fits
                knowledge.append(trim_to_tokens(block, room - 2))
                used = passage_budget
            break
        knowledge.append(block)
        used += cost
    budget -= used
    turns: list[ChatMessage] = []
    for turn in reversed(history):
        cost = count_tokens(turn.content) + 4
        if cost > budget:
            break
        turns.insert(0, turn)
        budget -= cost
    system = head
    if knowledge:
        system += "\n\nKnowledge:\n" + "\n\n".join(knowledge)
    else:
        system += "\n\nKnowledge: (nothing relevant was found)"
    return [ChatMessage("system", system), *turns, ChatMessage("user", question)]
