"""Read documents into plain-text sections with a location (page, heading).

One function per format; each raises SourceError with a one-line reason so that a bad file is
reported and skipped while the rest of the batch still goes in. A parser library is not trusted to
raise only what it documents: the ingestor turns anything else into that source's error too.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

from common.errors import SourceError


@dataclass(frozen=True)
class Section:
    text: str
    location: str = ""     # "page 3", "Heading > Subheading", or ""


def decode_text(data: bytes, name: str) -> str:
    """Bytes to str: UTF-8 (with or without BOM) first, else the detected encoding; binary refused."""
    if not data.strip():
        raise SourceError(f"{name}: the file is empty")
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SourceError(f"{name}: looks like a binary file, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data[:1_000_000]))
    if not matches:
        raise SourceError(f"{name}: could not detect the text encoding (binary file?)")
    # Short texts tie between code pages; among the equally good guesses prefer the most common one.
    best = matches[0]
    tied = [m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
    for preferred in ("cp1252", "latin_1", "iso8859_15", "cp1251"):
        best = next((m for m in tied if m.encoding == preferred), None) or best
        if best.encoding == preferred:
            break
    return data.decode(best.encoding, errors="replace")


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_TABLE_LINE = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_RULE = re.compile(r"^\s*\|(?:\s*:?-{3,}:?\s*\|)+\s*$")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def row_sentence(header: list[str], row: list[str]) -> str:
    """One table row as a line that reads on its own: 'City group: Group B; Meals per day: 45 euros.'"""
    pairs = [f"{h}: {c}" if h else c for h, c in zip(header + [""] * len(row), row) if c]
    return "; ".join(pairs) + ("." if pairs and not pairs[-1].endswith((".", "!", "?")) else "")


def tables_as_rows(text: str) -> str:
    """Markdown tables (from .md files, and from web pages and .docx through this format) with a header
    row: each body row becomes one line naming its columns. As pipes and dashes the whole table was one
    'sentence' that the model copied whole and the evidence quote could not cut ("What is the meal
    allowance in Berlin?" got the table, seen as a new user); a row per line is a sentence per row."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if (_TABLE_LINE.match(lines[i]) and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1])
                and not _TABLE_RULE.match(lines[i])):
            header = _cells(lines[i])
            i += 2
            while i < len(lines) and _TABLE_LINE.match(lines[i]):
                if sentence := row_sentence(header, _cells(lines[i])):
                    out.append(sentence)
                i += 1
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


def markdown_sections(text: str) -> list[Section]:
    """Split markdown at headings so each chunk knows the heading path it came from; tables become a
    line per row (`tables_as_rows`)."""
    text = tables_as_rows(text)
    sections: list[Section] = []
    path: list[str] = []
    buf: list[str] = []

    def flush() -> None:
        body = "\n".join(buf).strip()
        if body:
            sections.append(Section(body, " > ".join(path)))
        buf.clear()

    in_code = False
    said = False     # whether buf holds more than headings
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        match = None if in_code else _HEADING.match(line)
        if match:
            # A heading with nothing under it but the next heading (a title over its first section)
            # goes on into that section: on its own it was a chunk of a few words that took one of
            # the model's two source places ("Can I bring my dog?" got "[1] # Harbor Desk: member FAQ").
            if said:
                flush()
            said = False
            level = len(match.group(1))
            path[:] = path[: level - 1] + [match.group(2)]
            buf.append(line)
        else:
            buf.append(line)
            said = said or bool(line.strip())
    flush()
    return sections


_EDGE = 2     # lines at the top and at the bottom of a page where running headers and footers are


def _line_key(line: str) -> str:
    """A page's header or footer line with its numbers masked: "Page 2 of 3" and "Page 3 of 3" are one."""
    return re.sub(r"\d+", "#", " ".join(line.split()).lower())


def clean_pages(pages: list[str]) -> list[str]:
    """A PDF's page texts without what the layout adds: a line repeated at the top or bottom of most pages
    (running header, footer, "Page 2 of 3") and hyphens that split a word across lines ("con-" / "tainer").
    Left in, "Riverside Apartments - House Rules 2026" started every page's passage and ran into its first
    sentence, and "con- tainer" matched no question's "container" (seen as a new user)."""
    lines = [[line for line in page.split("\n") if line.strip()] for page in pages]
    counts: dict[str, int] = {}
    for page in lines:
        for key in {_line_key(line) for line in page[:_EDGE] + page[-_EDGE:]}:
            counts[key] = counts.get(key, 0) + 1
    running = {key for key, n in counts.items() if n >= 2 and n * 2 > len(pages)}
    out = []
    for page in lines:
        edge = set(range(min(_EDGE, len(page)))) | set(range(max(0, len(page) - _EDGE), len(page)))
        kept = [line for i, line in enumerate(page) if not (i in edge and _line_key(line) in running)]
        out.append(re.sub(r"(?<=[A-Za-z])-\n(?=[a-z])", "", "\n".join(kept)))
    return out


