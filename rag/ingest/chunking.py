"""Token-sized chunks split at paragraph and sentence boundaries, with overlap.

Sizes are counted in tokens of the embedding model's own tokenizer, because that model silently
truncates anything past its limit (256 word pieces for all-MiniLM-L6-v2): a chunk it cannot read
whole would be found only by its beginning.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from langchain_text_splitters import RecursiveCharacterTextSplitter

from rag.ingest.loaders import Section

SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]


@dataclass(frozen=True)
class Chunk:
    text: str          # what the user sees and the model reads
    embed_text: str    # what is embedded and indexed: the text under its document title and heading
    location: str
    start: int         # character offset of the chunk in its section

    @property
    def hash(self) -> str:
        """Identity for deduplication: the passage itself, wherever (and under whatever title) it occurs."""
        return hashlib.sha1(self.text.encode("utf-8")).hexdigest()


SHORT = 32                 # pieces this short have their token count remembered
REMEMBERED = 50_000        # short pieces remembered at most (then forgotten all at once)


def remembering_short(count_tokens: Callable[[str], int]) -> Callable[[str], int]:
    """count_tokens that asks the tokenizer once per distinct short piece.

    The recursive splitter's worst case is text without separators: it falls back to single
    characters and measures each of them, and each again while merging them into chunks and
    sliding the overlap: three tokenizer calls per character, 108 s for 300 KB. Short pieces repeat
    (an alphabet, common words), so remembering their counts makes that case a dictionary lookup
    per character; longer pieces are measured as before (each once per level of the recursion)."""
    counts: dict[str, int] = {}

    def count(text: str) -> int:
        if len(text) > SHORT:
            return count_tokens(text)
        found = counts.get(text)
        if found is None:
            if len(counts) >= REMEMBERED:
                counts.clear()
            found = counts[text] = count_tokens(text)
        return found

    return count


def make_splitter(count_tokens: Callable[[str], int], chunk_tokens: int, overlap_tokens: int
                  ) -> RecursiveCharacterTextSplitter:
    return RecursiveCharacterTextSplitter(
        separators=SEPARATORS, keep_separator="end", chunk_size=chunk_tokens,
        chunk_overlap=min(overlap_tokens, chunk_tokens // 2), length_function=remembering_short(count_tokens),
        add_start_index=True, strip_whitespace=True)


def title_of(source: str) -> str:
    """'docs/Samoa_history.txt' -> 'Samoa history': a document's name often says what it is about."""
    name = source.rstrip("/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return " ".join(stem.replace("_", " ").replace("-", " ").split())


def chunk_sections(sections: list[Section], source: str, splitter: RecursiveCharacterTextSplitter) -> list[Chunk]:
    title = title_of(source)
    chunks: list[Chunk] = []
    for section in sections:
        header = title if not section.location or section.location.startswith("page ") else \
            f"{title} > {section.location}"
        for doc in splitter.create_documents([section.text]):
            text = doc.page_content.strip()
            if not text:
                continue
            chunks.append(Chunk(text=text, embed_text=f"{header}\n{text}", location=section.location,
                                start=int(doc.metadata.get("start_index", 0))))
    return chunks
