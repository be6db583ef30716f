"""Ingest -> search -> ask with the real embedder, FAISS, BM25 and the shipped LLM."""
from __future__ import annotations

from dataclasses import replace

import json
import subprocess
import sys

import pytest
from conftest import ROOT, SQUAD

from rag.events import Done, Retrieved, TextDelta
from rag.pipeline import AskOptions


def test_rag_imports_without_gradio():
    code = "import sys, rag.pipeline, rag.engines, rag.ingest.ingestor, rag.models.llm, app; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_search_finds_the_right_document(base_engines):
    standalone, hits = base_engines.pipeline().search("How many panels does the solar garden have?")
    assert standalone == "How many panels does the solar garden have?"
    assert hits[0].source == "solar-garden.md"
    assert "4,800 panels" in " ".join(h.text for h in hits)


def test_ask_streams_a_cited_answer(base_engines):
    events = list(base_engines.pipeline().ask("When did the Harbor Point library abolish fines?"))
    kinds = [type(e) for e in events]
    assert kinds[0] is Retrieved and kinds[-1] is Done
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 3, "the answer must arrive in pieces, not at once"
    done = events[-1]
    assert done.answer == "".join(deltas).strip()
    assert "2019" in done.answer
    assert "[" in done.answer and done.sources[0].source == "harbor-library.md"
    assert not done.abstained
    assert 0 < done.timings["retrieve_s"] <= done.timings["first_token_s"] <= done.timings["answer_done_s"]


def test_question_about_something_absent_abstains(base_engines):
    done = list(base_engines.pipeline().ask("What is the boiling point of liquid nitrogen in kelvin?"))[-1]
    assert isinstance(done, Done) and done.abstained and done.sources == ()


def test_follow_up_uses_history(base_engines):
    history = [{"role": "user", "content": "Who founded the Harbor Point Community Library?"},
               {"role": "assistant", "content": "A group of fishing families founded it in 1962 [1]."}]
    _, hits = base_engines.pipeline().search("Who was its first librarian?", history)
    assert "Agnes Lindqvist" in " ".join(h.text for h in hits[:2])


def test_prompt_budget_drops_whole_sources(base_engines):
    from rag.answer.prompt import fit_sources

    _, hits = base_engines.pipeline().search("bicycle chain oil", k=5)
    count = base_engines.llm.count_tokens
    sizes = [count(h.text) + 12 for h in hits]
    kept = fit_sources(hits, count, budget=sizes[0] + 5)
    assert kept == [hits[0]] or all(k in hits for k in kept)
    assert all(k.text in [h.text for h in hits] for k in kept)   # never cut mid-passage
    assert sum(count(k.text) + 12 for k in kept) <= sizes[0] + 5


def _recall(engines, items, with_history: bool) -> float:
    pipeline = engines.pipeline()
    found = 0
    for item in items:
        history = item.get("history", []) if with_history else []
        _, hits = pipeline.search(item["question"], history, k=5, rewrite=False)
        text = " ".join(h.text.lower() for h in hits)
        found += any(a.lower() in text for a in item["answers"])
    return found / len(items)


@pytest.mark.slow
def test_squad_answer_recall_at_5(squad_engines):
    questions = [json.loads(line) for line in (SQUAD / "qa.jsonl").read_text().splitlines()]
    recall = _recall(squad_engines, questions, with_history=False)
    assert recall >= 0.93, recall        # bench/retrieval_recall.py prints the full comparison


@pytest.mark.slow
def test_squad_follow_ups_need_history(squad_engines):
    items = [json.loads(line) for line in (SQUAD / "followups.jsonl").read_text().splitlines()]
    without, with_ = _recall(squad_engines, items, False), _recall(squad_engines, items, True)
    assert with_ >= 0.9 and with_ > without + 0.2, (without, with_)


def test_voice_style_and_speech_events(base_engines):
    from rag.events import AudioChunk, SentenceReady

    pipeline = base_engines.pipeline(speak=True)
    events = list(pipeline.ask("What does the seed library lend?", options=AskOptions(voice=True, speak=True)))
    done = events[-1]
    assert isinstance(done, Done)
    sentences = [e for e in events if isinstance(e, SentenceReady)]
    audio = [e for e in events if isinstance(e, AudioChunk)]
    assert sentences and audio and all(len(a.samples) > 1000 for a in audio)
    assert not any("[" in s.text for s in sentences), "citation markers must not be read aloud"
    assert done.timings["first_audio_s"] <= done.timings["answer_done_s"]


