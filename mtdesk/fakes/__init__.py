"""Fake external services as real local aiohttp servers (tests, demo, benchmarks).

- :mod:`mtdesk.fakes.graph` — ``FakeGraphAPI`` (Send API, media, error injection) and
  ``spawn_graph()`` to run it in a child process.
- :mod:`mtdesk.fakes.llm` — ``FakeLLM`` (OpenAI-compatible chat, streaming, embeddings,
  failure modes) and ``spawn_llm()``.
- :mod:`mtdesk.fakes.meta` — simulated Meta: signed real-format webhook bodies.

Each is an async context manager serving on 127.0.0.1 port 0 (``async with FakeX() as f:
f.base_url``) and a process (``python -m mtdesk.fakes.<name> --port 0``).
"""
