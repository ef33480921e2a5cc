"""``mtdesk kb …``: a tenant's knowledge base from the command line (operator).

Runs the same :class:`~mtdesk.retrieval.ingest.KnowledgeService` as the admin API,
in this process: ``add-*`` wait until the source is ready (or failed) and print it.
A running server's retrieval shards pick the change up from Redis within a second.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtdesk.core.errors import ValidationError

# The knowledge base pulls in numpy, FAISS and aiohttp: imported when a kb verb runs,
# not on every ``mtdesk`` call.
if TYPE_CHECKING:
    from mtdesk.retrieval.ingest import KnowledgeService
    from mtdesk.retrieval.store import KnowledgeStore, SourceInfo


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "kb", help="a tenant's knowledge base",
        description="Add, list, re-sync, delete and search a tenant's knowledge (operator).",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, helptext: str) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=helptext, description=helptext)
        p.add_argument("--tenant", required=True, help="tenant id")
        return p

    qa = verb("add-qa", "add Q&A pairs (from --q/--a, or a CSV/JSON file)")
    qa.add_argument("--q", action="append", default=[], help="a question (repeat with --a)")
    qa.add_argument("--a", action="append", default=[], help="its answer")
    qa.add_argument("--from", dest="source_file", type=Path,
                    help="CSV with q/question and a/answer columns, or JSON [{q, a}, …]")
    qa.add_argument("--name", help="source name shown in citations (default Q&A)")
    qa.set_defaults(handler=_add_qa)

    url = verb("add-url", "add a web page, or crawl a site with --crawl")
    url.add_argument("url", help="http(s) URL")
    url.add_argument("--crawl", action="store_true", help="follow links on the same site")
    url.add_argument("--max-pages", type=int, default=None, help="crawl page limit (default 50)")
    url.add_argument("--max-depth", type=int, default=3, help="crawl link depth (default 3)")
    url.add_argument("--max-seconds", type=float, default=120.0, help="crawl time limit")
    url.set_defaults(handler=_add_url)

    file = verb("add-file", "add a PDF, DOCX, TXT, Markdown, HTML or CSV (Q&A) file")
    file.add_argument("path", type=Path, help="the file")
    file.set_defaults(handler=_add_file)

    verb("list", "list sources with their status").set_defaults(handler=_list)
    for name, helptext, handler in (
        ("show", "show one source", _show),
        ("resync", "fetch / read a source again and replace its chunks", _resync),
        ("delete", "delete a source and its vectors", _delete),
    ):
        p = verb(name, helptext)
        p.add_argument("source", help="source id (see 'kb list')")
        p.set_defaults(handler=handler)

    search = verb("search", "show what the bot would retrieve for a question")
    search.add_argument("query", help="the question")
    search.add_argument("-k", type=int, default=5, help="how many passages (default 5)")
    search.set_defaults(handler=_search)


def _print(data: Any) -> None:
    import msgspec

    print(msgspec.json.format(msgspec.json.encode(data)).decode())


def _with_service(args: argparse.Namespace, work: Any) -> Any:
    from mtdesk.cli.store_session import run_with_store
    from mtdesk.core.clock import SystemClock
    from mtdesk.core.sealing import TenantCipher
    from mtdesk.core.tenants import Tenants
    from mtdesk.retrieval.ingest import KnowledgeService
    from mtdesk.retrieval.store import KnowledgeStore

    async def job(redis: Any, settings: Any) -> Any:
        await Tenants(redis, SystemClock()).get(args.tenant)
        store = KnowledgeStore(redis, cipher=TenantCipher.from_settings(redis, settings))
        service = KnowledgeService(store, settings)
        await service.start(resume=False)
        try:
            return await work(service, store, settings)
        finally:
            await service.stop()

    return run_with_store(job)


def _finish(args: argparse.Namespace, add: Any) -> int:
    async def work(service: KnowledgeService, store: KnowledgeStore, settings: Any) -> SourceInfo:
        info = await add(service)
        await service.drain()
        return await service.get(args.tenant, info.id)

    info = _with_service(args, work)
    _print(info)
    return 0 if info.status == "ready" else 1


def _read_pairs(path: Path) -> list[dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError("--from", f"cannot read it: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError:
            raise ValidationError("--from", "is not valid JSON") from None
        return data if isinstance(data, list) else []
    rows = list(csv.DictReader(text.splitlines()))
    return [
        {"q": r.get("q") or r.get("question") or "", "a": r.get("a") or r.get("answer") or ""}
        for r in ({k.strip().lower(): (v or "") for k, v in row.items() if k} for row in rows)
    ]


def _add_qa(args: argparse.Namespace) -> int:
    if len(args.q) != len(args.a):
        raise ValidationError("--q/--a", "give one --a for each --q")
    pairs = [{"q": q, "a": a} for q, a in zip(args.q, args.a, strict=True)]
    if args.source_file is not None:
        pairs += _read_pairs(args.source_file)
    if not pairs:
        raise ValidationError("--q/--a", "give pairs with --q/--a or --from FILE")
    return _finish(args, lambda s: s.add_qa(args.tenant, pairs, name=args.name))


def _add_url(args: argparse.Namespace) -> int:
    from mtdesk.retrieval.crawl import CrawlOptions

    options = CrawlOptions(
        crawl=args.crawl, max_pages=args.max_pages or (50 if args.crawl else 1),
        max_depth=args.max_depth, max_seconds=args.max_seconds,
    )
    return _finish(args, lambda s: s.add_url(args.tenant, args.url, options))


def _add_file(args: argparse.Namespace) -> int:
    try:
        data = args.path.read_bytes()
    except OSError as exc:
        raise ValidationError("path", f"cannot read {args.path}: {exc.strerror}") from None
    return _finish(args, lambda s: s.add_file(args.tenant, args.path.name, data))


def _list(args: argparse.Namespace) -> int:
    async def work(service: KnowledgeService, *_: Any) -> list[SourceInfo]:
        return await service.list(args.tenant)

    sources = _with_service(args, work)
    if not sources:
        print("no knowledge sources", file=sys.stderr)
    for s in sources:
        detail = f"{s.chunks} chunks" if s.status == "ready" else (s.error or f"{s.done}/{s.total}")
        print(f"{s.id}  {s.kind:<4}  {s.status:<10}  {detail:<24}  {s.name}")
    return 0


def _show(args: argparse.Namespace) -> int:
    async def work(service: KnowledgeService, *_: Any) -> SourceInfo:
        return await service.get(args.tenant, args.source)

    _print(_with_service(args, work))
    return 0


def _resync(args: argparse.Namespace) -> int:
    return _finish(args, lambda s: s.resync(args.tenant, args.source))


def _delete(args: argparse.Namespace) -> int:
    async def work(service: KnowledgeService, *_: Any) -> int:
        return await service.delete(args.tenant, args.source)

    removed = _with_service(args, work)
    print(f"deleted {args.source} ({removed} chunks)")
    return 0


def _search(args: argparse.Namespace) -> int:
    if not 1 <= args.k <= 50:
        raise ValidationError("-k", "must be between 1 and 50")

    from mtdesk.retrieval.search import local_retriever

    async def work(service: KnowledgeService, store: KnowledgeStore, settings: Any) -> Any:
        return await local_retriever(store, settings).search(args.tenant, args.query, args.k)

    _print(_with_service(args, work))
    return 0
