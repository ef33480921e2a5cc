"""Fetching web pages for the knowledge base: one page, or a bounded crawl of one site.

Every request goes through :class:`~mtdesk.retrieval.urlpolicy.AddressPolicy` (before
connecting, inside the resolver, and on each redirect hop, which are followed by hand).
A crawl stays on the start URL's host, reads ``sitemap.xml`` (and sitemaps named in
robots.txt) when present, obeys robots.txt for our user agent, and stops at the first of
``max_pages``, ``max_depth``, ``max_bytes`` (total) and ``max_seconds``.
"""

from __future__ import annotations

import re
import time
import urllib.robotparser
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import PurePosixPath
from urllib.parse import urldefrag, urljoin, urlsplit

import aiohttp
import msgspec

from mtdesk.core.errors import ValidationError
from mtdesk.retrieval.documents import Document
from mtdesk.retrieval.extract import extract
from mtdesk.retrieval.html import html_links
from mtdesk.retrieval.urlpolicy import AddressPolicy

USER_AGENT = "MTDeskBot/0.1 (+knowledge base crawler)"
MAX_REDIRECTS = 5
_LOC = re.compile(r"<loc>\s*([^<\s]+)\s*</loc>", re.IGNORECASE)
_TEXTUAL = ("text/html", "application/xhtml+xml", "text/plain", "text/markdown", "application/pdf")


class CrawlOptions(msgspec.Struct, frozen=True, kw_only=True):
    crawl: bool = False
    max_pages: int = 50
    max_depth: int = 3
    max_bytes: int = 20 * 1024 * 1024  # over the whole crawl
    max_page_bytes: int = 5 * 1024 * 1024
    max_seconds: float = 120.0
    timeout_s: float = 15.0

    def validated(self) -> CrawlOptions:
        if not 1 <= self.max_pages <= 1000:
            raise ValidationError("max_pages", "must be between 1 and 1000")
        if not 0 <= self.max_depth <= 10:
            raise ValidationError("max_depth", "must be between 0 and 10")
        if not 1 <= self.max_seconds <= 3600:
            raise ValidationError("max_seconds", "must be between 1 and 3600")
        return self


