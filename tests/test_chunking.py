"""The chunker (rag/ingest/chunking.py) with the embedding model's real tokenizer: the same chunks as
LangChain's recursive splitter it replaced (bench/ingest.py keeps that one to compare), and its
invariants on real and hostile text: every chunk within chunk_tokens, a verbatim slice at its
offset, the whole text covered, overlaps within overlap_tokens, and never a cut at a worse boundary
than one the chunk holds inside."""
from __future__ import annotations

import random
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hostile import text_without_separators

from rag.ingest.chunking import SEPARATORS, make_splitter

SQUAD_DOCS = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "squad-train" / "docs"


@pytest.fixture(scope="module")
def tokenizer():
    """The shipped all-MiniLM-L6-v2 tokenizer alone (the embedder's, without loading its weights)."""
    from transformers import AutoTokenizer

    from common.shipped import resolve

    tok = AutoTokenizer.from_pretrained(resolve("shipped:all-MiniLM-L6-v2", Path("/nonexistent")))
    tok.model_max_length = 1 << 30
    return tok


@pytest.fixture(scope="module")
def spans(tokenizer):
    from rag.models.embeddings import token_spans

    return lambda text: token_spans(tokenizer, text)


def level_at(text: str, p: int) -> int:
    """How good a cut at character p is: the index in SEPARATORS of the best separator ending there
    (-1 at the ends of the text, len(SEPARATORS) - 1 anywhere else)."""
    if p <= 0 or p >= len(text):
        return -1
    return next(i for i, sep in enumerate(SEPARATORS) if text[p - len(sep):p] == sep)


def check(text: str, chunks: list[tuple[int, str]], size: int, overlap: int, count) -> None:
    assert chunks or not text.strip()
    covered = bytearray(len(text))
    for k, (start, chunk) in enumerate(chunks):
        assert chunk and chunk == chunk.strip() and text[start:start + len(chunk)] == chunk
        assert count(chunk) <= size, (k, count(chunk))
        covered[start:start + len(chunk)] = b"\1" * len(chunk)
        end = start + len(chunk)
        # the cuts lie in the whitespace around the stripped chunk: take the best place in it
        lo = start
        while lo > 0 and text[lo - 1].isspace():
            lo -= 1
        hi = end
        while hi < len(text) and text[hi].isspace():
            hi += 1
        cut_start = min(level_at(text, p) for p in range(lo, start + 1))
        cut_end = min(level_at(text, p) for p in range(end, hi + 1))
        inside = min((level_at(text, p) for p in range(start + 1, end)), default=len(SEPARATORS))
        assert cut_start <= inside and cut_end <= inside, (k, cut_start, cut_end, inside, chunk[:80])
        if k:
            before_start, before = chunks[k - 1]
            assert before_start < start
            shared = text[start:before_start + len(before)]
            # an overlap that starts inside a word is that word's remnant, which takes more tokens alone
            limit = overlap if cut_start < len(SEPARATORS) - 1 else size // 2
            assert count(shared) <= limit if before_start + len(before) > start else True, (k, shared)
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())


def test_same_chunks_as_the_recursive_splitter_with_exact_offsets(tokenizer, spans):
    from bench.ingest import LangChainSplitter

    count = lambda s: len(tokenizer.encode(s, add_special_tokens=False))  # noqa: E731
    rng = random.Random(4)
    docs = sorted(SQUAD_DOCS.iterdir())[:3]
    texts = [d.read_text(encoding="utf-8") for d in docs]
    texts.append(" ".join(" ".join(texts).split())[:30_000])     # one line, no paragraph breaks
    texts.append(" ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(3000)))
    texts.append("".join(rng.choice(["ab ", ", ", ". ", "\n", "\n\n", "日本語", "😀", "é", "\t", "x"])
                         for _ in range(4000)))
    wrong_before = 0
    for text in texts:
        before = LangChainSplitter(count, 200, 40).split(text)
        now = make_splitter(spans, 200, 40).split(text)
        assert [c for _, c in now] == [c for _, c in before]
        check(text, now, 200, 40, count)
        wrong_before += sum(text[s:s + len(c)] != c for s, c in before)
    assert wrong_before > 0      # the old splitter's offsets were guessed (str.find): some were wrong


def test_hostile_text_without_separators(tokenizer, spans):
    count = lambda s: len(tokenizer.encode(s, add_special_tokens=False))  # noqa: E731
    text = text_without_separators(30_000)
    chunks = make_splitter(spans, 200, 40).split(text)
    check(text, chunks, 200, 40, count)
    # prose with every space and newline removed: words far past WordPiece's 100 characters, cut mid-word
    prose = "".join(SQUAD_DOCS.joinpath(sorted(p.name for p in SQUAD_DOCS.iterdir())[0]).read_text().split())
    check(prose, make_splitter(spans, 200, 40).split(prose), 200, 40, count)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["word", "Samoa", "1847", "x" * 60, "internationalization", " ", " ", "  ", ". ",
                                 ", ", "; ", "! ", "? ", "\n", "\n\n", "\t", "日本", "😀", "é", "-", "'"]),
                max_size=400),
       st.integers(16, 40))
