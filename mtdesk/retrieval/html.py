"""HTML → :class:`Document` and the page's links, with selectolax (lexbor engine)."""

from __future__ import annotations

import re
from urllib.parse import urldefrag, urljoin

from mtdesk.retrieval.documents import Document, Section

_DROP = ["script", "style", "noscript", "template", "svg", "nav", "footer", "header", "form", "iframe", "aside"]
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCKS = {"p", "li", "pre", "blockquote", "td", "th", "dt", "dd", "figcaption", "summary"}
_SPACE = re.compile(r"\s+")


def _clean(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def html_document(html: str, title: str = "") -> Document:
    """Visible text of a page as sections under its headings (navigation, scripts dropped)."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    page_title = ""
    node = tree.css_first("title")
    if node is not None:
        page_title = _clean(node.text())
    tree.strip_tags(_DROP)
    root = tree.css_first("main") or tree.css_first("article") or tree.body
    sections: list[Section] = []
    if root is None:
        return Document(title=page_title or title)
    path: list[tuple[int, str]] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            sections.append(Section(heading=tuple(h for _, h in path), text="\n\n".join(buf)))
            buf.clear()

    for el in root.traverse(include_text=False):
        tag = el.tag
        if tag in _HEADINGS:
            flush()
            level = _HEADINGS[tag]
            text = _clean(el.text(deep=True, separator=" "))
            if text:
                path = [(lv, h) for lv, h in path if lv < level] + [(level, text)]
        elif tag in _BLOCKS:
            # Nested blocks (a <p> inside an <li>) are read once, by the outermost block.
            parent = el.parent
            nested = False
            while parent is not None and parent is not root:
                if parent.tag in _BLOCKS:
                    nested = True
                    break
                parent = parent.parent
            if not nested:
                text = _clean(el.text(deep=True, separator=" "))
                if text:
                    buf.append(text)
    flush()
    if not sections:
        # Pages of bare text in <div>s: take the visible text as one section.
        text = _clean(root.text(deep=True, separator=" "))
        if text:
            sections.append(Section(text=text))
    return Document(title=page_title or title, sections=tuple(sections))


def html_links(html: str, base_url: str) -> list[str]:
    """Absolute http(s) links of a page, fragments removed, in document order."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    base = tree.css_first("base[href]")
    if base is not None:
        base_url = urljoin(base_url, base.attributes.get("href") or "")
    out: list[str] = []
    for a in tree.css("a[href]"):
        rel = (a.attributes.get("rel") or "").lower()
        if "nofollow" in rel:
            continue
        href = (a.attributes.get("href") or "").strip()
        if not href or href.startswith(("mailto:", "tel:", "javascript:", "#")):
            continue
        url = urldefrag(urljoin(base_url, href))[0]
        if url.startswith(("http://", "https://")):
            out.append(url)
    return out
