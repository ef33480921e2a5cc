"""Files → :class:`Document`, with well-kept extractors (pypdf, python-docx, selectolax).

``extract(data, filename, content_type)`` picks the extractor by extension (then by
content type) and raises :class:`ValidationError` (field ``file``) naming the problem
for files that are too large, empty, encrypted, unreadable or of a kind we do not read,
and for DOCX archives that would unpack too large or declare XML entities
(:mod:`mtdesk.retrieval.containers`). It runs in the caller's process: the server runs
it through :class:`mtdesk.retrieval.sandbox.ExtractionSandbox` (memory and time limits).
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import PurePath

from mtdesk.core.errors import ValidationError
from mtdesk.retrieval.containers import check_no_dtd, check_zip_container
from mtdesk.retrieval.documents import Document, QAPair, Section

MAX_FILE_BYTES = 20 * 1024 * 1024

KINDS = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".csv": "csv",
}
_BY_TYPE = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/plain": "txt",
    "text/markdown": "md",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/csv": "csv",
}
_HEADING_MD = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def kind_of(filename: str, content_type: str | None = None) -> str:
    """The extractor for a file, by extension first, then by MIME type."""
    ext = PurePath(filename or "").suffix.lower()
    if ext in KINDS:
        return KINDS[ext]
    base = (content_type or "").split(";")[0].strip().lower()
    if base in _BY_TYPE:
        return _BY_TYPE[base]
    raise ValidationError(
        "file", f"unsupported file type {ext or base or '(none)'!r}; use PDF, DOCX, TXT, MD, HTML or CSV"
    )


def extract(
    data: bytes, filename: str, content_type: str | None = None, *, max_bytes: int = MAX_FILE_BYTES
) -> Document:
    """Extract text from a file's bytes. Raises ValidationError(field="file")."""
    if len(data) > max_bytes:
        raise ValidationError("file", f"is {len(data)} bytes; the limit is {max_bytes}")
    if not data.strip():
        raise ValidationError("file", "is empty")
    kind = kind_of(filename, content_type)
    title = PurePath(filename or "").stem
    doc = _EXTRACTORS[kind](data, title)
    if doc.empty:
        raise ValidationError("file", f"has no extractable text ({kind})")
    return doc


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ("utf-8-sig",):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    if b"\x00" in data[:4096]:
        raise ValidationError("file", "looks binary, not text")
    return data.decode("cp1252", errors="replace")


def _paragraphs(text: str) -> str:
    """Normalize line endings and collapse runs of blank lines to one."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()


def extract_text(data: bytes, title: str) -> Document:
    return Document(title=title, sections=(Section(text=_paragraphs(_decode(data))),))


def extract_markdown(data: bytes, title: str) -> Document:
    return markdown_document(_decode(data), title)


def markdown_document(text: str, title: str) -> Document:
    """Sections split at Markdown headings; the heading path is kept for each."""
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    buf: list[str] = []
    in_code = False

    def flush() -> None:
        body = _paragraphs("\n".join(buf))
        if body:
            sections.append(Section(heading=tuple(h for _, h in path), text=body))
        buf.clear()

    for line in text.replace("\r\n", "\n").split("\n"):
        if line.lstrip().startswith("```"):
            in_code = not in_code
        match = None if in_code else _HEADING_MD.match(line)
        if match:
            flush()
            level = len(match.group(1))
            path = [(lv, h) for lv, h in path if lv < level] + [(level, match.group(2))]
            continue
        buf.append(line)
    flush()
    doc_title = next((h for lv, h in path[:1] if lv == 1), "") if not sections else ""
    first = sections[0].heading[0] if sections and sections[0].heading else ""
    return Document(title=title or doc_title or first, sections=tuple(sections))


def extract_pdf(data: bytes, title: str) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # An empty user password is common ("owner-locked" PDFs); try it before refusing.
            try:
                if not reader.decrypt(""):
                    raise ValidationError("file", "is an encrypted PDF; upload it without a password")
            except ValidationError:
                raise
            except Exception as exc:
                raise ValidationError("file", "is an encrypted PDF; upload it without a password") from exc
        pages = [(page.extract_text() or "") for page in reader.pages]
    except ValidationError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise ValidationError("file", f"is not a readable PDF ({type(exc).__name__})") from exc
    meta_title = ""
    try:
        meta_title = (reader.metadata.title or "") if reader.metadata else ""
    except Exception:  # broken metadata must not cost us the text
        meta_title = ""
    sections = tuple(
        Section(heading=(f"page {i}",), text=_paragraphs(text)) for i, text in enumerate(pages, 1) if text.strip()
    )
    return Document(title=meta_title.strip() or title, sections=sections)


def extract_docx(data: bytes, title: str) -> Document:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    if data[:4] == b"\xd0\xcf\x11\xe0":  # OLE container: legacy .doc or an encrypted .docx
        raise ValidationError("file", "is encrypted or a legacy .doc; save it as an unprotected .docx")
    # Before python-docx unpacks anything: declared sizes and ratios, then no DTDs.
    check_zip_container(data)
    check_no_dtd(data)
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ValidationError("file", "is not a readable DOCX") from exc
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    buf: list[str] = []

    def flush() -> None:
        body = _paragraphs("\n\n".join(buf))
        if body:
            sections.append(Section(heading=tuple(h for _, h in path), text=body))
        buf.clear()

    for para in document.paragraphs:
        text = para.text.strip()
        if not text:
            continue
        style = (para.style.name if para.style is not None else "") or ""
        if style.startswith("Heading") or style == "Title":
            flush()
            digits = "".join(ch for ch in style if ch.isdigit())
            level = int(digits) if digits else 1
            path = [(lv, h) for lv, h in path if lv < level] + [(level, text)]
        else:
            buf.append(text)
    flush()
    for table in document.tables:
        rows = [" | ".join(cell.text.strip() for cell in row.cells) for row in table.rows]
        body = "\n".join(r for r in rows if r.strip(" |"))
        if body:
            sections.append(Section(heading=("table",), text=body))
    core_title = (document.core_properties.title or "").strip()
    return Document(title=core_title or title, sections=tuple(sections))


def extract_html(data: bytes, title: str) -> Document:
    from mtdesk.retrieval.html import html_document

    return html_document(_decode(data), title)


_Q_COLUMNS = ("q", "question", "questions")
_A_COLUMNS = ("a", "answer", "answers")


def extract_csv(data: bytes, title: str) -> Document:
    """A CSV of Q&A pairs with a header row naming columns q/question and a/answer."""
    text = _decode(data)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except (StopIteration, csv.Error) as exc:
        raise ValidationError("file", "CSV has no header row") from exc
    qi = next((header.index(c) for c in _Q_COLUMNS if c in header), None)
    ai = next((header.index(c) for c in _A_COLUMNS if c in header), None)
    if qi is None or ai is None:
        raise ValidationError("file", "CSV needs columns named q (or question) and a (or answer)")
    pairs: list[QAPair] = []
    try:
        for row in reader:
            if len(row) <= max(qi, ai):
                continue
            q, a = row[qi].strip(), row[ai].strip()
            if q and a:
                pairs.append(QAPair(q=q, a=a))
    except csv.Error as exc:
        raise ValidationError("file", f"CSV is malformed: {exc}") from exc
    return Document(title=title, qa=tuple(pairs))


_EXTRACTORS = {
    "pdf": extract_pdf,
    "docx": extract_docx,
    "txt": extract_text,
    "md": extract_markdown,
    "html": extract_html,
    "csv": extract_csv,
}
