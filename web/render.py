"""Plain text and HTML for the page: the sources panel, the documents table, the profile.

No Gradio here: functions take the pipeline's records and return strings, lists or dicts, so they
are easy to read and to check on their own. Everything that came from a document or a user is
HTML-escaped before it goes into markup.
"""
from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from common.sentences import field_line, title_lines, without_quote_marks
from rag.events import Hit

SOURCES_EMPTY = ("<div class='rag-sources-empty'>Sources appear here after an answer: the passages "
                 "the answer was written from, numbered like the <b>[n]</b> citations in it.</div>")
SOURCES_NONE = ("<div class='rag-sources-empty'>No passage in your documents matched this question, "
                "so the answer cites no sources.</div>")
SOURCES_SEARCHING = "<div class='rag-sources-empty'>Searching your documents…</div>"
PASSAGE_CHARS = 1500


def sources_json(hits: Sequence[Hit]) -> list[dict]:
    """The API's and the history's form of the sources: numbered like the answer's [n] citations."""
    return [{"n": n, "source": h.source, "location": h.location, "text": h.text, "score": round(h.score, 6),
             "similarity": round(h.dense_score, 3)} for n, h in enumerate(hits, 1)]


def reflow(text: str) -> str:
    """A passage as readable paragraphs: hard-wrapped lines joined, markdown heading marks dropped
    (the heading is shown as the passage's location already)."""
    paragraphs = []
    lines = without_quote_marks(text).strip().split("\n")     # an e-mail's quoted lines read as its own
    for i in title_lines(lines):          # a plain-text title stands apart, not run into its paragraph
        lines[i] = ("\n" if i else "") + lines[i] + "\n"    # nor into the line before (a PDF's: no blank line)
    for block in re.split(r"\n\s*\n", "\n".join(lines)):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if lines and all(line.startswith("#") for line in lines):
            continue
        lines = [re.sub(r"^#{1,6}\s+", "", line) for line in lines]
        # a table's rows (rag/ingest/loaders.py `row_sentence`) and an e-mail's header fields stay a line each
        # (the panel keeps line breaks)
        paragraphs.append("".join(("\n" if _one_line(line) and _one_line(lines[i - 1]) else " ") + line
                                  if i else line for i, line in enumerate(lines)))
    return "\n\n".join(p for p in paragraphs if p) or text.strip()


_ROW = re.compile(r"^[^:;]{1,80}: [^;]*(?:; [^:;]{1,80}: [^;]*)+$")


def _one_line(line: str) -> bool:
    return bool(_ROW.match(line)) or field_line(line)


def _score_label(source: dict) -> str:
    """Cosine similarity reads as a match strength; the fused rank score (~0.03) means nothing to a reader."""
    if source.get("similarity") is not None:
        return f"match {max(0.0, float(source['similarity'])):.0%}"
    return f"score {float(source.get('score') or 0.0):.4f}"


def sources_html(sources: Sequence[dict] | None, searched: bool = True) -> str:
    """The sources panel for one answer's `sources_json`; `searched` False before any question."""
    if not sources:
        return SOURCES_NONE if searched else SOURCES_EMPTY
    items = []
    for s in sources:
        where = html.escape(str(s.get("location") or ""))
        text = reflow(str(s.get("text") or ""))
        if len(text) > PASSAGE_CHARS:
            text = text[:PASSAGE_CHARS].rsplit(" ", 1)[0] + " …"
        items.append(
            "<details class='rag-source'{open}><summary><span class='rag-n'>[{n}]</span> "
            "<span class='rag-doc'>{doc}</span>{where}<span class='rag-score'>{score}</span>"
            "</summary><div class='rag-passage'>{text}</div></details>".format(
                open=" open" if s.get("n") == 1 else "", n=int(s.get("n", 0)),
                doc=html.escape(str(s.get("source") or "?")),
                where=f"<span class='rag-where'>{where}</span>" if where else "",
                score=_score_label(s), text=html.escape(text)))
    return "<div class='rag-sources'>" + "".join(items) + "</div>"


