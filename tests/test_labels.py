"""Source labels the model copies from its prompt are dropped, as the answer streams; the rest of the
filter chain then drops what is left of a sentence about the sources ("The source is [1]")."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag.answer.filters import AnswerFilters
from rag.answer.labels import LabelFilter

NAMES = ["kettle-manual.md", "Aurora K2 Electric Kettle — User Manual > Temperature settings",
         "Aurora K2 Electric Kettle — User Manual > Descaling", "vaccination-schedule.pdf", "page 1", "garden.md", "Greenhouse > Ownership"]
TEXTS = ["The K2 has five presets. Green tea is best at 80 degrees, and white tea at 70 degrees. Use 2 spoons.",
         "The second dose follows at 12 weeks, together with the first rabies shot."]


def run_labels(text: str, cuts: list[int] | None = None) -> tuple[str, list[str]]:
    f = LabelFilter(NAMES)
    out, i = [], 0
    for n in cuts or [1] * len(text):
        out.append(f.feed(text[i:i + n]))
        i += n
    out.append(f.feed(text[i:]) + f.flush())
    return "".join(out), f.dropped


@pytest.mark.parametrize("answer, shown", [
    ("Green tea: 80 degrees [1] (kettle-manual.md, Aurora K2 Electric Kettle — User Manual > Temperature settings).",
     "Green tea: 80 degrees [1]."),
    ("At 12 weeks (vaccination-schedule.pdf, page 1).", "At 12 weeks."),
    ("At 12 weeks (vaccination schedule, page 1).", "At 12 weeks."),         # written without the file's dashes
    ("At 12 weeks (Temperature settings).", "At 12 weeks."),                 # a heading alone
    ("Brew it at 80 degrees (about 176 °F).", "Brew it at 80 degrees (about 176 °F)."),
    ("Fill the kettle (the K2) first.", "Fill the kettle (the K2) first."),   # label words, but no whole name
    ("It has five presets (60, 70, 80, 90 and 100).", "It has five presets (60, 70, 80, 90 and 100)."),
    ("Owned by the town (garden.md, Greenhouse > Ownership > Greenhouse > Greenhouse", "Owned by the town"),
    ("(unclosed and not a label", "(unclosed and not a label"),
])
def test_what_is_shown(answer, shown):
    assert run_labels(answer)[0] == shown


def test_dropped_labels_are_kept_for_the_log():
    assert run_labels("At 12 weeks (vaccination-schedule.pdf, page 1).")[1] == ["(vaccination-schedule.pdf, page 1)"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=40))
def test_the_result_does_not_depend_on_how_the_stream_is_cut(cuts):
    text = "Best at 80 degrees (kettle-manual.md, Aurora K2 Electric Kettle — User Manual > Temperature settings) ((or 70)."
    assert run_labels(text, cuts)[0] == run_labels(text)[0] == "Best at 80 degrees ((or 70)."


def chain(raw: str) -> tuple[str, list[str]]:
    f = AnswerFilters(TEXTS, 2, NAMES)     # as the pipeline builds them
    out = ""
    for ch in raw:
        out += f.feed(ch)
        if f.stopped:
            break
    return out + f.flush(), f.dropped


@pytest.mark.parametrize("raw, shown", [
    # Seen as a new user (a kettle manual, a vet's PDF, a council's web page), the 135 M model's answers:
    ("The source is [1] (kettle-manual.md, Aurora K2 Electric Kettle — User Manual > Temperature settings)\n"
     "The source is [2] (kettle-manual.md, Aurora K2 Electric Kettle — User Manual > Descaling)\n\n"
     "Green tea is best at 80 degrees, and white tea at 70 degrees. [1]",
     "Green tea is best at 80 degrees, and white tea at 70 degrees. [1]"),
    ("The source is [1] and the answer is [2].\n\nWhite tea is best at 70 degrees. [1]",   # "[2]" is not the "2" of the text
     "White tea is best at 70 degrees. [1]"),
    ("The sources cited in the question are:\n1. [1] (vaccination-schedule.pdf, page 1)\n"
     "2. [2] (kettle-manual.md, Aurora K2 Electric Kettle — User Manual > Temperature settings)\n\n"
     "The sources cited are:\n1. [1] (vaccination-schedule.pdf, page 1)\n", ""),
    ("[1] (kettle-manual.md)\n[2]\n\nGreen tea is best at 80 degrees. [1]", "Green tea is best at 80 degrees. [1]"),
    ("The source is [1] (kettle-manual.md), which says green tea is best at 80 degrees.",
     "The source is [1], which says green tea is best at 80 degrees."),
    ("1. kettle-manual.md\n2. Green tea is best at 80 degrees. [1]", "2. Green tea is best at 80 degrees. [1]"),
    ("Temperature settings [1].", ""),                        # a heading alone
    ("The Aurora K2 boils it [1].", "The Aurora K2 boils it [1]."),   # a word only the name has, and more
    # what stays: a list the model numbers itself, and a citation on a line of its own after the answer
    # (which joins the answer's line)
    ("1. Green tea at 80 degrees.\n2. White tea at 70 degrees.", "1. Green tea at 80 degrees.\n2. White tea at 70 degrees."),
    ("The second dose follows at 12 weeks.\n[2]", "The second dose follows at 12 weeks. [2]"),
    ("The K2 has 1.7 litres? No: five presets [1].", "The K2 has 1.7 litres? No: five presets [1]."),
])
def test_the_filter_chain_on_answers_seen(raw, shown):
    assert chain(raw)[0] == shown


def test_an_answer_of_labels_and_list_numbers_is_all_dropped_and_logged():
    shown, dropped = chain("1. [1] (vaccination-schedule.pdf, page 1)\n2. [2] (kettle-manual.md)\n\n1. [1]")
    assert shown == "" and "(vaccination-schedule.pdf, page 1)" in dropped and any("1. [1]" in d for d in dropped)


FILES = ["History_of_science.txt", "Alaska.txt", "notes/Alaska.txt"]


def run_files(text: str, cuts: list[int] | None = None) -> str:
    f = LabelFilter(FILES)
    out, i = [], 0
    for n in cuts or [1] * len(text):
        out.append(f.feed(text[i:i + n]))
        i += n
    return "".join(out) + f.feed(text[i:]) + f.flush()


@pytest.mark.parametrize("answer, shown", [
    ("The source is [1] from the History_of_science.txt.", "The source is [1] from the."),   # seen on squad-train
    ("1. Alaska.txt\n2. Military bases matter.", "1.\n2. Military bases matter."),
    ("Alaska is big. Alaskan oil. alaska.TXT", "Alaska is big. Alaskan oil."),
    ("In Alaska.", "In Alaska."),
    ("History of science [1].", "History of science [1]."),    # the words, not the file
])
def test_a_file_name_written_out_is_dropped(answer, shown):
    assert run_files(answer) == shown


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=30))
def test_file_names_do_not_depend_on_how_the_stream_is_cut(cuts):
    text = "1. Alaska.txt (History_of_science.txt)\nAlaska is big (Alaska).\nAlaskan."
    assert run_files(text, cuts) == run_files(text) == "1.\nAlaska is big.\nAlaskan."
