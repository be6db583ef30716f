"""A small corpus of hostile inputs, made by code so that it stays tiny and says what each one is.

Every finding of the security review (issue 17) that a file or a request can trigger has its input
here; later changes run the tests that use them. Each function returns bytes (or writes a file and
returns its path) and documents the trick.
"""
from __future__ import annotations

import io
import random
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path

from doc_helpers import pdf_bytes


def page_tree_bomb_pdf(levels: int = 24) -> bytes:
    """About 2 KB: a page tree where every node lists the same child twice, `levels` deep, so it
    names 2**levels pages. pypdf stops at its limit with LimitReachedError (not a PdfReadError)."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    for level in range(levels):
        me, child = 2 + level, 3 + level
        objects.append(f"<< /Type /Pages /Kids [{child} 0 R {child} 0 R] /Count {2 ** (levels - level)} "
                       f"{'' if level == 0 else f'/Parent {me - 1} 0 R '}>>".encode())
    leaf, font = 2 + levels, 3 + levels
    objects.append(f"<< /Type /Page /Parent {leaf - 1} 0 R /MediaBox [0 0 612 792] /Contents {font + 1} 0 R "
                   f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    stream = b"BT /F1 12 Tf 72 720 Td (The same page, sixteen million times.) Tj ET"
    objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    return pdf_bytes(objects)


@lru_cache(maxsize=4)
def gzip_bomb(expanded_mb: int = 100) -> bytes:
    """About 1 KB per MB: `expanded_mb` MB of zeros, gzip-compressed (ratio ~1000:1)."""
    packer, block = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS), bytes(1 << 20)
    return b"".join(packer.compress(block) for _ in range(expanded_mb)) + packer.flush()


@lru_cache(maxsize=4)
def brotli_bomb(expanded_mb: int = 100) -> bytes:
    """Under 200 bytes: `expanded_mb` MB of zeros, brotli-compressed (the review used 1,617 bytes for 1 GiB)."""
    import brotli

    packer, block = brotli.Compressor(quality=5), bytes(1 << 20)
    return b"".join(packer.process(block) for _ in range(expanded_mb)) + packer.finish()


@lru_cache(maxsize=2)
def docx_bomb(expanded_mb: int = 40) -> bytes:
    """A real .docx (made by python-docx) whose word/document.xml is `expanded_mb` MB of the same
    paragraph, deflated to about 1/300 of that (the review's: 566 KB holding 200 MB of XML)."""
    from doc_helpers import write_docx_bytes

    small = zipfile.ZipFile(io.BytesIO(write_docx_bytes("Orchard", ["The orchard keeps eleven beehives."])))
    paragraph = b"<w:p><w:r><w:t>The orchard keeps eleven beehives.</w:t></w:r></w:p>"
    xml = small.read("word/document.xml")
    head, tail = xml.split(b"<w:body>", 1)
    body = head + b"<w:body>" + paragraph * (expanded_mb * 1_000_000 // len(paragraph)) + tail
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bomb:
        for item in small.infolist():
            bomb.writestr(item.filename, body if item.filename == "word/document.xml" else small.read(item))
    return out.getvalue()


def text_without_separators(chars: int = 300_000, seed: int = 17) -> str:
    """Letters and digits with no space, newline or punctuation: the recursive splitter's worst case
    (it falls back to single characters)."""
    rng = random.Random(seed)
    return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=chars))


def write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path
