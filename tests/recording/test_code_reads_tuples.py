"""A key holds a tuple a user's code reads by value only when every item is plain (device: CPU): a
tuple with a list in it can change under the key, so it is refused (or described) like the list."""

from __future__ import annotations

from lebm.recording.code_reads import code_reads, first_not_plain

PLAIN_PAIR = (1, 2.0)
MIXED_PAIR = (1, [2.0])


def reads_the_plain_pair() -> float:
    return PLAIN_PAIR[1]


def reads_the_mixed_pair() -> float:
    return MIXED_PAIR[1][0]


def test_a_tuple_of_plain_items_is_held_by_value_and_one_holding_a_list_is_not() -> None:
    assert first_not_plain(code_reads([reads_the_plain_pair])) is None
    refused = first_not_plain(code_reads([reads_the_mixed_pair]))
    assert refused is not None and "MIXED_PAIR" in str(refused)
