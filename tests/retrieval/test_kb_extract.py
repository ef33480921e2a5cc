"""Files become text (or Q&A pairs); bad files are refused with a reason naming the file."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kb_harness import make_docx, make_pdf
from pypdf import PdfReader, PdfWriter

from mtdesk.core.errors import ValidationError
from mtdesk.retrieval.extract import extract


def test_pdf_text_is_extracted() -> None:
    doc = extract(make_pdf(["Returns policy", "You may return items within 30 days."]), "policy.pdf")
    assert "return items within 30 days" in doc.sections[0].text


def test_encrypted_pdf_is_refused_with_the_reason() -> None:
    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(make_pdf(["secret"]))))
    writer.encrypt("pw")
    buf = io.BytesIO()
    writer.write(buf)
    with pytest.raises(ValidationError) as err:
        extract(buf.getvalue(), "locked.pdf")
    assert err.value.field == "file" and "encrypted" in err.value.problem


def test_docx_keeps_headings_as_section_paths() -> None:
    data = make_docx([("Heading 1", "Returns"), ("Normal", "Within 30 days."),
                      ("Heading 2", "Damaged items"), ("Normal", "Email a photo.")])
    doc = extract(data, "help.docx")
    assert [(s.heading, s.text) for s in doc.sections] == [
        (("Returns",), "Within 30 days."), (("Returns", "Damaged items"), "Email a photo."),
    ]


def test_markdown_sections_follow_headings_but_not_code() -> None:
    md = b"# Shipping\n\nWe ship daily.\n\n## Abroad\n\nTo 40 countries.\n\n```\n# not a heading\n```\n"
    doc = extract(md, "ship.md")
    assert doc.sections[0].heading == ("Shipping",)
    assert doc.sections[1].heading == ("Shipping", "Abroad")
    assert "# not a heading" in doc.sections[1].text


def test_html_drops_navigation_and_scripts() -> None:
    html = (b"<html><head><title>Help</title><script>var x=1</script></head><body><nav>Menu</nav>"
            b"<h1>Opening hours</h1><p>Mon-Fri 9-17.</p><footer>Copyright</footer></body></html>")
    doc = extract(html, "help.html")
    text = " ".join(s.text for s in doc.sections)
    assert doc.title == "Help" and "Mon-Fri 9-17." in text
    assert "Menu" not in text and "var x" not in text and "Copyright" not in text


def test_csv_of_questions_and_answers() -> None:
    doc = extract(b'Question,Answer\n"Do you ship abroad?","Yes, to 40 countries."\nEmpty,\n', "faq.csv")
    assert [(p.q, p.a) for p in doc.qa] == [("Do you ship abroad?", "Yes, to 40 countries.")]


def test_csv_without_the_columns_says_which_are_needed() -> None:
    with pytest.raises(ValidationError, match="q .*question"):
        extract(b"foo,bar\n1,2\n", "x.csv")


@pytest.mark.parametrize(
    ("data", "name", "problem"),
    [
        (b"", "empty.txt", "empty"),
        (b"   \n ", "blank.md", "empty"),
        (b"x" * 2000, "big.txt", "limit"),
        (b"%PDF-1.4 garbage that is not a pdf", "broken.pdf", "not a readable PDF"),
        (b"PK\x03\x04 not really a zip", "broken.docx", "not a readable DOCX"),
        (b"hello", "photo.jpg", "unsupported"),
    ],
)
def test_bad_files_are_refused_naming_the_problem(data: bytes, name: str, problem: str) -> None:
    with pytest.raises(ValidationError) as err:
        extract(data, name, max_bytes=1000)
    assert err.value.field == "file" and problem in err.value.problem


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=400), ext=st.sampled_from(["pdf", "docx", "txt", "md", "html", "csv"]))
def test_any_bytes_give_a_document_or_a_validation_error(data: bytes, ext: str) -> None:
    try:
        doc = extract(data, f"f.{ext}")
    except ValidationError as exc:
        assert exc.field == "file"
    else:
        assert not doc.empty


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(
    ["<p>", "</p>", "<h2>", "</h2>", "<a href=", '"', "'", "/x", "http://a.b/c", "javascript:x", "#f",
     "<script>", "</script>", "<li>", "text", " ", ">", "<", "=", "..", "mailto:q"]), max_size=60))
def test_any_html_gives_text_and_only_absolute_web_links(pieces: list[str]) -> None:
    from mtdesk.retrieval.html import html_document, html_links

    html = "".join(pieces)
    html_document(html)
    assert all(link.startswith(("http://", "https://")) for link in html_links(html, "https://shop.example/a/"))
