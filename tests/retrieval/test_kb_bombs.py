"""Hostile uploads: a zip bomb, XML entities, a file that needs too much memory or time.
Each is a 400 naming the problem, and the serving process is not hurt."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from kb_harness import admin_client, make_docx

from mtdesk.core.errors import ValidationError
from mtdesk.core.redis import Redis
from mtdesk.retrieval.sandbox import ExtractionSandbox

OPERATOR = "op-token-kb-bomb-tests"
API = "/admin/api/v1"
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_DOC_HEAD = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    b"<w:body><w:p><w:r><w:t>"
)
_DOC_TAIL = b"</w:t></w:r></w:p></w:body></w:document>"


def docx_with_document_xml(write_body: object) -> bytes:
    """A real DOCX whose word/document.xml is replaced by what ``write_body(stream)`` writes."""
    base = zipfile.ZipFile(io.BytesIO(make_docx([("Normal", "placeholder")])))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in base.infolist():
            if info.filename == "word/document.xml":
                target = zipfile.ZipInfo("word/document.xml")
                target.compress_type = zipfile.ZIP_DEFLATED
                with z.open(target, "w", force_zip64=True) as member:
                    write_body(member)  # type: ignore[operator]
            else:
                z.writestr(info, base.read(info.filename))
    return out.getvalue()


def bomb_docx(letters: int = 300 * 1024 * 1024) -> bytes:
    def body(stream: io.RawIOBase) -> None:
        stream.write(_DOC_HEAD)
        block = b"a" * (1 << 20)
        for _ in range(letters // len(block)):
            stream.write(block)
        stream.write(_DOC_TAIL)

    return docx_with_document_xml(body)


def entities_docx() -> bytes:
    """Billion laughs: each entity is ten of the previous one."""
    lines = ['<!ENTITY lol0 "lol">']
    lines += [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    prolog = ('<?xml version="1.0"?>\n<!DOCTYPE w:document [\n' + "\n".join(lines) + "\n]>\n").encode()

    def body(stream: io.RawIOBase) -> None:
        stream.write(prolog + _DOC_HEAD.split(b"\n", 1)[1] + b"&lol9;" + _DOC_TAIL)

    return docx_with_document_xml(body)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
async def client(redis: Redis, tmp_path: Path) -> AsyncIterator[TestClient]:
    async with admin_client(redis, tmp_path, OPERATOR) as c:
        yield c


async def upload(client: TestClient, data: bytes, name: str = "manual.docx") -> aiohttp.ClientResponse:
    resp = await client.post(f"{API}/tenants", json={"name": "Acme", "email": "ops@acme.test"},
                             headers={"Authorization": f"Bearer {OPERATOR}"})
    auth = {"Authorization": f"Bearer {(await resp.json())['api_key']}"}
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type=DOCX_TYPE)
    resp = await client.post(f"{API}/knowledge", headers=auth, data=form)
    listing = await (await client.get(f"{API}/knowledge", headers=auth)).json()
    assert listing["sources"] == []  # nothing half-created
    return resp


async def test_a_docx_bomb_is_refused_before_it_is_unpacked_and_the_server_does_not_grow(
    client: TestClient,
) -> None:
    data = bomb_docx()
    assert len(data) < 400 * 1024  # ~306 KB that would unpack to 300 MB
    before = rss_bytes()
    resp = await upload(client, data)
    grown = rss_bytes() - before
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err["field"] == "file" and "word/document.xml" in err["message"]
    assert "unpack" in err["message"] or "compressed" in err["message"]
    assert grown < 64 * 1024 * 1024, f"the serving process grew by {grown >> 20} MB"


async def test_a_docx_declaring_nested_entities_is_refused(client: TestClient) -> None:
    resp = await upload(client, entities_docx())
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err["field"] == "file" and "entities" in err["message"]


async def test_an_upload_that_needs_more_memory_than_allowed_is_refused_not_fatal() -> None:
    # A plain document whose reading needs more than a tiny address space: the child
    # process hits its limit, the caller gets a 400-style refusal and lives on.
    sandbox = ExtractionSandbox(memory_bytes=16 * 1024 * 1024)
    with pytest.raises(ValidationError) as err:
        await sandbox.extract(make_docx([("Normal", "We open at nine.")]), "hours.docx")
    assert err.value.field == "file" and "memory" in err.value.problem
    # The same sandbox, with room, reads it.
    roomy = ExtractionSandbox()
    doc = await roomy.extract(make_docx([("Normal", "We open at nine.")]), "hours.docx")
    assert "We open at nine." in doc.sections[0].text


async def test_an_upload_that_takes_longer_than_allowed_is_stopped() -> None:
    sandbox = ExtractionSandbox(timeout_s=0.001)
    big = make_docx([("Normal", f"Paragraph {i} of a long manual.") for i in range(3000)])
    with pytest.raises(ValidationError) as err:
        await sandbox.extract(big, "manual.docx")
    assert err.value.field == "file" and "longer than" in err.value.problem


def test_declared_sizes_and_ratios_are_checked_without_unpacking() -> None:
    from mtdesk.retrieval.containers import check_zip_container

    with pytest.raises(ValidationError) as err:
        check_zip_container(bomb_docx(8 * 1024 * 1024))  # 8 MB of one letter: ~1000:1
    assert "compressed" in err.value.problem and "word/document.xml" in err.value.problem
    check_zip_container(make_docx([("Normal", "An ordinary document.")]))  # passes
