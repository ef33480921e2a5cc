"""The package talks to redis-py through its public API only: an upgrade of the
``redis>=5`` dependency cannot break an import of one of its private modules."""

from __future__ import annotations

import re
from pathlib import Path

import mtdesk

_PRIVATE = re.compile(r"^\s*(from|import)\s+redis(\.\w+)*\._", re.MULTILINE)


def test_no_module_imports_a_private_redis_py_module() -> None:
    root = Path(mtdesk.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if _PRIVATE.search(p.read_text())]
    assert offenders == []


def test_the_check_would_see_such_an_import() -> None:
    assert _PRIVATE.search("from redis._parsers.base import BaseParser")
    assert _PRIVATE.search("import redis._parsers")
    assert not _PRIVATE.search("from redis.exceptions import ResponseError")
