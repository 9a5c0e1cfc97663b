"""The partitioner hash matches aiokafka's (and so the Java client's) on any key."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.kafka.murmur2 import murmur2

pytestmark = pytest.mark.unit


@settings(max_examples=2_000)
@given(st.binary(max_size=300))
def test_matches_aiokafka_on_arbitrary_bytes(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


@pytest.mark.parametrize("length", range(12))
def test_matches_aiokafka_on_every_tail_length(length: int) -> None:
    key = bytes(range(200, 200 + length))  # high bytes: no sign trouble in the tail
    assert murmur2(key) == aiokafka_murmur2(key)


def test_keys_longer_than_the_prepared_word_readers() -> None:
    key = b"k" * 1_001
    assert murmur2(key) == aiokafka_murmur2(key)
