"""A crawl stays on the site, reads the sitemap, obeys robots.txt and its limits."""

from __future__ import annotations

import pytest
from kb_harness import html_page, local_site

from mtdesk.core.errors import ValidationError
from mtdesk.retrieval.crawl import CrawlOptions, crawl_site
from mtdesk.retrieval.urlpolicy import AddressPolicy

OPEN = AddressPolicy(allow_private=True)


def site_pages(root_links: list[str]) -> dict[str, tuple[int, str, str]]:
    return {
        "/": (200, "text/html", html_page("Home", "<p>Welcome to Acme.</p>", root_links)),
        "/a": (200, "text/html", html_page("Page A", "<p>About shipping.</p>", ["/b"])),
        "/b": (200, "text/html", html_page("Page B", "<p>About returns.</p>", ["/c"])),
        "/c": (200, "text/html", html_page("Page C", "<p>Deep page.</p>")),
        "/private/x": (200, "text/html", html_page("Private", "<p>Hidden.</p>")),
        "/orphan": (200, "text/html", html_page("Orphan", "<p>Only in the sitemap.</p>")),
        "/robots.txt": (200, "text/plain", "User-agent: *\nDisallow: /private/\n"),
        "/sitemap.xml": (200, "application/xml",
                         "<urlset><url><loc>{root}/orphan</loc></url></urlset>"),
    }


async def test_crawl_follows_links_sitemap_and_robots() -> None:
    pages = site_pages(["/a", "/private/x", "https://elsewhere.example/", "mailto:x@y.z"])
    async with local_site(pages) as root:
        pages["/sitemap.xml"] = (200, "application/xml", pages["/sitemap.xml"][2].format(root=root))
        docs, problems = await crawl_site(root + "/", OPEN, CrawlOptions(crawl=True, max_depth=5))
    titles = {d.document.title for d in docs}
    assert titles == {"Home", "Page A", "Page B", "Page C", "Orphan"}
    assert any("robots.txt" in p for p in problems)


async def test_crawl_stops_at_depth_and_page_limits() -> None:
    pages = site_pages(["/a"])
    async with local_site(pages) as root:
        pages["/sitemap.xml"] = (404, "text/plain", "")
        shallow, _ = await crawl_site(root + "/", OPEN, CrawlOptions(crawl=True, max_depth=1))
        few, _ = await crawl_site(root + "/", OPEN, CrawlOptions(crawl=True, max_depth=5, max_pages=2))
    assert {d.document.title for d in shallow} == {"Home", "Page A"}
    assert len(few) == 2


async def test_crawl_of_a_missing_start_page_fails_with_the_status() -> None:
    async with local_site({}) as root:
        with pytest.raises(ValidationError, match="404"):
            await crawl_site(root + "/nope", OPEN, CrawlOptions(crawl=True))


async def test_crawl_limit_options_are_validated() -> None:
    with pytest.raises(ValidationError) as err:
        CrawlOptions(max_pages=0).validated()
    assert err.value.field == "max_pages"


async def test_a_crawled_pdf_is_read_in_the_limited_child_process_like_an_upload() -> None:
    from kb_harness import make_pdf

    from mtdesk.retrieval.crawl import fetch_page

    pdf = make_pdf(["Warranty: two years on every frame."]).decode("ascii")
    async with local_site({"/warranty.pdf": (200, "application/pdf", pdf)}) as root:
        page = await fetch_page(f"{root}/warranty.pdf", OPEN)
    assert "two years on every frame" in page.document.sections[0].text
