"""Checks on zip-based documents (DOCX) before anything is unpacked.

A DOCX is a zip archive; a small upload can declare a member of hundreds of megabytes
(a "zip bomb": 306 KB that unpack to 300 MB of one letter). :func:`check_zip_container`
reads only the archive's central directory and refuses, with a
:class:`~mtdesk.core.errors.ValidationError` on field ``file`` naming the problem:

- more than :data:`MAX_MEMBERS` members;
- a member, or all of them together, declaring more than ``max_unpacked`` bytes;
- a member larger than :data:`RATIO_FLOOR` whose declared size is more than
  :data:`MAX_RATIO` times its compressed size.

A declared size cannot be exceeded later: Python's zip reader stops at it (and a
member that lies fails its CRC check). :func:`check_no_dtd` then refuses XML members
that declare a document type (entity expansion, "billion laughs"): Office Open XML never
carries one, so any is hostile.
"""

from __future__ import annotations

import io
import zipfile

from mtdesk.core.errors import ValidationError

MAX_MEMBERS = 2000
MAX_UNPACKED_BYTES = 100 * 1024 * 1024
MAX_RATIO = 100
RATIO_FLOOR = 1024 * 1024  # small members may compress well without meaning harm
# How a DTD starts, in the encodings an XML parser detects by itself.
_DTD_MARKS_LOWER = tuple("<!doctype".encode(enc) for enc in ("utf-8", "utf-16-le", "utf-16-be"))


def check_zip_container(data: bytes, *, max_unpacked: int = MAX_UNPACKED_BYTES) -> None:
    """Refuse an archive whose declared contents are too large or too compressed."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise ValidationError("file", "is not a readable DOCX (not a zip archive)") from exc
    if len(infos) > MAX_MEMBERS:
        raise ValidationError("file", f"has {len(infos)} parts; at most {MAX_MEMBERS} are accepted")
    total = 0
    for info in infos:
        name = info.filename[:80]
        if info.file_size > max_unpacked:
            raise ValidationError(
                "file", f"would unpack to {info.file_size} bytes ({name}); the limit is {max_unpacked}"
            )
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            ratio = info.file_size // max(info.compress_size, 1)
            raise ValidationError(
                "file",
                f"is compressed {ratio}:1 ({name}); at most {MAX_RATIO}:1 is accepted "
                "(a compression bomb?)",
            )
        total += info.file_size
        if total > max_unpacked:
            raise ValidationError(
                "file", f"would unpack to more than {max_unpacked} bytes in all; the limit is {max_unpacked}"
            )


def check_no_dtd(data: bytes) -> None:
    """Refuse a DOCX whose XML parts declare a document type (entities)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if info.filename.lower().endswith((".xml", ".rels")) and _has_dtd(archive, info):
                raise ValidationError(
                    "file", f"declares XML entities or a document type ({info.filename[:80]}); "
                    "a DOCX never does"
                )


def _has_dtd(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    # Streamed with an overlap, so a mark split between two reads is still seen; the
    # member's size is bounded by check_zip_container.
    tail = b""
    with archive.open(info) as member:
        while chunk := member.read(1 << 20):
            window = (tail + chunk).lower()
            if any(mark in window for mark in _DTD_MARKS_LOWER):
                return True
            tail = window[-32:]
    return False
