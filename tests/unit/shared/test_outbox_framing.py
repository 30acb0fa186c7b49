"""The framing of a staged batch: every message back, in order, or a clear refusal."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.outbox import DamagedBatch, StagedMessage, pack_messages, unpack_messages

messages = st.lists(
    st.builds(
        StagedMessage,
        st.text(min_size=1, max_size=200),
        st.one_of(st.none(), st.text(max_size=200)),
        st.binary(max_size=2000),
    ),
    max_size=50,
)


@given(messages)
def test_packed_messages_come_back_whole_and_in_order(staged):
    packed = pack_messages(staged)
    assert unpack_messages(packed) == staged
    assert unpack_messages(packed, expected=len(staged)) == staged


def test_an_empty_key_is_not_a_missing_one():
    back = unpack_messages(pack_messages([("t", "", b"x"), ("t", None, b""), ("t", "é", b"{}")]))
    assert [(key, payload) for _, key, payload in back] == [("", b"x"), (None, b""), ("é", b"{}")]


@pytest.mark.parametrize("cut", [1, 5, 9, 20, 40])
def test_a_cut_or_lengthened_batch_is_refused(cut):
    packed = pack_messages([("topic", "key", b"payload one"), ("topic", "key", b"payload two")])
    with pytest.raises(DamagedBatch, match="do not add up|cut short"):
        unpack_messages(packed[:-cut])
    with pytest.raises(DamagedBatch, match="do not add up"):
        unpack_messages(packed + b"x" * cut)
    with pytest.raises(DamagedBatch, match="cut short in its sizes"):
        unpack_messages(packed[:3])


def test_a_batch_holding_fewer_messages_than_recorded_is_refused():
    packed = pack_messages([("topic", "key", b"payload")])
    with pytest.raises(DamagedBatch, match="holds 1 messages, not the 2"):
        unpack_messages(packed, expected=2)
    with pytest.raises(DamagedBatch, match="garbled after 0 messages"):
        unpack_messages(pack_messages([("topic", "key", b"p")]).replace(b"topic", b"\xff\xfe\xfd\xfc\xfb"))