def pdf_sections(data: bytes, name: str) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise SourceError(f"{name}: the PDF is password-protected; save an unlocked copy")
            except SourceError:
                raise
            except Exception:  # noqa: BLE001 - pypdf raises various types for unsupported crypto
                raise SourceError(f"{name}: the PDF is encrypted and cannot be opened") from None
        texts = clean_pages([page.extract_text() or "" for page in reader.pages])
        sections = [Section(text.strip(), f"page {number}") for number, text in enumerate(texts, start=1) if text.strip()]
    except SourceError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as err:
        raise SourceError(f"{name}: not a readable PDF ({type(err).__name__})") from None
    if not sections:
        raise SourceError(f"{name}: the PDF has no extractable text (scanned images need OCR first)")
    return sections


def html_sections(data: bytes | str, name: str, url: str | None = None) -> list[Section]:
    import trafilatura

    html = data if isinstance(data, str) else decode_text(data, name)
    text = trafilatura.extract(html, url=url, include_comments=False, include_tables=True,
                               output_format="markdown", favor_recall=True)
    if not text or not text.strip():
        from lxml import html as lxml_html   # boilerplate-free extraction found nothing: take all text

        try:
            text = lxml_html.fromstring(html).text_content()
        except Exception:  # noqa: BLE001 - lxml raises several types on garbage
            text = ""
    if not text.strip():
        raise SourceError(f"{name}: no readable text in the page")
    return markdown_sections(text)


OFFICE_MAX_UNPACKED = 100_000_000    # bytes all parts of an office file may unpack to together
OFFICE_MAX_RATIO = 100               # per part over 1 MB: real XML packs 5-20:1, a compression bomb 1000:1
OFFICE_MAX_PARTS = 10_000


def check_office_zip(data: bytes, name: str) -> None:
    """Refuse an office file (a zip) whose parts unpack to too much, before a parser reads them: a
    566 KB .docx of 200 MB XML took 1.37 GB and 82 s in python-docx. zipfile never returns more of
    a part than its declared size, so the declared sizes bound what the parser can be given."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            parts = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        raise SourceError(f"{name}: not a readable .docx file") from None
    unpacked = sum(part.file_size for part in parts)
    if len(parts) > OFFICE_MAX_PARTS or unpacked > OFFICE_MAX_UNPACKED:
        raise SourceError(f"{name}: unpacks to {unpacked / 1e6:.0f} MB in {len(parts)} parts, over the "
                          f"{OFFICE_MAX_UNPACKED / 1e6:.0f} MB an office file may hold; not read")
    for part in parts:
        if part.file_size > 1_000_000 and part.file_size > OFFICE_MAX_RATIO * max(part.compress_size, 1):
            raise SourceError(f"{name}: a compression bomb ({part.filename[:60]} unpacks "
                              f"{part.file_size // max(part.compress_size, 1)} times its size); not read")


def docx_sections(data: bytes, name: str) -> list[Section]:
    import docx

    check_office_zip(data, name)
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - python-docx raises zipfile/KeyError/ValueError variants
        raise SourceError(f"{name}: not a readable .docx file") from None
    from docx.table import Table

    lines = []
    for block in document.iter_inner_content():     # paragraphs and tables, in the document's order
        if isinstance(block, Table):     # a line per row naming its columns, as markdown tables get (they were lost)
            rows = [[cell.text.replace("\n", " ").strip() for cell in row.cells] for row in block.rows]
            lines += ["", *(line for row in rows[1:] if (line := row_sentence(rows[0], row))), ""]
            continue
        style = (block.style.name or "") if block.style is not None else ""
        if style.startswith("Heading") and block.text.strip():
            level = int(style.split()[-1]) if style.split()[-1].isdigit() else 1
            lines.append("#" * min(level, 6) + " " + block.text.strip())
        else:
            lines.append(block.text)
    text = "\n".join(lines)
    if not text.strip():
        raise SourceError(f"{name}: the document has no text")
    return markdown_sections(text)


def sections_from_bytes(data: bytes, name: str, kind: str, url: str | None = None) -> list[Section]:
    """`kind` is a file extension ('.pdf') or a media type family ('html', 'pdf', 'text')."""
    kind = kind.lower().lstrip(".")
    if kind == "pdf":
        return pdf_sections(data, name)
    if kind in ("html", "htm"):
        return html_sections(data, name, url)
    if kind == "docx":
        return docx_sections(data, name)
    text = decode_text(data, name)
    if kind in ("md", "markdown"):
        return markdown_sections(text)
    return [Section(text.strip())] if text.strip() else []


def read_limited(path: Path, display_name: str, max_bytes: int) -> bytes:
    """The file's bytes, refusing before reading when it is over the size limit."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise SourceError(f"{display_name}: {size / 1e6:.1f} MB is over the {max_bytes / 1e6:.0f} MB limit "
                              "(documents.max_file_mb)")
        return path.read_bytes()
    except OSError as err:
        raise SourceError(f"{display_name}: cannot read ({err.strerror})") from None
