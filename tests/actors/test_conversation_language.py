"""The customer's language, as the customer sees it: whatever the knowledge base's
language, the model is told to answer in the language the customer writes in; the
conversation keeps it, so a short "ok" does not flip it. Real shard, real Redis, the
fake Graph API and LLM (the prompt it receives is what is asserted)."""

from __future__ import annotations

from shardkit import desk, eventually

from mtdesk.core.redis import Redis
from mtdesk.retrieval.language import language_name

# What customers write, per language (the knowledge base behind the bot is English).
WRITTEN = {
    "es": "Hola, ¿a qué hora abren el sábado?",
    "fr": "Bonjour, est-ce que vous livrez en Suisse ?",
    "de": "Wie lange dauert der Versand nach Österreich?",
    "pt": "Olá, vocês entregam no Brasil? Quanto custa o frete?",
    "it": "Buongiorno, a che ora aprite il sabato?",
    "pl": "Dzień dobry, czy wysyłacie zamówienia do Polski?",
    "tr": "Merhaba, siparişimi iade etmek istiyorum.",
    "ru": "Здравствуйте, когда вы открыты в субботу?",
    "ja": "土曜日は何時に開きますか？",
    "zh": "你们星期六几点开门？",
    "ar": "مرحبا، متى تفتحون يوم السبت؟",
    "en": "Hi! When are you open on Saturday?",
}


def _system(prompt: list[dict[str, object]]) -> str:
    return str(prompt[0]["content"]) if prompt and prompt[0]["role"] == "system" else ""


async def test_the_model_is_told_to_answer_in_the_customers_language(
    redis: Redis, redis_url: str,
) -> None:
    async with desk(redis, redis_url) as d:
        await (await d.shard()).start()
        for code, text in WRITTEN.items():  # one customer per language
            await d.push(d.message(text, user=f"U-{code}"))
        await eventually(lambda: len(d.graph.sends) == len(WRITTEN))
        told = {}
        for request in d.llm.chat_requests:
            [code] = [c for c, text in WRITTEN.items() if text in request.prompt_text()]
            told[code] = _system(request.messages)
        for code in WRITTEN:
            assert f"Always reply in {language_name(code)} (language code \"{code}\")" in told[code]


async def test_a_short_ok_keeps_the_conversations_language(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        await (await d.shard()).start()
        await d.push(d.message("Bonjour, est-ce que vous livrez en Suisse ?", user="U1"))
        await eventually(lambda: len(d.graph.sends) == 1)
        await d.push(d.message("ok", user="U1"))
        await eventually(lambda: len(d.graph.sends) == 2)
        await d.push(d.message("Actually, can you answer in English please?", user="U1"))
        await eventually(lambda: len(d.graph.sends) == 3)
        first, ok, switched = d.llm.chat_requests
        assert "Always reply in French" in _system(first.messages)
        assert "Always reply in French" in _system(ok.messages)  # "ok" says too little
        assert "Always reply in English" in _system(switched.messages)


async def test_with_no_clear_language_yet_the_model_is_told_none(
    redis: Redis, redis_url: str,
) -> None:
    async with desk(redis, redis_url) as d:
        await (await d.shard()).start()
        await d.push(d.message("👍", user="U7"))
        await eventually(lambda: len(d.graph.sends) == 1)
        [request] = d.llm.chat_requests
        assert "Always reply in" not in _system(request.messages)