def test_change_of_topic_is_not_dragged_back_by_history(base_engines):
    history = [{"role": "user", "content": "Who founded the Harbor Point Community Library?"},
               {"role": "assistant", "content": "A group of fishing families founded it in 1962 [1]."}]
    pipeline = base_engines.pipeline()
    _, hits = pipeline.search("How many panels does the Millstream solar garden have?", history, rewrite=False)
    assert hits[0].source == "solar-garden.md"
    _, hits = pipeline.search("How many books does it hold?", history, rewrite=False)   # a real follow-up
    assert hits[0].source == "harbor-library.md" and "48,000" in " ".join(h.text for h in hits[:3])


@pytest.mark.parametrize("question, expected", [
    ("Who was its first librarian?", True), ("What did they do next?", True), ("Why?", True),
    ("Where was that conference held?", True), ("And the population?", True),
    ("When did the Harbor Point library abolish fines?", False),
    ("Who believes that the Hellenistic world relies on Babylonian astronomy?", False),
    # a possessive after the words it belongs to is the question's own (seen as a new user: read as a
    # follow-up, it was searched with the conversation about a council and declined)
    ("When do puppies get their rabies shot?", False), ("What type of battery does Apple use in its iPods?", False),
    ("What is their capital?", True), ("How many books does it hold?", True), ("What did the authorities do to him?", True),
    ("How many official Greek public holidays are there?", False), ("Who first settled there?", True),
    ("Why is that?", True), ("Why does the CAV format prevent crosstalk?", False),
])
def test_looks_like_follow_up(question, expected):
    from rag.pipeline import looks_like_follow_up

    assert looks_like_follow_up(question) is expected


@pytest.mark.parametrize("text, expected, stopped", [
    ("The prototype weighs 2.4 kg. " * 4, "The prototype weighs 2.4 kg. ", True),
    ("It opened in 1962 [1]. It opened in a sail loft. The library opened in 1962 [2]. Done",
     "It opened in 1962 [1]. It opened in a sail loft. The library opened in 1962 [2]. Done", False),
    ("Yes. Yes. Fine.", "Yes. Yes. Fine.", False),                      # too short to call a loop...
    ("Yes. Yes. Yes. Yes.", "Yes. Yes. ", True),                           # ...until its third copy
    # a numbered list whose items loop (squad-train: "8. saburai" ... to the token limit)
    ("6. saburau\n7. saburai\n8. saburai\n9. saburai\n10. saburai\n", "6. saburau\n7. saburai\n8. saburai\n", True),
    ("1. Japanese\n2. Japanese\n3. Chinese\n", "1. Japanese\n2. Japanese\n3. Chinese\n", False),
    ("A long first sentence here. A long first sent", "A long first sentence here. ", False),
    # a piece looping inside one never-ending sentence (a copied source label, seen as a new user)
    ("It costs 40 dollars. (garden.md, Greenhouse > Ownership" + " > Greenhouse" * 30,
     "It costs 40 dollars. (garden.md, Greenhouse > Ownership > Greenhouse > Greenhouse", True),
    ("New York, New York is a song. It cost 1,000,000,000 dollars. Ha ha ha ha!",      # prose, not loops
     "New York, New York is a song. It cost 1,000,000,000 dollars. Ha ha ha ha!", False),
])
def test_repetition_guard(text, expected, stopped):
    from rag.answer.repetition import RepetitionGuard

    for size in (1, 3, 7):
        guard = RepetitionGuard()
        out = "".join(guard.feed(text[i:i + size]) for i in range(0, len(text), size)) + guard.flush()
        assert out == expected and guard.stopped is stopped


