"""The question-to-answer pipeline, as plain Python yielding typed events.

question -> standalone question -> retrieve -> prompt -> stream text -> sentences -> speech.
The page, the CLI, the benchmarks and the tests all drive this one generator. Each call has its
own state (no shared streamer), and closing the generator or setting `cancel` stops generation.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from common import language as lang
from rag.answer.follow_up import looks_like_follow_up, sentence_queries
from rag.answer.abstain import Signals, coverage, decide, missing_names, question_terms
from rag.answer.language import Languages, choose, clean_translation, not_found, question_language, translate_messages
from rag.config import Config
from common.errors import RagError, UserInputError, one_line
from rag.answer.filters import AnswerFilters
from rag.answer.evidence import (Sentence, SentenceVectors, evidence_line, focus, in_context, pick_evidence,
                                 rank_sentences, support)
from rag.events import Done, Event, Failed, Hit, Queued, Retrieved, TextDelta
from rag.models.llm import ChatModel, GenerationSettings
from rag.answer.prompt import (NOT_FOUND, QUESTION_MARK, answer_messages, best_supporting_source, cited_numbers, clean_history,
                        clean_rewrite, fit_sources, model_history, rewrite_messages, says_not_found)
from rag.answer.small_talk import small_talk
from rag.answer.grounding import says_nothing
from rag.speaker import Speaker
from rag.retrieve import Query, Retriever

log = logging.getLogger(__name__)
Message = dict[str, str]


@dataclass(frozen=True)
class AskOptions:
    k: int | None = None
    voice: bool = False        # the question came by voice: answer in a style made to be heard
    speak: bool = False        # synthesize the answer sentence by sentence while it is written
    rewrite: bool | None = None
    sources: tuple[str, ...] = ()   # metadata filter: only these documents (globs, sources, folders)
    language: str | None = None     # the language speech recognition heard the question in
    answer_language: str | None = None   # the user's pick (Settings); None: prompt.answer_language, else the question's


def labelled_texts(sources: Sequence[Hit]) -> list[str]:
    """Each source's words as the decline rule and the grounding filter read them: a chunk does not
    repeat its document's title, so its file name and heading count as its words."""
    return [f"{h.text} {h.source} {h.location}" for h in sources]


@dataclass(frozen=True)
class Plan:
    standalone: str
    ranked: list[Sentence]
    sources: tuple[Hit, ...]           # empty: decline
    messages: list[Message]
    languages: Languages = Languages(None, None, "en")
    shown: tuple[Hit, ...] = ()        # the sources as the prompt shows them (cut to their best sentences)
    history: tuple[tuple[str, str], ...] = ()   # the turns the prompt holds before the question
    read: int = 0                      # prompt tokens a read-ahead (Pipeline.prefill) read into the model


def agrees(ahead: Plan | None, sources: Sequence[Hit], ranked: Sequence[Sentence],
           history: tuple[tuple[str, str], ...], best: int) -> bool:
    """May the answer keep the prompt a read-ahead built from the user's words so far (and the model has
    already read)? Only when nothing the model would be shown changes in substance: the same history, the
    same passages (in any order), and the whole question's `best` sentences all among those the
    read-ahead shows (it picked them for the partial words)."""
    if ahead is None or not ahead.shown or ahead.history != history:
        return False
    if {h.chunk_id for h in ahead.sources} != {h.chunk_id for h in sources} or len(ahead.sources) != len(sources):
        return False
    shown = {h.chunk_id: h.text for h in ahead.shown}
    return all(s.text in shown.get(sources[s.source - 1].chunk_id, "") for s in ranked[:best])


