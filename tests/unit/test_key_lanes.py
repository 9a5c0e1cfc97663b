"""Key lanes: one record per key in progress, the rest of the key waits in order."""

from __future__ import annotations

from collections import defaultdict, deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.runtime.core.lanes import KeyLanes

pytestmark = pytest.mark.unit


def test_first_record_of_an_idle_key_starts_at_once() -> None:
    lanes: KeyLanes[str, int] = KeyLanes()

    assert lanes.admit("a", 1) is True
    assert lanes.busy("a")
    assert lanes.busy_keys() == ["a"]


def test_record_of_a_busy_key_waits() -> None:
    lanes: KeyLanes[str, int] = KeyLanes()
    lanes.admit("a", 1)

    assert lanes.admit("a", 2) is False
    assert lanes.busy_keys() == ["a"]


def test_other_keys_do_not_wait_for_a_busy_key() -> None:
    lanes: KeyLanes[str, int] = KeyLanes()
    lanes.admit("a", 1)

    assert lanes.admit("b", 2) is True
    assert sorted(lanes.busy_keys()) == ["a", "b"]
    assert len(lanes) == 2


def test_release_hands_out_waiting_records_in_admission_order() -> None:
    lanes: KeyLanes[str, int] = KeyLanes()
    for item in (1, 2, 3):
        lanes.admit("a", item)

    assert lanes.release("a") == 2
    assert lanes.release("a") == 3
    assert lanes.busy("a")


def test_release_of_the_last_record_makes_the_key_idle() -> None:
    lanes: KeyLanes[str, int] = KeyLanes()
    lanes.admit("a", 1)

    assert lanes.release("a") is None
    assert not lanes.busy("a")
    assert lanes.busy_keys() == []
    assert lanes.admit("a", 2) is True


def test_release_of_an_idle_key_raises() -> None:
    lanes: KeyLanes[str, int] = KeyLanes()

    with pytest.raises(KeyError):
        lanes.release("a")


def test_drop_returns_the_waiting_records_and_frees_the_keys() -> None:
    lanes: KeyLanes[str, int] = KeyLanes()
    for key, item in (("a", 1), ("a", 2), ("a", 3), ("b", 4), ("c", 5), ("c", 6)):
        lanes.admit(key, item)

    dropped = lanes.drop(["a", "b", "idle"])

    assert dropped == [2, 3]  # 1 and 4 were in progress, not waiting
    assert lanes.busy_keys() == ["c"]
    assert lanes.admit("a", 7) is True
    assert lanes.release("c") == 6


def test_drop_accepts_a_one_shot_iterable_of_keys() -> None:
    lanes: KeyLanes[str, int] = KeyLanes()
    lanes.admit("a", 1)
    lanes.admit("a", 2)

    assert lanes.drop(key for key in ["a"]) == [2]
    assert not lanes.busy("a")


_KEYS = ("k0", "k1", "k2", "k3")
# True: admit a new record for the key; False: finish the key's record in progress.
_steps = st.lists(st.tuples(st.sampled_from(_KEYS), st.booleans()), max_size=200)


@given(_steps)
def test_each_key_runs_its_records_one_at_a_time_in_admission_order(
    steps: list[tuple[str, bool]],
) -> None:
    lanes: KeyLanes[str, int] = KeyLanes()
    admitted: dict[str, list[int]] = defaultdict(list)
    started: dict[str, list[int]] = defaultdict(list)
    in_progress: dict[str, int] = {}
    waiting: dict[str, deque[int]] = defaultdict(deque)

    for number, (key, admit) in enumerate(steps):
        if admit:
            admitted[key].append(number)
            if lanes.admit(key, number):
                assert key not in in_progress
                in_progress[key] = number
                started[key].append(number)
            else:
                assert key in in_progress
                waiting[key].append(number)
        elif key in in_progress:
            following = lanes.release(key)
            del in_progress[key]
            if following is None:
                assert not waiting[key]
            else:
                assert following == waiting[key].popleft()
                in_progress[key] = following
                started[key].append(following)
        assert sorted(lanes.busy_keys()) == sorted(in_progress)

    for key in _KEYS:  # drain: finish whatever is left
        while key in in_progress:
            following = lanes.release(key)
            del in_progress[key]
            if following is not None:
                in_progress[key] = following
                started[key].append(following)
    assert started == admitted
    assert len(lanes) == 0