def test_prefill_reads_the_prompt_ahead_and_changes_no_answer(base_engines):
    """Pipeline.prefill (call mode reads the prompt while the user still speaks): the prompt up to the
    question goes into llama.cpp's cache once, a second read finds it there, and the answer that
    follows is the one without it; a busy model is never waited for."""
    pipeline = base_engines.pipeline()
    question = "When did the Harbor Point library open?"
    plain = [e for e in pipeline.ask(question, [], AskOptions(voice=True)) if isinstance(e, Done)][0]
    base_engines.llm.forget_prompts()
    assert pipeline.prefill(question, [], AskOptions(voice=True)).read > 50
    again = pipeline.prefill(question, [], AskOptions(voice=True))
    assert again.read == 1                                                    # already read: one token refreshed
    ahead = [e for e in pipeline.ask(question, [], AskOptions(voice=True), ahead=again) if isinstance(e, Done)][0]
    assert ahead.answer == plain.answer
    gate = base_engines.llm.gate
    held = [gate.try_enter() for _ in range(gate.slots)]      # every context busy
    assert all(held)
    try:
        assert pipeline.prefill(question, [], AskOptions(voice=True)) is None   # busy: skipped, not queued
    finally:
        for _ in held:
            gate.leave()


def test_the_whole_question_keeps_a_read_ahead_only_when_its_passages_agree(base_engines):
    """Words so far that were read ahead with their passages: the whole question keeps that prompt (so
    only the question is left to read) when it is given the same passages and its best sentences are
    among those shown; otherwise, or after another turn, it builds its own. A cancelled read-ahead
    stops early."""
    import threading

    pipeline = base_engines.pipeline()
    voice = AskOptions(voice=True)
    whole_question = "When did the Harbor Point library abolish fines?"
    own = pipeline.plan(whole_question, [], voice)
    almost = pipeline.prefill("When did the Harbor Point library abolish the fines", [], voice)
    kept = pipeline.plan(whole_question, [], voice, almost)
    assert kept.shown == almost.shown and kept.messages[-1] != almost.messages[-1]
    assert "2019" in " ".join(h.text for h in kept.shown)
    # Same passages, but the partial words picked other sentences (not the one saying 2019): not kept.
    # (Made from `almost` by taking that sentence out of what it shows: which partial words retrieve
    # exactly the same passages depends on the CPU's int8 embedding kernels, AVX2 or AVX-512.)
    best = own.ranked[0].text
    assert "2019" in best and any(best in h.text for h in almost.shown)
    early = replace(almost, shown=tuple(replace(h, text=h.text.replace(best, "").strip()) for h in almost.shown))
    assert pipeline.plan(whole_question, [], voice, early).shown == own.shown != early.shown
    # Other passages: its own prompt.
    other = pipeline.prefill("When did the Harbor Point library open", [], voice)
    assert {h.chunk_id for h in other.sources} != {h.chunk_id for h in own.sources}
    assert pipeline.plan(whole_question, [], voice, other).shown == own.shown
    # After another turn a question that stands alone is still shown no history: the read-ahead holds.
    later = pipeline.plan(whole_question, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
                          voice, almost)
    assert later.history == almost.history == () and later.shown == almost.shown
    stop = threading.Event()
    stop.set()
    base_engines.llm.forget_prompts()
    assert pipeline.prefill("When does the Harbor Point library open?", [], voice, cancel=stop).read == 0


