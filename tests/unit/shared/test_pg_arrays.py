"""Lists of text are written as psycopg writes them, and every other list is left to psycopg."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import errors, postgres
from psycopg.adapt import AdaptersMap, PyFormat, Transformer
from psycopg.types.array import ListBinaryDumper

from shared.pg_arrays import ListDumper, TextListDumper


def transformer(list_dumper: type) -> Transformer:
    adapters = AdaptersMap(postgres.adapters)
    adapters.register_dumper(list, list_dumper)

    class Context:
        connection = None

    Context.adapters = adapters  # type: ignore[attr-defined]
    return Transformer(Context())  # type: ignore[arg-type]


PSYCOPG, RELIEF = transformer(ListBinaryDumper), transformer(ListDumper)
TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))


def dumped(tx: Transformer, items: list) -> tuple[int, bytes]:
    dumper = tx.get_dumper(items, PyFormat.BINARY)
    return dumper.oid, bytes(dumper.dump(items))


@given(st.lists(st.one_of(TEXT, st.none()), min_size=1, max_size=50))
def test_text_lists_are_the_bytes_psycopg_writes(items):
    assert dumped(RELIEF, items) == dumped(PSYCOPG, items)


@given(TEXT, st.lists(st.one_of(TEXT, st.none()), max_size=20), TEXT)
def test_text_first_and_last_take_the_direct_path(first, middle, last):
    items = [first, *middle, last]
    assert isinstance(RELIEF.get_dumper(items, PyFormat.BINARY), TextListDumper)
    assert dumped(RELIEF, items) == dumped(PSYCOPG, items)


@pytest.mark.parametrize(
    "items",
    [[1, 2, 3], [None, "a"], ["a", None], [], [[1, 2], [3, 4]], [2**40, -3], [1.5, 2.5]],
    ids=["ints", "null-first", "null-last", "empty", "nested", "bigints", "floats"],
)
def test_other_lists_are_psycopgs(items):
    assert not isinstance(RELIEF.get_dumper(items, PyFormat.BINARY), TextListDumper)
    assert dumped(RELIEF, items) == dumped(PSYCOPG, items)


def test_a_list_of_text_with_another_type_inside_is_refused_with_the_types():
    with pytest.raises(errors.DataError, match="mixed types; got: int, str"):
        dumped(RELIEF, ["a", 3, "b"])
