"""Shared pieces of the knowledge-base tests: settings, a local web site, tiny files."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mtdesk.admin.app import setup_admin
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS
from mtdesk.core.clock import SystemClock
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings


def kb_settings(tmp_path: Path, **overrides: object) -> Settings:
    fields: dict[str, object] = {"data_dir": str(tmp_path / "data"), "kb_embedder": "lexical"}
    fields.update(overrides)
    return Settings(**fields)  # type: ignore[arg-type]


@asynccontextmanager
async def admin_client(redis: Redis, tmp_path: Path, operator: str) -> AsyncIterator[TestClient]:
    """The admin app (lexical embedder, data under ``tmp_path``) on a real local socket."""
    app = web.Application()
    app[REDIS] = redis
    app[SETTINGS] = Settings.from_env(
        {"MTDESK_ADMIN_TOKEN": operator, "MTDESK_DATA_DIR": str(tmp_path), "MTDESK_KB_EMBEDDER": "lexical"},
        dotenv=None,
    )
    app[CLOCK] = SystemClock()
    setup_admin(app)
    async with TestClient(TestServer(app)) as client:
        yield client


def make_pdf(lines: list[str]) -> bytes:
    """A minimal, valid one-page PDF whose text is ``lines`` (built by hand, Helvetica)."""
    text_ops = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(
        "(" + ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") '" for ln in lines
    ) + " ET"
    stream = text_ops.encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(f"{i} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def make_docx(paragraphs: list[tuple[str, str]]) -> bytes:
    """A DOCX of (style, text) paragraphs, e.g. ("Heading 1", "Returns")."""
    import docx

    document = docx.Document()
    for style, text in paragraphs:
        document.add_paragraph(text, style=style)
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


Pages = dict[str, tuple[int, str, str]]  # path → (status, content type, body)


@asynccontextmanager
async def local_site(
    pages: Pages, *, redirects: dict[str, str] | None = None,
    hook: Callable[[web.Request], None] | None = None,
) -> AsyncIterator[str]:
    """A real HTTP site on 127.0.0.1:0 serving ``pages``; yields its root URL."""
    redirects = redirects or {}

    async def handle(request: web.Request) -> web.Response:
        if hook is not None:
            hook(request)
        if request.path in redirects:
            raise web.HTTPFound(redirects[request.path])
        if request.path not in pages:
            return web.Response(status=404, text="not found")
        status, ctype, body = pages[request.path]
        return web.Response(status=status, body=body.encode(), content_type=ctype)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def html_page(title: str, body: str, links: list[str] = ()) -> str:  # type: ignore[assignment]
    anchors = "".join(f'<a href="{href}">{href}</a> ' for href in links)
    return (
        f"<html><head><title>{title}</title></head><body><nav>Home | Shop | Help</nav>"
        f"<main><h1>{title}</h1>{body}<p>{anchors}</p></main><footer>© Acme</footer></body></html>"
    )
