"""The sentence splitter that lets speech start while the answer is still being written."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.sentences import SentenceSplitter, has_words, speakable, split_sentences


def stream(text: str, pieces: list[int] | None = None, **kwargs) -> list[str]:
    """Feed `text` cut at `pieces` (default: one character at a time), then flush."""
    splitter = SentenceSplitter(**kwargs)
    cuts = sorted(set(pieces)) if pieces is not None else list(range(1, len(text)))
    out, last = [], 0
    for cut in [*cuts, len(text)]:
        out += splitter.feed(text[last:cut])
        last = cut
    return out + splitter.flush()


@pytest.mark.parametrize("text,expected", [
    ("Mr. Smith met Dr. Jones. They talked.", ["Mr. Smith met Dr. Jones.", "They talked."]),
    ("Use a fruit, e.g. an apple, i.e. something sweet. Then eat it.",
     ["Use a fruit, e.g. an apple, i.e. something sweet.", "Then eat it."]),
    ("Bring pens, paper, etc. and a bag. Thanks.", ["Bring pens, paper, etc. and a bag.", "Thanks."]),
    ("Bring pens, paper, etc. Then leave.", ["Bring pens, paper, etc.", "Then leave."]),
    ("The U.S. Army is large. It is old.", ["The U.S. Army is large.", "It is old."]),
    ("He lives on St. James Street. Nice.", ["He lives on St. James Street.", "Nice."]),
    ("J. K. Rowling wrote it. Good.", ["J. K. Rowling wrote it.", "Good."]),
    ("See No. 5 on p. 12. Done.", ["See No. 5 on p. 12.", "Done."]),
    ("Pi is 3.14 and a coffee costs $2.50. Cheap!", ["Pi is 3.14 and a coffee costs $2.50.", "Cheap!"]),
    ("Wait... what? Really! Yes... Then he left.", ["Wait... what?", "Really!", "Yes...", "Then he left."]),
    ("Is it open?! Yes.", ["Is it open?!", "Yes."]),
    ('"Is it open?" she asked. It was.', ['"Is it open?" she asked.', "It was."]),
    ('He said "stop." Then he left. (It was late.) Fine.',
     ['He said "stop."', "Then he left.", "(It was late.)", "Fine."]),
    ("It was founded in 1742. [1] The fair is in October.[2][3] Parking is free [1, 2]. End",
     ["It was founded in 1742. [1]", "The fair is in October.[2][3]", "Parking is free [1, 2].", "End"]),
    ("Steps:\n- Open the door\n- Walk in\n1. First\n2. Second",
     ["Steps:", "- Open the door", "- Walk in", "1. First", "2. Second"]),
    ("**Note.** The shop is closed. Sorry.", ["**Note.**", "The shop is closed.", "Sorry."]),
    ("# Opening hours\nThe library opens at nine.", ["# Opening hours", "The library opens at nine."]),
    ("Visit example.com for more. Bye.", ["Visit example.com for more.", "Bye."]),
    ("No terminator at the end", ["No terminator at the end"]),
])
def test_tricky_sentences(text, expected):
    assert split_sentences(text) == expected
    assert stream(text) == expected  # one character at a time gives the same


@pytest.mark.parametrize("text,expected", [
    # The first piece may end at a clause once it is long enough, so the voice starts sooner...
    ("The library opened in 1962, in a former sail loft. It moved in 1990, to the quay.",
     ["The library opened in 1962,", "in a former sail loft.", "It moved in 1990, to the quay."]),
    # ...but not at a short opener, a number, a citation list or a line's end.
    ("Yes, it opened in 1962. Then, it moved.", ["Yes, it opened in 1962.", "Then, it moved."]),
    ("It holds 12,000 books and 3,000 maps today. Fine.", ["It holds 12,000 books and 3,000 maps today.", "Fine."]),
    ("It holds many maps and books [1, 2] today. Fine.", ["It holds many maps and books [1, 2] today.", "Fine."]),
    ("The reading room has these:\nmaps and books.", ["The reading room has these:", "maps and books."]),
])
def test_the_first_piece_may_end_at_a_clause(text, expected):
    assert stream(text, first_clause=20) == expected == stream(text, [], first_clause=20)


def test_sentence_is_emitted_when_the_next_word_starts():
    s = SentenceSplitter()
    assert s.feed("The library opens at nine") == []
    assert s.feed(".") == []
    assert s.feed("  ") == []  # still undecided: "nine. and" would not be an end
    assert s.feed("I") == ["The library opens at nine."]
    assert s.feed("t closes at six.") == []
    assert s.flush() == ["It closes at six."]


def test_line_break_ends_a_list_item_at_once():
    s = SentenceSplitter()
    assert s.feed("- apples") == []
    assert s.feed("\n") == ["- apples"]
    assert s.feed("- pears\n") == ["- pears"]


def test_citation_after_the_period_waits_for_the_bracket_to_close():
    s = SentenceSplitter()
    assert s.feed("Founded in 1742. [1") == []
    assert s.feed("] ") == []
    assert s.feed("Next") == ["Founded in 1742. [1]"]
    assert speakable("Founded in 1742. [1]") == "Founded in 1742."


def test_link_after_the_period_is_not_taken_for_a_citation():
    assert split_sentences("It is open. [See the map](http://x.org) for details.") == [
        "It is open.", "[See the map](http://x.org) for details."]


def test_nothing_to_say_is_not_emitted_alone():
    assert split_sentences("---\n\nThe end.") == ["---\nThe end."]
    assert split_sentences("Hello.\n[1]\n**") == ["Hello."]
    assert split_sentences("...\n!!!\n") == []
    assert all(has_words(s) for s in split_sentences("** ** [3] - \n1. \nReal words here."))


def test_run_on_text_is_cut_at_a_soft_limit():
    clause = "and then the river kept running past the old mill and the bridge"
    text = ", ".join([clause] * 12) + "."
    sentences = split_sentences(text, max_chars=300)
    assert len(sentences) > 2
    assert all(len(s) <= 300 for s in sentences)
    assert all(s.endswith(",") for s in sentences[:-1])  # cut after a comma, where a pause is natural
    words = ("word " * 200).strip()
    pieces = split_sentences(words, max_chars=300)
    assert len(pieces) >= 3 and all(len(p) <= 300 for p in pieces)
    assert " ".join(pieces) == words
    assert stream(words) == pieces  # the soft cut is chunking-invariant too


def test_clean_output_and_reuse_after_flush():
    s = SentenceSplitter(clean=True)
    assert s.feed("**Bold** claim [1]. Next") == ["Bold claim."]
    assert s.flush() == ["Next"]
    assert s.feed("Again. New") == ["Again."]
    assert s.flush() == ["New"]


@pytest.mark.parametrize("text", [
    "It was founded in 1742. [1 , 2] Next one. [3]\nLast [4",
    "Dr. No. 5 e.g. U.S. Army... Wait?! \"Yes.\" (No.) **Bold.** [1][2] - item\n1. one\n",
    "a" * 50 + ", " + "b " * 40 + "c,d " * 30,
])
def test_every_single_cut_point_gives_the_same_sentences(text):
    whole = split_sentences(text, max_chars=60)
    for cut in range(len(text) + 1):
        assert stream(text, [cut], max_chars=60) == whole, cut
    assert stream(text, max_chars=60) == whole


@pytest.mark.parametrize("text,expected", [
    ("It opened in 1742 [1].", "It opened in 1742."),
    ("Open daily [1][3], closed Sundays [2, 4].", "Open daily, closed Sundays."),
    ("This is **bold**, *emphasis*, __strong__ and `code`.", "This is bold, emphasis, strong and code."),
    ("# Heading", "Heading"),
    ("### Sub heading", "Sub heading"),
    ("- a list item", "a list item"),
    ("* another item", "another item"),
    ("12. numbered item", "numbered item"),
    ("See [the map](https://example.org/map) now.", "See the map now."),
    ("Keep snake_case_names and 2 * 3 as they are.", "Keep snake_case_names and 2 * 3 as they are."),
    ("  lots   of\n\n  space  ", "lots of space"),
    ("> quoted text", "quoted text"),
    ("[1]", ""),
    ("[1] (solar-garden.md, paragraph 3) It opened in 2017.", "It opened in 2017."),
    ("It opened in 2017 (solar-garden.md).", "It opened in 2017."),
    ("Read the report (report.pdf, page 2) today.", "Read the report today."),
    ("It opened (in 2017) with 40 plots.", "It opened (in 2017) with 40 plots."),
])
def test_speakable(text, expected):
    assert speakable(text) == expected


TOKENS = ["Mr", "Dr", "e.g", "i.e", "etc", "U.S", "St", "the", "River", "apples", "Is", "it", "3", "14",
          "$2", "50", ".", ".", ".", "...", "…", "?", "!", ",", " ", " ", " ", "  ", "\n", "\n\n", "[1]",
          "[2, 3]", "[4", "[5 ", "6]", "]", "**", "*", "_", "`", "# ", "- ", "1. ", '"', "'", "(", ")", "](x)",
          "https://a.b/c", "—", ":"]
texts = st.one_of(
    st.lists(st.sampled_from(TOKENS), max_size=120).map("".join),
    st.text(alphabet="aZ9 .!?,[]()*\n\"'-#`1", max_size=400),
)


def _no_space(text: str) -> str:
    return "".join(text.split())


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, data=st.data(), max_chars=st.sampled_from([40, 300]), first_clause=st.sampled_from([0, 20]))
def test_chunking_invariance_and_nothing_lost(text, data, max_chars, first_clause):
    whole = stream(text, [], max_chars=max_chars, first_clause=first_clause)
    if not first_clause:
        assert whole == split_sentences(text, max_chars=max_chars)
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=40))
    assert stream(text, cuts, max_chars=max_chars, first_clause=first_clause) == whole
    assert all(s == s.strip() and has_words(s) for s in whole)
    # Nothing is lost: the sentences put back together are the text, up to whitespace, except for a
    # trailing remainder that has nothing to say.
    joined = _no_space("".join(whole))
    assert _no_space(text).startswith(joined)
    consumed, pos = 0, 0
    while consumed < len(joined):
        consumed += not text[pos].isspace()
        pos += 1
    assert not has_words(text[pos:])


def test_title_lines_and_the_sources_panel_keep_a_plain_text_title_apart():
    from common.sentences import title_lines
    from web.render import reflow

    minutes = "Minutes of 3 March\n\n1. Swimming pool renovation\nThe council approved the renovation of the pool.\n\nEnd."
    assert title_lines(minutes.split("\n")) == {2}      # the first line stands alone already (a blank line follows)
    assert reflow(minutes) == ("Minutes of 3 March\n\n1. Swimming pool renovation\n\n"
                               "The council approved the renovation of the pool.\n\nEnd.")
    # hard-wrapped prose is joined as before: a first line as long as the next, or the next in lower case
    assert not title_lines(["The library opened in 1962 and", "Sarah Kent was its first librarian."])
    assert not title_lines(["Members may borrow", "twelve items at a time from the main desk."])
    assert reflow("Members may borrow\ntwelve items at a time.") == "Members may borrow twelve items at a time."
    assert reflow("From: Priya Nair\nTo: Tom Berger\nSubject: Offsite\n\nHi Tom,\n\n> From: Tom\n> Date: 10 May\n>\n> Hi Priya,"
                  "\n> where is it?") == \
        "From: Priya Nair\nTo: Tom Berger\nSubject: Offsite\n\nHi Tom,\n\nFrom: Tom\nDate: 10 May\n\nHi Priya, where is it?"
    # a PDF's text has no blank lines: a title after a sentence's end stands apart too, not a wrapped line
    page = ["weekends. Keep music low during these hours.", "2. Rubbish and recycling",
            "Rubbish bins are emptied every Tuesday morning."]
    assert title_lines(page) == {1}
    assert reflow("\n".join(page)) == ("weekends. Keep music low during these hours.\n\n2. Rubbish and recycling\n\n"
                                      "Rubbish bins are emptied every Tuesday morning.")
    assert not title_lines(["weekends. Keep music low during these", "2 hours and",
                            "Rubbish bins are emptied every Tuesday morning."])
    # a table's rows, as the loaders write them, stay a line each
    rows = "Prices from May.\nRoom: Main hall; Per hour: 40 euros.\nRoom: Small gym; Per hour: 15 euros.\nClubs pay less."
    assert reflow(rows) == ("Prices from May. Room: Main hall; Per hour: 40 euros.\nRoom: Small gym; Per hour: 15 euros. "
                            "Clubs pay less.")
