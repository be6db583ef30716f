"""Entry point: the command line (ingest, search, ask, transcribe, say) and `serve` (the web page).

This is the edge: RagErrors become one line on stderr and exit status 2 here, and nowhere else.
JSON goes to stdout; logs and progress bars go to stderr. See README.md and ../shared/CLI-CONTRACT.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from rag.config import load_config
from common.errors import RagError, UserInputError, one_line

log = logging.getLogger("app")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="app.py", description="Offline voice RAG chatbot over your documents.")
    p.add_argument("--config", default="config.yaml", help="config file (default config.yaml)")
    p.add_argument("--data-dir", help="where this instance keeps its index, history and caches")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value by dotted key, e.g. retrieval.k=8 (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = p.add_subparsers(dest="command")

    s = sub.add_parser("serve", help="start the web page (the default)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)

    s = sub.add_parser("ingest", help="add or refresh documents (files, folders, http(s) URLs)")
    s.add_argument("paths", nargs="*", metavar="PATH_OR_URL")
    s.add_argument("--json", action="store_true")
    s.add_argument("--rebuild", action="store_true", help="drop the index first and build it from scratch")
    s.add_argument("--remove", action="store_true", help="remove these documents from the index instead")
    s.add_argument("--list", action="store_true", help="list indexed documents")

    for name, help_ in (("search", "retrieval only, no generation"), ("ask", "the full, cited answer")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("question", nargs="?" if name == "ask" else None,
                       help="the question, or - to read one per line from stdin (JSON lines out)")
        s.add_argument("-k", type=int, help="passages to retrieve")
        s.add_argument("--history", help="JSON file with [{\"role\": ..., \"content\": ...}] messages")
        s.add_argument("--json", action="store_true")
        s.add_argument("--source", action="append", default=[], metavar="PATTERN",
                       help="only these documents: a source, a folder, or a glob like 'manuals/*.pdf' "
                            "(repeatable; see ingest --list)")
        if name == "ask":
            s.add_argument("--speak", metavar="OUT.wav", help="also speak the answer into this WAV file")
            s.add_argument("--voice", action="store_true", help="answer in a style made to be heard")
            s.add_argument("--audio", metavar="QUESTION.wav",
                           help="ask by voice: transcribe this recording, answer in voice style; timings "
                                "count from the end of the recording")

    s = sub.add_parser("migrate", help="fill the configured vector store from the catalog (no re-embedding), "
                       "e.g. --set vector_store.backend=qdrant migrate")
    s.add_argument("--json", action="store_true")
    s.add_argument("--catalog-from", metavar="DIR",
                   help="first copy this data dir's SQLite catalog (or a catalog.sqlite) into the configured "
                        "catalog, e.g. PostgreSQL, vectors included")
    s.add_argument("--replace", action="store_true", help="with --catalog-from: drop what the target catalog holds")

    s = sub.add_parser("transcribe", help="speech to text")
    s.add_argument("audio")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("converse", help="a recorded spoken conversation through the call mode's turn-taking")
    s.add_argument("audio", metavar="AUDIO")
    s.add_argument("--realtime", action="store_true", help="feed the audio at real-time pace, as a browser does")
    s.add_argument("--json", action="store_true", help="one JSON line per turn")

    s = sub.add_parser("say", help="speak a text into a WAV file")
    s.add_argument("text")
    s.add_argument("-o", "--output", required=True, metavar="OUT.wav")
    return p


def _read_history(path: str | None) -> list[dict]:
    if not path:
        return []
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"history file '{path}' not found") from None
    except (OSError, ValueError) as err:
        raise UserInputError(f"history file '{path}' is not valid JSON: {err}") from None
    if not isinstance(data, list):
        raise UserInputError(f"history file '{path}' must hold a JSON list of {{role, content}} messages")
    return data


def _batch_lines():
    """Yield (question, history) per stdin line: plain text, or {"question": ..., "history": [...]}."""
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
                yield str(obj.get("question", "")), obj.get("history") or []
            except (ValueError, AttributeError):
                yield None, line
        else:
            yield line, []


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def cmd_ingest(engines, args) -> int:
    from rag.ingest.ingestor import wipe_index

    if args.list:
        docs = engines.index.catalog.documents()
        if args.json:
            _emit({"documents": [{"source": d.source, "uri": d.uri, "chunks": d.n_chunks} for d in docs]})
        else:
            for d in docs:
                print(f"{d.n_chunks:6d}  {d.source}")
        return 0
    if args.remove:
        removed = sum(engines.ingestor.remove(str(Path(p).resolve()) if not p.startswith("http") else p)
                      for p in args.paths)
        print(json.dumps({"removed": removed}) if args.json else f"{removed} removed")
        return 0
    if not args.paths:
        raise UserInputError("ingest needs at least one file, folder or URL")
    missing = [p for p in args.paths if not p.lower().startswith(("http://", "https://")) and not Path(p).exists()]
    if len(missing) == len(args.paths):
        raise UserInputError(f"no such file or folder: {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                          if len(missing) > 1 else ""))
    if args.rebuild:
        wipe_index(engines.cfg)
    report = engines.ingestor.ingest(args.paths, progress=sys.stderr.isatty() or not args.json)
    if args.json:
        _emit(report.as_json())
    else:
        print(report.summary())
        for err in report.errors:
            print(f"  skipped: {err['error']}", file=sys.stderr)
    return 1 if report.errors else 0


def _search_json(engines, question, history, args) -> dict:
    standalone, hits = engines.pipeline().search(question, history, args.k, sources=tuple(args.source))
    return {"question": question, "standalone_question": standalone, "hits": [h.as_json() for h in hits]}


def _check_question(args) -> None:
    """Fail fast, before any model loads."""
    if getattr(args, "audio", None):
        if args.question:
            raise UserInputError("give either a QUESTION or --audio, not both")
        if not Path(args.audio).is_file():
            raise UserInputError(f"audio file '{args.audio}' not found")
        return
    if args.question is None:
        raise UserInputError("ask needs a QUESTION (or --audio FILE, or - for stdin)")
    if args.question != "-" and not args.question.strip():
        raise UserInputError("the question is empty; pass a question, or - to read questions from stdin")
    if args.k is not None and not 1 <= args.k <= 50:
        raise UserInputError(f"-k must be between 1 and 50, got {args.k}")


def _answer_batch(answer) -> int:
    """`QUESTION -`: one JSON line out per line in; a bad line gets its error line and the rest go on."""
    for question, history in _batch_lines():
        try:
            if question is None:
                raise UserInputError(f"input line is not valid JSON: {history[:80]}")
            _emit(answer(question, history))
        except RagError as err:
            _emit({"question": question, "error": one_line(err)})
    return 0


def cmd_search(engines, args) -> int:
    _check_question(args)
    history = _read_history(args.history)
    engines.ensure_documents()
    if args.question == "-":
        return _answer_batch(lambda question, history: _search_json(engines, question, history, args))
    result = _search_json(engines, args.question, history, args)
    if args.json:
        _emit(result)
    else:
        print(f"standalone question: {result['standalone_question']}")
        for n, hit in enumerate(result["hits"], 1):
            where = hit["source"] + (f", {hit['location']}" if hit["location"] else "")
            print(f"[{n}] {where} (score {hit['score']:.4f})\n    {hit['text'][:300]}")
    return 0


def _ask_once(engines, question, history, args, stream_text: bool) -> dict:
    from rag.events import Notice, Queued, TextDelta, fold
    from rag.pipeline import AskOptions

    t0 = time.perf_counter()
    transcript = None
    if getattr(args, "audio", None):
        engines.llm, engines.retriever   # load first: the clock runs from the end of the recording
        t0 = time.perf_counter()
        transcript = engines.transcriber.transcribe(args.audio)
        question = transcript.text
    speak = bool(getattr(args, "speak", None))
    options = AskOptions(k=args.k, voice=getattr(args, "voice", False) or transcript is not None, speak=speak,
                         sources=tuple(args.source), language=transcript.language if transcript else None)
    def show(event) -> None:
        if isinstance(event, TextDelta) and stream_text:
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, Queued):
            log.info("waiting for the model: position %d", event.position)
        elif isinstance(event, Notice):
            print(f"warning: {event.message}", file=sys.stderr)

    outcome = fold(engines.pipeline(speak=speak).ask(question, history, options, t0=t0), show)
    if outcome.failed is not None:
        failed = outcome.failed
        raise failed.error if isinstance(failed.error, RagError) else RagError(failed.message)
    audio, done = outcome.audio, outcome.done
    if speak:
        from common.wav import write_wav

        import numpy as np
        rate = audio[0].sample_rate if audio else 22050
        write_wav(args.speak, np.concatenate([a.samples for a in audio]) if audio else np.zeros(0, np.float32), rate)
    if transcript is not None:
        done.timings["transcript_s"] = round(transcript.timings.get("decode_s", 0)
                                             + transcript.timings.get("transcribe_s", 0), 4)
    return {**({"question": question} if transcript is not None else {}),
            "answer": done.answer, "standalone_question": done.standalone_question,
            "sources": [{"n": n, "source": h.source, "location": h.location, "text": h.text,
                         "score": round(h.score, 6)} for n, h in enumerate(done.sources, 1)],
            "timings": done.timings, "abstained": done.abstained, "language": done.language,
            **({"question_language": transcript.language, "language_probability": transcript.language_probability}
               if transcript is not None else {})}


def cmd_ask(engines, args) -> int:
    _check_question(args)
    history = _read_history(args.history)
    engines.ensure_documents()
    if args.question == "-":
        return _answer_batch(lambda question, history: _ask_once(engines, question, history, args, stream_text=False))
    if args.json:
        _emit(_ask_once(engines, args.question, history, args, stream_text=False))
        return 0
    result = _ask_once(engines, args.question, history, args, stream_text=True)
    print()
    for src in result["sources"]:
        where = src["source"] + (f", {src['location']}" if src["location"] else "")
        print(f"  [{src['n']}] {where}")
    return 0


def cmd_migrate(engines, args) -> int:
    copied = None
    if args.catalog_from:
        from rag.index.catalog_copy import copy_catalog

        copied = copy_catalog(engines.cfg, args.catalog_from, replace=args.replace,
                              dimension=lambda: engines.embedder.dimension)
    elif args.replace:
        raise UserInputError("--replace goes with --catalog-from DIR")
    index = engines.index            # opening rebuilds the store from the catalog when it is behind
    docs, chunks = index.catalog.counts()
    result = {"backend": engines.cfg.vector_store.backend, "documents": docs, "chunks": chunks,
              "vectors": len(index.store)}
    line = f"{result['backend']}: {result['vectors']} vectors for {chunks} chunks of {docs} documents"
    if copied:
        result["copied"] = {"documents": copied.documents, "chunks": copied.chunks,
                            "seconds": round(copied.seconds, 3), "from": copied.source, "to": copied.target}
        line = (f"copied {copied.documents} documents, {copied.chunks} chunks from {copied.source} to "
                f"{copied.target} in {copied.seconds:.1f} s; {line}")
    print(json.dumps(result) if args.json else line)
    return 0 if result["vectors"] == chunks else 1


def cmd_transcribe(engines, args) -> int:
    result = engines.transcriber.transcribe(args.audio)
    out = {"text": result.text, "language": result.language, "language_probability": result.language_probability,
           "duration_s": round(result.duration_s, 3), "timings": result.timings}
    if args.json:
        _emit(out)
    else:
        print(result.text)
    return 0


def cmd_say(engines, args) -> int:
    from common.wav import write_wav

    text = " ".join(args.text.split())
    if not text:
        raise UserInputError("nothing to say: the text is empty")
    synth = engines.synthesizer
    write_wav(args.output, synth.synthesize(text), synth.sample_rate)
    return 0


def cmd_converse(engines, args) -> int:
    """A recording through a Call, one session; each turn is printed as it ends."""
    from common.audio import load_audio
    from rag.call import Call, SkippingClock, play_recording

    samples = load_audio(args.audio)           # the whole recording, 16 kHz mono (asr.max_audio_s applies)
    engines.ensure_documents()
    clock = SkippingClock()
    call = Call(engines, clock)
    call.warm_up()                             # loading and first calls are not on the recording's clock

    def show(record) -> None:
        if args.json:
            _emit(record.as_json())
        else:
            flag = " (interrupted)" if record.barged_in else ""
            print(f"[{record.speech_start_s:.2f}-{record.speech_end_s:.2f} s] you: {record.transcript}\n"
                  f"  answer{flag}: {record.spoken if record.barged_in else record.answer}", flush=True)

    play_recording(call, samples, clock, realtime=args.realtime, on_record=show)
    return 0


def cmd_serve(engines, args) -> int:
    from web.page import serve   # gradio is imported only here, in the app layer

    serve(engines, host=args.host, port=args.port)
    return 0


COMMANDS = {"serve": cmd_serve, "ingest": cmd_ingest, "migrate": cmd_migrate, "search": cmd_search, "ask": cmd_ask,
            "transcribe": cmd_transcribe, "say": cmd_say, "converse": cmd_converse}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "serve"
    if command == "serve" and not args.command:
        args.host, args.port = None, None
    verbose = args.verbose or command == "serve"
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.set, args.data_dir)
        from rag.engines import Engines

        return COMMANDS[command](Engines(cfg), args)
    except RagError as err:
        log.debug("failed", exc_info=True)
        print(f"error: {one_line(err)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