def test_chunks_keep_their_invariants_with_the_real_tokenizer(tokenizer, spans, pieces, size):
    text = "".join(pieces)
    count = lambda s: len(tokenizer.encode(s, add_special_tokens=False))  # noqa: E731
    overlap = size // 4
    check(text, make_splitter(spans, size, overlap).split(text), size, overlap, count)


def test_a_long_text_tokenized_in_parallel_pieces_gives_the_same_tokens(tokenizer, spans):
    from rag.models.embeddings import SEGMENT

    text = " ".join(d.read_text(encoding="utf-8") for d in sorted(SQUAD_DOCS.iterdir())[:8])
    assert len(text) > 2 * SEGMENT + 10_000
    whole = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert spans(text).tolist() == [list(o) for o in whole]


def test_a_heading_with_nothing_under_it_goes_into_the_next_section():
    """A title straight over its first section was a chunk of its own, a few words that took one of the
    model's two source places (seen as a new user: "Can I bring my dog?" got "[1] # Harbor Desk FAQ")."""
    from rag.ingest.loaders import markdown_sections

    doc = "# Desk FAQ\n\n## Hours\nOpen 7:30 to 21:00.\n## Pets\n### Dogs\nFridays only.\n```\n# not a heading\n```\n"
    sections = markdown_sections(doc)
    assert [s.location for s in sections] == ["Desk FAQ > Hours", "Desk FAQ > Pets > Dogs"]
    assert sections[0].text.startswith("# Desk FAQ\n\n## Hours\nOpen") and "# not a heading" in sections[1].text
    only = markdown_sections("# Only a title")      # a document of headings alone is kept, not lost
    assert [(s.text, s.location) for s in only] == [("# Only a title", "Only a title")]
    assert [s.location for s in markdown_sections("# T\nintro\n## A\ntext")] == ["T", "T > A"]


TRAVEL = """## Daily allowance

| City group | Hotel limit per night | Meals per day |
|---|---:|---|
| Group A (London, Paris) | 220 euros | 60 euros |
| Group B (all other cities) | 150 euros | |

Alcohol is never reimbursed.
| not | a table |
"""


def test_a_table_becomes_a_line_per_row_in_markdown_html_and_docx():
    """Seen as a new user: a travel policy's allowance table was one 'sentence' of pipes and dashes that
    the model copied whole ("What is the meal allowance in Berlin?"); each row now reads on its own."""
    import io

    import docx

    from rag.ingest.loaders import docx_sections, html_sections, markdown_sections

    rows = ["City group: Group A (London, Paris); Hotel limit per night: 220 euros; Meals per day: 60 euros.",
            "City group: Group B (all other cities); Hotel limit per night: 150 euros."]     # an empty cell left out
    text = markdown_sections(TRAVEL)[0].text
    assert text.splitlines()[2:4] == rows
    assert "Alcohol is never reimbursed.\n| not | a table |" in text      # pipes without a header rule stay
    page = ("<html><body><article><h1>Prices</h1><p>Our prices for 2026 include tax for all customers.</p>"
            "<table><tr><th>Plan</th><th>Monthly price</th></tr><tr><td>Basic</td><td>5 euros</td></tr>"
            "<tr><td>Pro</td><td>12 euros</td></tr></table><p>Prices change every January.</p></article></body></html>")
    assert "Plan: Basic; Monthly price: 5 euros.\nPlan: Pro; Monthly price: 12 euros." in html_sections(page, "p.html")[0].text
    document = docx.Document()
    document.add_paragraph("The fees below apply from March.")
    table = document.add_table(rows=2, cols=2)
    for (r, c), value in {(0, 0): "Service", (0, 1): "Fee", (1, 0): "Lost card", (1, 1): "5 euros"}.items():
        table.cell(r, c).text = value
    document.add_paragraph("Fees are paid at the desk.")
    data = io.BytesIO()
    document.save(data)
    text = docx_sections(data.getvalue(), "f.docx")[0].text     # a .docx table was lost before
    assert text.index("March.") < text.index("Service: Lost card; Fee: 5 euros.") < text.index("Fees are paid")
