"""The knowledge base: sources → text → chunks → vectors → sharded FAISS search.

What it offers (each module says more):

- :mod:`.extract`, :mod:`.html`: files (PDF, DOCX, TXT, Markdown, HTML, CSV of Q&A) → Document
- :mod:`.crawl`, :mod:`.urlpolicy`: one page or a bounded site crawl, SSRF-checked
- :mod:`.chunking`: structure-respecting, token-sized chunks with overlap
- :mod:`.embedders`: ``Embedder`` (lexical offline default, local MiniLM, any provider)
- :mod:`.store`: sources, chunks, vectors and the change log in Redis
- :mod:`.vectors`, :mod:`.shard`, :mod:`.placement`: FAISS indexes and their shards
- :mod:`.search`: ``KnowledgeRetriever`` (the ``Retriever`` port), ``local_retriever``
- :mod:`.ingest`: ``KnowledgeService`` (add, list, re-sync, delete; background worker)
- :mod:`.extractive`: ``ExtractiveModel``, the no-LLM ``ChatModel``
- :mod:`.prompt`: ``build_prompt`` for LLM providers
"""
