"""The commit rule of one partition: commit only below the lowest unfinished offset."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.runtime.core.offsets import FinishedTwice, OffsetWentBackwards, PartitionOffsets

pytestmark = pytest.mark.unit


def test_fresh_partition_has_nothing_to_commit() -> None:
    offsets = PartitionOffsets()

    assert offsets.safe_offset is None
    assert offsets.commit_candidate() is None
    assert offsets.unfinished == 0


def test_fresh_partition_reports_its_committed_offset_as_safe() -> None:
    offsets = PartitionOffsets(committed_offset=42)

    assert offsets.safe_offset == 42
    assert offsets.commit_candidate() is None


def test_safe_offset_stays_at_the_first_unfinished_record() -> None:
    offsets = PartitionOffsets()
    for offset in (10, 11, 12):
        offsets.track(offset)

    offsets.finish(11)
    offsets.finish(12)

    assert offsets.safe_offset == 10
    assert offsets.uncommitted == 3
    assert offsets.unfinished == 1  # a drain waits for 10 only, not for 11 and 12


def test_finishing_the_blocking_record_releases_everything_finished_behind_it() -> None:
    offsets = PartitionOffsets()
    for offset in (10, 11, 12, 13):
        offsets.track(offset)
    offsets.finish(12)
    offsets.finish(11)

    offsets.finish(10)

    assert offsets.safe_offset == 13
    assert offsets.uncommitted == 1
    assert offsets.unfinished == 1


def test_all_finished_makes_one_past_the_highest_tracked_offset_safe() -> None:
    offsets = PartitionOffsets()
    for offset in (3, 7, 9):  # gaps: compacted records or transaction markers
        offsets.track(offset)
    for offset in (9, 3, 7):
        offsets.finish(offset)

    assert offsets.safe_offset == 10
    assert offsets.unfinished == 0


def test_retracking_an_offset_at_or_below_the_highest_is_refused() -> None:
    offsets = PartitionOffsets()
    assert offsets.track(5) is True
    assert offsets.track(6) is True

    assert offsets.track(6) is False
    assert offsets.track(4) is False
    assert offsets.unfinished == 2


def test_refused_offset_is_refused_even_after_it_finished() -> None:
    offsets = PartitionOffsets()
    offsets.track(5)
    offsets.finish(5)

    assert offsets.track(5) is False
    assert offsets.safe_offset == 6
    assert offsets.unfinished == 0


def test_commit_candidate_is_the_safe_offset_until_it_is_committed() -> None:
    offsets = PartitionOffsets(committed_offset=5)
    offsets.track(5)
    offsets.track(6)
    offsets.finish(5)

    assert offsets.commit_candidate() == 6
    offsets.mark_committed(6)
    assert offsets.committed_offset == 6
    assert offsets.commit_candidate() is None


def test_commit_candidate_is_none_while_the_first_record_is_unfinished() -> None:
    offsets = PartitionOffsets(committed_offset=5)
    offsets.track(5)

    assert offsets.commit_candidate() is None


def test_a_record_below_the_committed_offset_is_not_taken() -> None:
    # fetched from an older position than a previous owner's last commit: done already
    offsets = PartitionOffsets(committed_offset=100)

    assert not offsets.track(5)
    assert offsets.unfinished == 0
    assert offsets.commit_candidate() is None
    assert offsets.track(100)


def test_marking_a_lower_commit_raises_and_keeps_the_committed_offset() -> None:
    offsets = PartitionOffsets(committed_offset=10)

    with pytest.raises(OffsetWentBackwards):
        offsets.mark_committed(9)
    assert offsets.committed_offset == 10


def test_marking_the_same_commit_again_is_allowed() -> None:
    offsets = PartitionOffsets(committed_offset=10)

    offsets.mark_committed(10)

    assert offsets.committed_offset == 10


@st.composite
def _tracked_then_finish_order(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    gaps = draw(st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=40))
    start = draw(st.integers(min_value=0, max_value=1_000))
    tracked = [start + sum(gaps[:i]) for i in range(len(gaps))]
    return tracked, draw(st.permutations(tracked))


@given(_tracked_then_finish_order())
def test_safe_offset_is_one_past_the_finished_prefix_and_never_decreases(
    case: tuple[list[int], list[int]],
) -> None:
    tracked, finish_order = case
    offsets = PartitionOffsets(committed_offset=tracked[0])
    for offset in tracked:
        assert offsets.track(offset)

    finished: set[int] = set()
    previous = offsets.safe_offset
    assert previous == tracked[0]
    for offset in finish_order:
        offsets.finish(offset)
        finished.add(offset)

        unfinished = [o for o in tracked if o not in finished]
        expected = unfinished[0] if unfinished else tracked[-1] + 1
        safe = offsets.safe_offset
        assert safe == expected
        assert all(safe <= o for o in unfinished)
        assert previous is not None
        assert safe >= previous
        assert offsets.uncommitted == len([o for o in tracked if o >= expected])
        assert offsets.unfinished == len(unfinished)
        previous = safe


def test_safe_offset_passes_transaction_markers_after_the_last_record() -> None:
    offsets = PartitionOffsets()
    for offset in (10, 11):
        offsets.track(offset)
    offsets.seen_up_to(13)  # 12 is a commit marker: the consumer's position skipped it

    assert offsets.safe_offset == 10
    offsets.finish(10)
    offsets.finish(11)
    assert offsets.safe_offset == 13


def test_markers_never_let_the_safe_offset_pass_an_unfinished_record() -> None:
    offsets = PartitionOffsets()
    offsets.track(10)
    offsets.seen_up_to(12)
    offsets.finish(10)
    offsets.track(12)

    assert offsets.safe_offset == 12
    offsets.finish(12)
    assert offsets.safe_offset == 13


@pytest.mark.parametrize("finished_first", [[], [11], [10]])
def test_finishing_an_offset_twice_or_one_never_tracked_is_refused(
    finished_first: list[int],
) -> None:
    offsets = PartitionOffsets()
    for offset in (10, 11, 12):
        offsets.track(offset)
    for offset in finished_first:
        offsets.finish(offset)

    for wrong in [9, 13, *finished_first]:
        with pytest.raises(FinishedTwice):
            offsets.finish(wrong)
    assert offsets.unfinished == 3 - len(finished_first)
