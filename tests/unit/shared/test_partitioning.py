"""The publisher's partitioner gives every key the partition Kafka's own clients give it."""

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference_murmur2
from hypothesis import given
from hypothesis import strategies as st

from shared.kafka import murmur2, partition_of


@given(st.binary(max_size=300))
def test_murmur2_matches_the_java_clients_hash(data):
    assert murmur2(data) == reference_murmur2(data)


def test_murmur2_covers_every_tail_length():
    for length in range(0, 41):
        data = bytes(range(200, 200 + length))
        assert murmur2(data) == reference_murmur2(data), length


@given(st.binary(min_size=1, max_size=80), st.integers(min_value=1, max_value=64))
def test_a_key_goes_where_the_default_partitioner_sends_it(key, count):
    partitions = list(range(count))
    assert partition_of(key, partitions) == DefaultPartitioner()(key, partitions, partitions)
