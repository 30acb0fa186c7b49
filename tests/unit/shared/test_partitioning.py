"""The publisher's partitioner gives every key the partition Kafka's own clients give it."""

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference_murmur2
from hypothesis import given
from hypothesis import strategies as st

from shared.kafka import murmur2, murmur2_many, partition_of


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


@given(st.lists(st.binary(max_size=90), min_size=0, max_size=120))
def test_hashing_a_batch_at_once_gives_each_key_its_own_hash(keys):
    """Short batches take the per-key loop, longer ones the arrays; both must agree with Kafka."""
    assert murmur2_many(keys) == [reference_murmur2(key) for key in keys]


def test_a_batch_of_every_length_and_many_of_one_length_hash_as_kafka_does():
    keys = [bytes((i * 7 + j) % 256 for j in range(length)) for length in range(70) for i in range(3)]
    keys += [f"{i:08d}-4f6e-5a2b-9c1d-{i:012d}".encode() for i in range(500)]  # person ids' shape
    assert murmur2_many(keys) == [reference_murmur2(key) for key in keys]