def document_kind(uri: str, root: str, folder: Path | None, uploads: Path) -> str:
    if uri.lower().startswith(("http://", "https://")):
        return "web page"
    try:
        if folder is not None and Path(root).resolve() == folder.resolve():
            return "documents folder"
        if Path(root).resolve() == uploads.resolve():
            return "uploaded"
    except OSError:
        pass
    return "file"


def documents_rows(docs: Iterable, folder: Path | None, uploads: Path) -> list[list]:
    """Rows for the documents table: name, chunks, where it came from."""
    return [[d.source, d.n_chunks, document_kind(d.uri, d.root, folder, uploads)] for d in docs]


def documents_choices(docs: Iterable) -> list[tuple[str, str]]:
    """(label, value) pairs for the remove dropdown: the name shown, the catalog id removed (never
    the server path the document was read from)."""
    return [(f"{d.source} ({d.n_chunks} chunks)", str(d.id)) for d in docs]


def md_escape(text: str) -> str:
    """Text shown literally in Markdown (file names like `_v2_` must not turn italic)."""
    return re.sub(r"([\\`*_{}\[\]<>()#+\-.!|~&])", r"\\\1", " ".join(text.split()))


_EVIDENCE = re.compile(r'(\n\n(?:Source|Closest passage) \[\d+\]: ")(.*)("\s*)$', re.S)
_MARKUP = re.compile(r"[<>]|(?<=!)\[|:(?=//)")
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def chat_markdown(text: str) -> str:
    """An answer as the Chatbot shows it. The Chatbot renders Markdown and HTML, and an answer carries
    document text (the quoted evidence, a fallback sentence, words the model copied): none of it may
    make the browser fetch something. The quote is shown literally (every punctuation mark escaped,
    so no markup and no link). The rest keeps its Markdown (bold, lists) but no HTML, images or
    autolinks: `<`, `>`, the `[` of `![` and the `:` of `://` are escaped."""
    quote = _EVIDENCE.search(text)
    head = text[: quote.start()] if quote else text
    shown = _MARKUP.sub(lambda m: "\\" + m.group(0), head)
    if quote:
        shown += quote.group(1) + _PUNCTUATION.sub(r"\\\1", " ".join(quote.group(2).split())) + quote.group(3)
    return shown


def report_markdown(title: str, done: Sequence[str], errors: Sequence[dict], summary: str = "") -> str:
    """Per-source outcome of an ingest, for the documents tab's status box."""
    lines = [f"**{title}**" + (f" — {summary}" if summary else "")]
    lines += [f"- **Added:** {md_escape(item)}" for item in done]
    lines += [f"- **Not added:** {md_escape(str(e.get('error') or e.get('source')))}" for e in errors]
    return "\n".join(lines)


def profile_markdown(cfg, synthesizer_name: str | None, transcriber_error: str | None,
                     counts: tuple[int, int]) -> str:
    """The settings tab's description of what runs this page."""
    llm = cfg.llm
    where = llm.base_url if llm.backend == "openai" else f"device {llm.device}"
    if llm.backend == "llamacpp":
        where = f"CPU, {llm.n_threads} threads"
    tts = (synthesizer_name or cfg.tts.backend) if cfg.tts.enabled else "off (tts.enabled is false)"
    asr = f"{cfg.asr.backend}, `{cfg.asr.model}` ({cfg.asr.device}, {cfg.asr.compute_type})"
    if transcriber_error:
        asr += f" — **not available**: {html.escape(transcriber_error)}"
    folder = cfg.documents.folder or "(none)"
    rows = [
        ("Language model", f"{llm.backend}, `{llm.model}` ({where}), up to {llm.max_new_tokens} new tokens"),
        ("Embeddings", f"`{cfg.embeddings.model}` ({cfg.embeddings.device})"),
        ("Search", f"{cfg.vector_store.backend} vectors" + (" + BM25 keywords" if cfg.retrieval.lexical else "")
         + f", {cfg.retrieval.k} passages by default"),
        ("Speech recognition", asr),
        ("Speech synthesis", tts),
        ("Documents", f"{counts[0]} documents, {counts[1]} passages; folder `{folder}`, "
                      f"data in `{cfg.data_dir}`"),
    ]
    return "| Part | In use |\n|---|---|\n" + "\n".join(f"| **{k}** | {v} |" for k, v in rows)