def test_the_default_profile_asks_the_model_only_for_the_answer(base_engines, monkeypatch):
    """Issue 16 added a translation call for questions in another language than the documents; with the
    default profile (English only) a question that stands alone, with or without history, still gets no
    call before the answer: the model is read once. A follow-up still gets its rewrite (the spy works)."""
    from rag.events import fold

    llm, calls = base_engines.llm, []
    for name in ("complete", "stream"):     # complete() is the rewrite's and translation's way in
        real = getattr(llm, name)
        monkeypatch.setattr(llm, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    pipeline = base_engines.pipeline()
    history = [{"role": "user", "content": "Who founded the Harbor Point Community Library?"},
               {"role": "assistant", "content": "A group of fishing families founded it in 1962 [1]."}]
    for question, hist in (("When did the Harbor Point library abolish fines?", []),
                           ("How many panels does the Millstream solar garden have?", history),
                           ("Wann wurde die Bibliothek von Harbor Point eröffnet?", [])):   # still read as English
        calls.clear()
        done = fold(pipeline.ask(question, hist)).done
        assert done is not None and done.language == "en"
        assert calls == ([] if done.abstained and not done.sources else ["stream"]), (question, calls)
    calls.clear()
    fold(pipeline.ask("Who was its first librarian?", history))
    assert calls[0] == "complete", calls


@pytest.mark.parametrize("rewrite, expected", [
    ("How much does it cost to join the Alder Creek greenhouse?", "How much does it cost to join the Alder Creek greenhouse?"),
    ('Rewritten question: "Who was the first librarian of the Harbor Point library?"',
     "Who was the first librarian of the Harbor Point library?"),
    # the 135M model's usual "rewrite" of a follow-up: the earlier answer, or an answer of its own
    ("The greenhouse has 48 raised beds heated by a ground-source heat pump.", None),
    ("The answer is: Juneau.", None),
])
def test_a_rewrite_of_a_question_must_be_a_question(rewrite, expected):
    from rag.answer.prompt import clean_rewrite

    assert clean_rewrite(rewrite, "How much does it cost to join?") == expected


def test_the_model_reads_an_earlier_answer_as_its_first_sentences_without_quote_or_citations(base_engines, monkeypatch):
    """Given a whole earlier answer (its citations, the app's evidence quote), the 135M model wrote it
    again as the answer to the follow-up (seen as a new user). What it is shown of that answer: its
    first sentences, no markers, no quote; the user's turn as it was."""
    from rag.answer.prompt import HISTORY_ANSWER_CHARS
    from rag.events import fold

    long_answer = ("The library opened in 1962 in a former sail loft [1]. " * 12
                   + '\n\nSource [1]: "The library opened in 1962 in a former sail loft."')
    history = [{"role": "user", "content": "When did the Harbor Point library open?"},
               {"role": "assistant", "content": long_answer}]
    seen = []
    real = base_engines.llm.stream
    monkeypatch.setattr(base_engines.llm, "stream", lambda messages, *a, **k: seen.append(messages) or real(messages, *a, **k))
    fold(base_engines.pipeline().ask("Who was its first librarian?", history))
    prompt = seen[-1]
    assert prompt[-3] == history[0]
    earlier = prompt[-2]["content"]
    assert earlier.startswith("The library opened in 1962 in a former sail loft. The library")
    assert len(earlier) <= HISTORY_ANSWER_CHARS and earlier.endswith(".")
    assert "[1]" not in earlier and "Source" not in earlier


def test_a_follow_up_is_ranked_in_the_context_of_its_subject(base_engines):
    """A follow-up's own words name no subject: read alone, "How much does it cost to join?" is as close to
    another document's sentences as to its subject's. In context, the sentence about joining the solar
    garden's cooperative is the best match (the focus sentences and the quote come from this ranking)."""
    history = [{"role": "user", "content": "How many panels does the Millstream solar garden have?"},
               {"role": "assistant", "content": "It has 4,800 panels on 3.2 hectares [1]."}]
    pipeline = base_engines.pipeline()
    question = "How much does it cost to join?"
    standalone, hits = pipeline.search(question, history, rewrite=False)
    # The subject's passages and the other document's passage about joining (the library's membership)
    solar = [h for h in hits if h.source == "solar-garden.md"][:3]
    library = [h for h in hits if h.source == "harbor-library.md"][:1]
    sources = [h for h in hits if h in solar + library]
    assert {h.source for h in sources} == {"solar-garden.md", "harbor-library.md"}
    _, ranked = pipeline.support(question, standalone, history, sources, hits)
    assert "250 euros" in ranked[0].text and sources[ranked[0].source - 1].source == "solar-garden.md"


def test_the_model_is_not_shown_an_exchange_the_app_declined():
    """Shown "The documents do not say." for the last question, the 135M model wrote it again for the
    next one, whose answer it was given (seen as a new user)."""
    from rag.answer.prompt import model_history

    declined = [{"role": "user", "content": "What heats the beds?"},
                {"role": "assistant", "content": 'The documents do not say.\n\nClosest passage [1]: "Heat pumps."'}]
    answered = [{"role": "user", "content": "When did it open?"}, {"role": "assistant", "content": "In 2019 [1]."}]
    assert model_history(declined) == []
    assert model_history(declined + answered) == [answered[0], {"role": "assistant", "content": "In 2019."}]


@pytest.mark.parametrize("message, reply", [
    ("hi", "Hello! Ask me anything about your documents."),
    ("Hello?", "Hello! Ask me anything about your documents."),
    ("Good morning!", "Hello! Ask me anything about your documents."),
    ("Thanks!", "You're welcome."),
    ("thank you very much", "You're welcome."),
    ("Danke schön", "Gern geschehen."),
    ("¡Hola!", "¡Hola! Pregúnteme lo que quiera sobre sus documentos."),
    ("Merci beaucoup", "Je vous en prie."),
    ("That's all, bye", None),
    ("bye", "Goodbye!"),
    ("Hi, when was the library founded?", None),     # a question with a greeting is a question
    ("Thanks for nothing, where is the key?", None),
    ("high", None),
])
def test_small_talk_is_recognised_only_alone(message, reply):
    from rag.answer.small_talk import small_talk

    assert small_talk(message) == reply


def test_a_greeting_gets_a_reply_not_a_decline_and_changes_nothing_after_it(base_engines):
    """"Hello?" opens many calls; it asks nothing of the documents, and the app answered "The documents do
    not say. I could not find this in your documents." (seen as a new user)."""
    from rag.answer.prompt import clean_history

    done = list(base_engines.pipeline().ask("Hello?"))[-1]
    assert done.answer == "Hello! Ask me anything about your documents." and not done.abstained and done.sources == ()
    greeting = [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": done.answer}]
    assert clean_history(greeting, 10) == []      # neither searched with nor shown to the model
    question = "How often should the chain be oiled?"     # what it is searched with and shown is the same
    alone, after = (base_engines.pipeline().plan(question, h, AskOptions()) for h in ([], greeting))
    assert after.messages == alone.messages and after.sources == alone.sources and after.standalone == question


def test_only_a_follow_up_shows_the_model_the_last_exchange_and_thanks_needs_no_search(base_engines):
    """Shown the last exchange before a question that stands alone, the 135M model wrote the earlier answer
    again ("Does the warranty cover limescale damage?" got the kettle's presets, seen as a new user); and
    "Thanks!" after a question was read as a follow-up, found passages and was answered from them."""
    from rag.pipeline import AskOptions

    pipeline = base_engines.pipeline()
    history = [{"role": "user", "content": "How many panels does the Millstream solar garden have?"},
               {"role": "assistant", "content": "The garden has 4,800 panels [1]."}]
    alone = pipeline.plan("When did the Harbor Point library abolish fines?", history, AskOptions())
    assert [m["role"] for m in alone.messages] == ["system", "user"] and alone.history == ()
    follow = pipeline.plan("When was it built?", history, AskOptions())
    assert [m["role"] for m in follow.messages] == ["system", "user", "assistant", "user"]
    assert "4,800 panels" in follow.messages[2]["content"]
    done = list(pipeline.ask("Thanks!", history))[-1]
    assert done.answer == "You're welcome." and done.sources == () and not done.abstained


def test_the_quote_reads_a_sentence_after_the_one_before_it(squad_engines):
    """squad-train, with the real models: the sentence that answers names neither Poland's refusal of the
    proposal nor the Soviet offer on its own; read after the sentence before it, it becomes the quote,
    where the plain ranking quoted the talks' sticking point (the clearest of the 11 questions the
    reading in context won against 4 lost, bench/RESULTS.md)."""
    from rag.answer.evidence import in_context, pick_evidence
    from rag.answer.follow_up import sentence_queries
    from rag.pipeline import AskOptions

    pipeline = squad_engines.pipeline()
    question = "Why did Poland deny the proposal of the Soviet Union protecting them from a German Attack?"
    plan = pipeline.plan(question, [], AskOptions())
    names = [n for h in plan.sources for n in (h.source, h.location) if n]
    texts, follow_up = sentence_queries(question, plan.standalone, [], squad_engines.cfg.memory.history_turns)
    assert texts == [plan.standalone] and not follow_up
    plain = pick_evidence("", plan.ranked, plan.standalone, names)
    read = pick_evidence("", in_context(plan.ranked, texts, pipeline.sentence_vectors), plan.standalone, names)
    assert "might never leave" not in plain.text
    assert "might never leave" in read.text
