from poetwb.core import metrics

SONNET_QUATRAIN = """Shall I compare thee to a summer's day?
Thou art more lovely and more temperate:
Rough winds do shake the darling buds of May,
And summer's lease hath all too short a date."""

COUPLETS = """The cat sat on the mat
and wore a purple hat

The dog ran down the lane
and hid behind a drain"""


def test_lines_and_syllables_of_known_poems():
    row = metrics.summarize([COUPLETS])
    assert row["lines_per_poem"] == 4
    assert row["syllables_per_line"] == 6
    assert row["syllables_per_line_sd"] == 0
    sonnet = metrics.summarize([SONNET_QUATRAIN])
    assert sonnet["syllables_per_line"] == (10 + 9 + 10 + 10) / 4  # CMU reads "temperate" as TEM-prate
    assert metrics.syllables("compare") == 2
    assert metrics.estimate_syllables("zorblax") == 2


def test_end_rhyme_rate_counts_pairs_within_stanzas():
    assert metrics.end_rhyme_rate(SONNET_QUATRAIN) == (1, 5)  # day/May; temperate/date is an eye rhyme today
    assert metrics.end_rhyme_rate(COUPLETS) == (2, 2)  # mat/hat, lane/drain; no pairs across stanzas
    assert metrics.end_rhyme_rate("One line only") == (0, 0)
    assert metrics.rhymes("sea", "free") and not metrics.rhymes("sea", "sea") and not metrics.rhymes("sea", "sky")


def test_distinct_n_and_vocab_overlap_and_topics():
    assert metrics.distinct_n(["a b a b"], 1) == 0.5
    assert metrics.distinct_n(["a b a b"], 2) == 2 / 3
    row = metrics.summarize(["The sea is blue"], corpus_vocab={"the", "sea"},
                            prompts=["Write a poem about the sea and the sky"])
    assert row["vocab_overlap"] == 0.5
    assert row["topic_hit_rate"] == 1.0
    assert metrics.topic_words("Write a poem about the sea and the sky") == ["sea", "sky"]