class Page(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    content_type: str
    body: bytes


class FetchedDocument(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    document: Document


Progress = Callable[[int, int], Awaitable[None]]


class Fetcher:
    """An aiohttp client session whose every connection obeys the address policy."""

    def __init__(self, policy: AddressPolicy, *, timeout_s: float = 15.0) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Fetcher:
        connector = aiohttp.TCPConnector(resolver=self.policy.resolver(), limit=8)
        self._session = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(total=self.timeout_s), trust_env=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, url: str, *, max_bytes: int) -> Page:
        """GET with hand-followed, re-checked redirects. Raises ValidationError(field url)."""
        assert self._session is not None, "use 'async with Fetcher(...)'"
        for _ in range(MAX_REDIRECTS + 1):
            await self.policy.check(url)
            try:
                async with self._session.get(url, allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        url = urldefrag(urljoin(url, resp.headers["Location"]))[0]
                        continue
                    if resp.status >= 400:
                        raise ValidationError("url", f"{url} answered HTTP {resp.status}")
                    declared = resp.content_length
                    if declared is not None and declared > max_bytes:
                        raise ValidationError("url", f"{url} is {declared} bytes; the limit is {max_bytes}")
                    body = bytearray()
                    async for block in resp.content.iter_chunked(65536):
                        body += block
                        if len(body) > max_bytes:
                            raise ValidationError("url", f"{url} is larger than {max_bytes} bytes")
                    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                    return Page(url=str(resp.url), content_type=ctype, body=bytes(body))
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise ValidationError("url", f"{url} could not be fetched ({type(exc).__name__})") from exc
        raise ValidationError("url", f"more than {MAX_REDIRECTS} redirects")


async def page_document(page: Page) -> Document:
    """Extract a fetched page by its content type (HTML when unsure). A PDF, whose
    compressed streams could unpack to anything, is read in a child process with memory
    and time limits (:class:`~mtdesk.retrieval.sandbox.ExtractionSandbox`), like uploads."""
    from mtdesk.retrieval.sandbox import ExtractionSandbox

    path = urlsplit(page.url).path
    name = PurePosixPath(path).name or "index.html"
    if page.content_type and not page.content_type.startswith(_TEXTUAL):
        raise ValidationError("url", f"{page.url} is {page.content_type}, not a page we can read")
    kind_name = {
        "application/pdf": "page.pdf", "text/plain": "page.txt", "text/markdown": "page.md",
    }.get(page.content_type, "page.html")
    if kind_name == "page.pdf":
        doc = await ExtractionSandbox().extract(page.body, kind_name, page.content_type)
    else:
        doc = extract(page.body, kind_name, page.content_type)
    title = doc.title if doc.title and doc.title != "page" else name
    return Document(title=title, sections=doc.sections, qa=doc.qa)


def _same_site(url: str, host: str) -> bool:
    return (urlsplit(url).hostname or "").lower() == host


async def fetch_page(url: str, policy: AddressPolicy, opts: CrawlOptions | None = None) -> FetchedDocument:
    opts = opts or CrawlOptions()
    async with Fetcher(policy, timeout_s=opts.timeout_s) as fetcher:
        page = await fetcher.get(url, max_bytes=opts.max_page_bytes)
    return FetchedDocument(url=page.url, document=await page_document(page))


async def crawl_site(
    start: str, policy: AddressPolicy, opts: CrawlOptions, progress: Progress | None = None
) -> tuple[list[FetchedDocument], list[str]]:
    """Crawl from ``start``; returns the documents read and a list of per-page problems.

    Raises ValidationError when the start page itself cannot be read.
    """
    opts = opts.validated()
    host, _ = policy.check_url(start)
    deadline = time.monotonic() + opts.max_seconds
    docs: list[FetchedDocument] = []
    problems: list[str] = []
    spent = 0
    async with Fetcher(policy, timeout_s=opts.timeout_s) as fetcher:
        parts = urlsplit(start)
        root = f"{parts.scheme}://{parts.netloc}"
        robots = await _robots(fetcher, root)
        queue: deque[tuple[str, int]] = deque([(urldefrag(start)[0], 0)])
        seen = {urldefrag(start)[0]}
        for url in await _sitemap_urls(fetcher, root, robots):
            if _same_site(url, host) and url not in seen:
                seen.add(url)
                queue.append((url, 1))
        while queue and len(docs) < opts.max_pages and time.monotonic() < deadline:
            url, depth = queue.popleft()
            if robots is not None and not robots.can_fetch(USER_AGENT, url):
                problems.append(f"{url}: disallowed by robots.txt")
                continue
            try:
                page = await fetcher.get(url, max_bytes=min(opts.max_page_bytes, max(1, opts.max_bytes - spent)))
                spent += len(page.body)
                if not _same_site(page.url, host):
                    raise ValidationError("url", f"{url} redirected off the site")
                doc = await page_document(page)
            except ValidationError as exc:
                if not docs and url == urldefrag(start)[0]:
                    raise
                problems.append(f"{url}: {exc.problem}")
                continue
            docs.append(FetchedDocument(url=page.url, document=doc))
            if progress is not None:
                await progress(len(docs), min(opts.max_pages, len(docs) + len(queue)))
            if spent >= opts.max_bytes:
                problems.append(f"stopped at the byte limit ({opts.max_bytes})")
                break
            if depth < opts.max_depth and page.content_type in ("text/html", "application/xhtml+xml", ""):
                for link in html_links(page.body.decode("utf-8", errors="replace"), page.url):
                    if _same_site(link, host) and link not in seen:
                        seen.add(link)
                        queue.append((link, depth + 1))
    if time.monotonic() >= deadline:
        problems.append(f"stopped at the time limit ({opts.max_seconds:g} s)")
    return docs, problems


async def _robots(fetcher: Fetcher, root: str) -> urllib.robotparser.RobotFileParser | None:
    try:
        page = await fetcher.get(f"{root}/robots.txt", max_bytes=512 * 1024)
    except ValidationError:
        return None  # no robots.txt: everything allowed
    parser = urllib.robotparser.RobotFileParser()
    parser.parse(page.body.decode("utf-8", errors="replace").splitlines())
    return parser


async def _sitemap_urls(fetcher: Fetcher, root: str, robots: urllib.robotparser.RobotFileParser | None) -> list[str]:
    maps = list(robots.site_maps() or []) if robots is not None else []
    if not maps:
        maps = [f"{root}/sitemap.xml"]
    out: list[str] = []
    for sitemap in maps[:5]:
        try:
            page = await fetcher.get(sitemap, max_bytes=5 * 1024 * 1024)
        except ValidationError:
            continue
        out.extend(urldefrag(u)[0] for u in _LOC.findall(page.body.decode("utf-8", errors="replace")))
    return out
