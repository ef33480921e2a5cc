"""Document extraction in a child process with a memory and a time limit.

The process that serves webhooks must survive any upload. :class:`ExtractionSandbox`
runs :func:`mtdesk.retrieval.extract.extract` in a fresh child process (forked from a
small fork server, so no Ray or event-loop state is copied) whose address space is
capped with ``RLIMIT_AS`` and whose CPU time is capped with ``RLIMIT_CPU``; the parent
kills it when ``timeout_s`` passes. Zip-based files are checked for bombs in the parent
first (declared sizes only, nothing unpacked: :mod:`mtdesk.retrieval.containers`).

What a caller may rely on: :meth:`ExtractionSandbox.extract` returns the
:class:`~mtdesk.retrieval.documents.Document` or raises
:class:`~mtdesk.core.errors.ValidationError` on field ``file`` naming the problem (the
extractor's own refusal, "needs more memory than allowed", "took longer than allowed",
"stopped unexpectedly"); at most ``concurrency`` children run at once.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import resource
import signal
from pathlib import PurePath
from typing import Any

import msgspec

from mtdesk.core.errors import ValidationError
from mtdesk.retrieval.containers import check_zip_container
from mtdesk.retrieval.documents import Document
from mtdesk.retrieval.extract import MAX_FILE_BYTES, extract, kind_of

MEMORY_BYTES = 768 * 1024 * 1024
TIMEOUT_S = 60.0
CONCURRENCY = 2

_CONTEXT: Any = None


def _context() -> Any:
    global _CONTEXT
    if _CONTEXT is None:
        ctx = multiprocessing.get_context("forkserver")
        # The fork server imports the extractors once (missing ones are skipped); each
        # child is a cheap fork of it.
        ctx.set_forkserver_preload(["mtdesk.retrieval.sandbox", "docx", "pypdf", "selectolax.lexbor"])
        _CONTEXT = ctx
    return _CONTEXT


def _child(
    conn: multiprocessing.connection.Connection, data: bytes, filename: str,
    content_type: str | None, max_bytes: int, memory_bytes: int, cpu_s: int,
) -> None:
    """The child's body: limit itself, extract, send one message back."""
    try:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        doc = extract(data, filename, content_type, max_bytes=max_bytes)
        conn.send_bytes(b"D" + msgspec.msgpack.encode(doc))
    except ValidationError as exc:
        conn.send_bytes(b"E" + msgspec.msgpack.encode([exc.field, exc.problem]))
    except MemoryError:
        conn.send_bytes(b"M")
    except Exception as exc:  # the extractor's own bug or an unexpected format
        conn.send_bytes(b"X" + type(exc).__name__.encode()[:80])
    finally:
        conn.close()


class ExtractionSandbox:
    def __init__(
        self, *, memory_bytes: int = MEMORY_BYTES, timeout_s: float = TIMEOUT_S,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.memory_bytes = memory_bytes
        self.timeout_s = timeout_s
        self._slots = asyncio.Semaphore(concurrency)

    async def extract(
        self, data: bytes, filename: str, content_type: str | None = None, *,
        max_bytes: int = MAX_FILE_BYTES,
    ) -> Document:
        if len(data) > max_bytes:
            raise ValidationError("file", f"is {len(data)} bytes; the limit is {max_bytes}")
        if kind_of(filename, content_type) == "docx" and data[:2] == b"PK":
            check_zip_container(data)  # cheap, and refuses a bomb before any process starts
        async with self._slots:
            return await asyncio.to_thread(self._run, data, filename, content_type, max_bytes)

    def _run(self, data: bytes, filename: str, content_type: str | None, max_bytes: int) -> Document:
        ctx = _context()
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_child, name="mtdesk-extract", daemon=True,
            args=(sender, data, filename, content_type, max_bytes, self.memory_bytes,
                  int(self.timeout_s) + 1),
        )
        proc.start()
        sender.close()
        try:
            message = receiver.recv_bytes() if receiver.poll(self.timeout_s) else None
        except EOFError:  # the child died without a word (killed by a limit, crashed)
            message = b""
        finally:
            receiver.close()
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=5)
        kind = PurePath(filename or "").suffix.lower().lstrip(".") or "file"
        if message is None or proc.exitcode == -signal.SIGXCPU:
            raise ValidationError("file", f"took longer than {self.timeout_s:g} s to read; it was stopped")
        if message[:1] == b"D":
            return msgspec.msgpack.decode(message[1:], type=Document)
        if message[:1] == b"E":
            field, problem = msgspec.msgpack.decode(message[1:], type=tuple[str, str])
            raise ValidationError(field, problem)
        if message[:1] == b"M" or proc.exitcode is not None and proc.exitcode < 0:
            raise ValidationError(
                "file", f"needs more memory to read than allowed ({self.memory_bytes // (1 << 20)} MB); "
                f"it may be a decompression bomb or a damaged {kind}")
        detail = message[1:].decode(errors="replace") if message[:1] == b"X" else "no answer"
        raise ValidationError("file", f"is not a readable {kind} ({detail})")