class Pipeline:
    def __init__(self, cfg: Config, retriever: Retriever, llm: ChatModel, synthesizer=None,
                 sentence_vectors: SentenceVectors | None = None, voices=None):
        self.cfg = cfg
        self.voices = voices       # tts/languages.py LanguageVoices: the voice of each answer language
        self.retriever = retriever
        self.llm = llm
        self.synthesizer = synthesizer
        # The server's shared memory of sentence vectors (Engines.sentence_vectors), or one of our own.
        self._sentence_vectors = sentence_vectors
        self._documents_language: tuple[int, str | None] = (-1, None)   # (catalog generation, language)
        self.read_aheads_kept = 0      # answers that kept a read-ahead's prompt (the voice benchmark counts them)

    @property
    def sentence_vectors(self) -> SentenceVectors:
        """The server's shared memory of sentence vectors (Engines.sentence_vectors), or one of our own."""
        if self._sentence_vectors is None:
            self._sentence_vectors = SentenceVectors(self.retriever.index.embedder.embed)
        return self._sentence_vectors

    # -- question -> passages -------------------------------------------------------------------
    def check_question(self, question: str) -> str:
        question = " ".join((question or "").split())
        if not question:
            raise UserInputError("the question is empty; type or say a question")
        limit = self.cfg.prompt.max_question_chars
        if len(question) > limit:
            raise UserInputError(f"the question is {len(question):,} characters; the limit is {limit:,} "
                                 "(prompt.max_question_chars): shorten it")
        return question

    # -- languages (issue 16) ----------------------------------------------------------------------
    def documents_language(self) -> str | None:
        """The language most indexed documents are in (catalog, per document), looked up once per catalog
        generation; None for an empty index or one whose language is not known."""
        catalog = getattr(self.retriever.index, "catalog", None)
        if catalog is None:      # an index without a catalog (a stand-in in unit tests) has no language
            return None
        generation = catalog.generation()
        if self._documents_language[0] != generation:
            counts = {code: n for code, n in catalog.languages().items() if code}
            self._documents_language = (generation, max(counts, key=counts.get) if counts else None)
        return self._documents_language[1]

    def languages(self, question: str, options: AskOptions = AskOptions()) -> Languages:
        """The question's language (heard, or counted among asr.languages), the documents', and the answer's."""
        allowed = self.cfg.asr.allowed_languages()
        asked = question_language(question, options.language, allowed)
        return choose(asked, self.documents_language(), options.answer_language or self.cfg.prompt.answer_language)

    def standalone(self, question: str, history: list[Message], rewrite: bool, translate_to: str | None = None,
                   language: str | None = None) -> str:
        """The LLM's rewrite of a follow-up, or the question itself when there is no history. A question in
        another language than the documents is translated into theirs in the same call (`translate_to`).
        `language`: the question's, which picks the follow-up words (rag/answer/follow_up.py)."""
        translate_to = translate_to if self.cfg.memory.translate else None
        if not translate_to and (not history or not rewrite or not looks_like_follow_up(question, language)):
            return question     # a question complete on its own needs no rewrite (and no LLM call)
        recent = history[-4:] if rewrite else []
        messages = (translate_messages(question, recent, translate_to) if translate_to
                    else rewrite_messages(question, recent))
        text = ""
        try:
            for position in self.llm.gate.wait():
                log.debug("rewrite waits at %d", position)
            try:
                text = self.llm.complete(messages, GenerationSettings(64 if translate_to else 48, 0.0))
            finally:
                self.llm.gate.leave()
        except RagError as err:
            log.warning("standalone rewrite skipped: %s", one_line(err))
        if translate_to:
            return clean_translation(text, question, translate_to) or question
        return clean_rewrite(text, question) or question

    def queries(self, question: str, standalone: str, history: list[Message], language: str | None = None) -> list[Query]:
        """Fuse the rewrite with history-aware queries: small models rewrite poorly, and the
        previous turn usually names what a follow-up's pronouns point at. A question that reads as
        complete on its own (a change of topic) keeps the lead, with the history only breaking ties."""
        users = [m["content"] for m in history if m["role"] == "user"][-self.cfg.memory.history_turns:]
        answers = [m["content"] for m in history if m["role"] == "assistant"]
        if not users:
            # A translated question (issue 16) leads; the original keeps the names and numbers it shares
            # with the documents, as the history-aware queries back up a follow-up's rewrite. At a quarter
            # weight: its other words are noise to an English embedder (at 0.5 it cost 1 of 24 questions).
            return [Query(standalone)] if standalone == question else [Query(standalone), Query(question, 0.25)]
        follow_up = looks_like_follow_up(question, language)
        own, context = (0.5, 1.0) if follow_up else (1.0, 0.25)
        queries = [Query(question, own), Query(" ".join(users + [question]), context)]
        if answers:
            queries.append(Query(" ".join([users[-1], answers[-1][:600], question]), context))
        if standalone != question:
            queries.append(Query(standalone))
        return queries

    def search(self, question: str, history: Sequence[Message] | None = None, k: int | None = None,
               rewrite: bool | None = None, sources: Sequence[str] = (),
               languages: Languages | None = None) -> tuple[str, list[Hit]]:
        question = self.check_question(question)
        hist = clean_history(history, self.cfg.memory.max_messages)
        languages = languages or self.languages(question)
        standalone = self.standalone(question, hist, self.cfg.memory.rewrite if rewrite is None else rewrite,
                                     languages.translate_to, languages.question)
        return standalone, self.retriever.search(self.queries(question, standalone, hist, languages.question), k, sources)

    def should_abstain(self, hits: list[Hit], signals: Signals | None = None) -> bool:
        """Decline without asking the model? With `signals` (from `support`) the full rule of
        rag/answer/abstain.py; without, the passage similarity alone."""
        if not hits:
            return True
        reason = decide(signals or Signals(max(h.dense_score for h in hits), -1.0, 1.0), self.cfg.retrieval)
        if reason:
            log.info("abstaining: %s", reason)
        return reason is not None

    def support(self, question: str, standalone: str, history: list[Message],
                sources: Sequence[Hit], hits: Sequence[Hit], language: str | None = None) -> tuple[Signals, list[Sentence]]:
        """How well the passages the model would get match the question: the abstention signals and
        their sentences ranked (focus sentences, the evidence quote). A follow-up's own words name no
        subject ("When is it closed?" ranked another document's "It is closed on Sundays" first, seen as
        a new user), and read with the earlier turns it matches their answer best: a sentence scores
        its mean match to both readings. For the decline signals only, it is also read with the
        earlier answer (3 of 20 answerable follow-ups were declined without it, 1 with; ranked by it,
        the quote would be the earlier answer's). `dense` stays the best over all `hits`."""
        texts, follow_up = sentence_queries(question, standalone, history, self.cfg.memory.history_turns, language)
        passages = [h.text for h in sources]
        ranked = rank_sentences(texts, passages, self.sentence_vectors, mean=follow_up) if passages else []
        best, asked = support(ranked), " ".join(texts)
        answers = [m["content"] for m in model_history(history) if m["role"] == "assistant"]
        if follow_up and answers and passages:     # (declined exchanges are not among them: they name nothing)
            with_answer = f"{answers[-1]} {question}"
            best = max(best, support(rank_sentences([with_answer], passages, self.sentence_vectors)))
            asked += " " + with_answer
        dense = max((h.dense_score for h in hits), default=-1.0)
        labelled = labelled_texts(sources)
        share = coverage(asked, labelled)
        weighted = (coverage(asked, labelled, self.retriever.index.idf(question_terms(asked)))
                    if self.cfg.retrieval.abstain_coverage_idf else share)   # frequencies counted only if used
        unnamed = self.retriever.index.unseen(missing_names(question, labelled, language))   # the user's words
        return Signals(dense, best, share, weighted, unnamed), ranked

    def plan(self, question: str, hist: list[Message], options: AskOptions, ahead: Plan | None = None) -> Plan:
        """Everything before the model writes: the passages, whether to decline, and the messages.
        `ahead`: the plan a read-ahead made from the words so far; its prompt is kept when it `agrees`."""
        languages = self.languages(question, options)
        if small_talk(question):     # no search: after other questions, "Thanks!" read as a follow-up found passages
            return Plan(question, [], (), [], languages)
        standalone, hits = self.search(question, hist, options.k, options.rewrite, options.sources, languages)
        chosen = hits[: self.cfg.prompt.max_sources or len(hits)]
        sources = tuple(fit_sources(chosen, self.llm.count_tokens, self.cfg.prompt.context_tokens))
        signals, ranked = self.support(question, standalone, hist, sources, hits, languages.question)
        if self.should_abstain(hits, signals) or not sources:
            return Plan(standalone, ranked, (), [], languages)
        # Only a follow-up shows the model the last exchange: a question that stands alone needs none, and
        # the 135M model wrote the earlier answer again ("Does the warranty cover limescale damage?" got the
        # kettle's presets, seen as a new user).
        last = hist[-2:] if looks_like_follow_up(question, languages.question) else []
        recent = tuple((m["role"], m["content"]) for m in last)
        if agrees(ahead, sources, ranked, recent, self.cfg.prompt.focus_sentences or 0):
            # The passages in the read-ahead's order and cut: the model has read them already. `ranked`
            # numbers the passages, so it is ranked again in that order (cheap: the vectors are cached).
            sources, shown = ahead.sources, ahead.shown
            _, ranked = self.support(question, standalone, hist, sources, hits, languages.question)
            self.read_aheads_kept += 1
            log.info("read-ahead kept: %d prompt tokens already read", ahead.read)
        else:
            shown = tuple(focus(sources, ranked, self.cfg.prompt.focus_sentences)
                          if self.cfg.prompt.focus_sentences else sources)
        return Plan(standalone, ranked, sources,
                    answer_messages(question, shown, last, options.voice, self.cfg.prompt.example,
                                    self.cfg.prompt.system, language_line=languages.instruction), languages,
                    shown, recent)

    def prefill(self, question: str, history: Sequence[Message] | None = None, options: AskOptions = AskOptions(),
                cancel: threading.Event | None = None) -> Plan | None:
        """Read this question's prompt up to the question itself into the model now, while the user is
        still speaking (`question`: their words so far). When the whole question comes, a prompt that
        starts the same way (same history, same passages) is read from there on only; pass the plan
        returned here to `ask(ahead=...)` to keep it when the whole question's passages agree. Skipped
        (None) when the model is busy or the documents would not be asked; `cancel` stops the reading
        within a few dozen tokens (what was read stays). `Plan.read`: the prompt tokens read."""
        hist = clean_history(history, self.cfg.memory.max_messages)
        if self.cfg.memory.translate and self.languages(question, options).translate_to:
            return None    # its translation would take the model now, and the passages depend on it
        plan = self.plan(question, hist, AskOptions(k=options.k, voice=options.voice, rewrite=False,
                                                    sources=options.sources, language=options.language))
        if not plan.messages or not self.llm.gate.try_enter():
            return None
        try:
            return replace(plan, read=self.llm.prefill(plan.messages, QUESTION_MARK, cancel))
        finally:
            self.llm.gate.leave()

    def warm_system_prompt(self, voice: bool) -> int:
        """Read what every answer prompt starts with (the system part) into the model, so the first
        question after a start reads only its own part, as every later one does: llama.cpp keeps the
        previous prompt's state, and answer prompts share that beginning whatever the history."""
        messages = answer_messages("", (), (), voice, self.cfg.prompt.example, self.cfg.prompt.system)
        with self.llm.gate.held():
            return self.llm.prefill(messages, "Sources:")

    # -- the whole answer ------------------------------------------------------------------------
    def ask(self, question: str, history: Sequence[Message] | None = None, options: AskOptions = AskOptions(),
            cancel: threading.Event | None = None, t0: float | None = None,
            ahead: Plan | None = None) -> Iterator[Event]:
        t0 = time.perf_counter() if t0 is None else t0
        timings: dict[str, float] = {}

        def mark(name: str) -> None:
            timings.setdefault(name, round(time.perf_counter() - t0, 4))

        speaker = None
        try:
            hist = clean_history(history, self.cfg.memory.max_messages)
            plan = self.plan(question, hist, options, ahead)
            standalone, ranked, sources, messages = plan.standalone, plan.ranked, plan.sources, plan.messages
            language = plan.languages.answer
            if options.speak and self.synthesizer:   # a voice of the answer's language (tts.voices)
                synth = self.voices.for_language(language, self.synthesizer) if self.voices else self.synthesizer
                speaker = Speaker(synth, mark, self.cfg.tts.max_sentence_chars, self.cfg.tts.first_clause_chars)
            mark("retrieve_s")
            yield Retrieved(question, standalone, sources, plan.languages.question)
            if not sources:     # a greeting, thanks or goodbye gets its reply; anything else, the decline
                reply = small_talk(question)
                answer = reply or not_found(language)
                mark("first_token_s")
                yield TextDelta(answer)
                yield from self._speak_all(speaker, answer)
                mark("answer_done_s")
                yield Done(answer, standalone, (), timings, abstained=reply is None, language=language)
                return
            for position in self.llm.gate.wait(cancel):
                yield Queued(position)
            parts: list[str] = []
            # An answer in another language than the sources shares few words with them: it may use the
            # question's words too (names and numbers stay shared with the sources either way).
            cross = plan.languages.documents not in (None, language)
            names = [n for h in sources for n in (h.source, h.location) if n]
            instructions = "\n".join(m["content"] for m in messages if m["role"] == "system")
            filters = AnswerFilters([h.text for h in sources] + ([question] if cross else []), len(sources), names,
                                    instructions, question)
            try:
                settings = GenerationSettings(self.cfg.llm.max_new_tokens, self.cfg.llm.temperature)
                stream = self.llm.stream(messages, settings, cancel)
                try:
                    for raw in stream:
                        mark("first_token_s")
                        if delta := filters.feed(raw):
                            parts.append(delta)
                            yield TextDelta(delta)
                            if speaker:
                                speaker.feed(delta)
                                yield from speaker.ready()
                        if filters.stopped:
                            break
                finally:
                    stream.close()       # stops generation when we stop early
                if tail := filters.flush():
                    parts.append(tail)
                    yield TextDelta(tail)
                    if speaker:
                        speaker.feed(tail)
            finally:
                self.llm.gate.leave()
            filters.log()
            # `streamed` is exactly what the TextDeltas said (the model may end on a line break before
            # a citation is added), so the final answer is always their concatenation.
            streamed = "".join(parts)
            declined = says_not_found(streamed) or lang.says_not_found(streamed)
            # the quote's ranking: each sentence also read after the one before it (evidence.in_context)
            texts, follow_up = sentence_queries(question, standalone, hist, self.cfg.memory.history_turns,
                                                plan.languages.question)
            nothing = not declined and says_nothing(streamed, names)
            quotable = in_context(ranked, texts, self.sentence_vectors, follow_up) \
                if self.cfg.prompt.evidence or nothing else ranked
            if nothing:
                # Nothing usable from the model (its instructions, dropped, or only sources' names and
                # numbers): the sentence of the sources that best matches the question is the answer
                # (retrieval passed the decline rule, so it is on topic). A model that wrote nothing
                # at all gets the plain decline.
                best = pick_evidence("", quotable, standalone, names) if filters.dropped or streamed.strip() else None
                fallback = f"{best.text} [{best.source}]" if best else NOT_FOUND
                fallback = f"\n\n{fallback}" if streamed.strip() else fallback
                yield TextDelta(fallback)
                streamed += fallback
                if speaker:
                    speaker.feed(fallback)
            elif not cited_numbers(streamed, len(sources)) and not says_not_found(streamed):
                n = best_supporting_source(streamed, sources)
                if n:   # small models often forget to cite: point at the passage the answer came from
                    yield TextDelta(f" [{n}]")
                    streamed += f" [{n}]"
            # the model's words only: a quoted sentence may say "no mention"
            abstained = says_not_found(streamed) or lang.says_not_found(streamed)
            if self.cfg.prompt.evidence:   # shown, not spoken: the speaker is not fed this line
                quote = pick_evidence(streamed, quotable, standalone, names)
                if quote:
                    line = evidence_line(quote, abstained)
                    yield TextDelta(line)
                    streamed += line
            answer = streamed.strip()
            if speaker:
                speaker.feed("", final=True)
                yield from speaker.drain()
            mark("answer_done_s")
            yield Done(answer, standalone, sources, timings, abstained, language=language)
        except RagError as err:
            log.info("ask failed: %s", one_line(err))
            yield Failed(one_line(err), err)
        except Exception as err:  # noqa: BLE001 - the edge must get a message, the log the details
            log.exception("ask failed unexpectedly")
            yield Failed(f"internal error ({type(err).__name__}); see the log", err)
        finally:
            if speaker:
                speaker.close()
            log.info("timings %s", timings)

    def _speak_all(self, speaker, text: str) -> Iterator[Event]:
        if speaker:
            speaker.feed(text, final=True)
            yield from speaker.drain()
