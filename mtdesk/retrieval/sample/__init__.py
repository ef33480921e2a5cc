"""A sample knowledge base of a made-up business (Brightwave Cycles, a bicycle shop):
an FAQ sheet (CSV), pages (HTML), documents (Markdown, text), and 60 labelled questions
with the source that answers each. ``mtdesk demo`` loads it; the retrieval quality
benchmark scores embedders on it.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from mtdesk.retrieval.ingest import KnowledgeService

FILES = ("faq.csv", "shipping-returns.md", "repairs.html", "rentals.txt", "warranty.md", "club.html", "about.md")


# Questions the sample business's knowledge does not answer: the bot should say it does not know.
OFF_TOPIC = (
    "do you sell skateboards", "what is the capital of France", "can I bring my dog",
    "do you accept bitcoin", "do you sell cars", "who won the world cup",
    "will it rain tomorrow", "can you deliver pizza", "how do I reset my router",
    "what is your CEO salary", "do you repair laptops", "do you sell surfboards",
)


class Question(msgspec.Struct, frozen=True):
    q: str
    source: str


def sample_files() -> list[tuple[str, bytes]]:
    """(file name, bytes) of every sample source."""
    root = resources.files(__name__)
    return [(name, root.joinpath(name).read_bytes()) for name in FILES]


def questions() -> list[Question]:
    raw = resources.files(__name__).joinpath("questions.json").read_bytes()
    return msgspec.json.decode(raw, type=list[Question])


async def load_sample(service: KnowledgeService, tenant: str) -> list[str]:
    """Queue every sample file as a knowledge source of ``tenant``; returns the source ids
    (``await service.drain()`` or poll the sources to wait until they are ready)."""
    ids = []
    for name, data in sample_files():
        info = await service.add_file(tenant, name, data)
        ids.append(info.id)
    return ids
