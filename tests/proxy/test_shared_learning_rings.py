"""The workers' rings of learned observations (proxy/shared_learning.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from predictor.predictor import END, TRANSITION, Learned
from proxy.shared_learning import LearningRings, ring_path


@contextlib.contextmanager
def writer_and_reader(directory: Path, size: int) -> Iterator[tuple[LearningRings, LearningRings]]:
    """Two workers' sides of the rings: worker 0 (the writer here) and worker 1 (its reader)."""
    writer, reader = (
        LearningRings(str(directory), 2, 0, size=size),
        LearningRings(str(directory), 2, 1, size=size),
    )
    try:
        yield writer, reader
    finally:
        writer.close()
        reader.close()


def observations(n: int, tag: str = "a") -> list[Learned]:
    return [(TRANSITION, f"agent-{tag}", f"search#{i}", "read#1", float(i), 10.0, 5.0, 0) for i in range(n)]


def test_what_one_worker_publishes_each_other_worker_reads_once(tmp_path: Path) -> None:
    rings = [LearningRings(str(tmp_path), 3, i, size=4096) for i in range(3)]
    rings[0].publish(observations(3))
    rings[2].publish([(END, "agent-b", "answer#2", "", 1.0, 900.0, 0.0, 4)])
    assert rings[1].read_others() == [*observations(3), (END, "agent-b", "answer#2", "", 1.0, 900.0, 0.0, 4)]
    assert rings[0].read_others() == [(END, "agent-b", "answer#2", "", 1.0, 900.0, 0.0, 4)]
    assert rings[1].read_others() == []  # read once
    assert (rings[0].published, rings[1].replayed, rings[0].replayed) == (3, 4, 1)  # on /metrics
    assert oct(Path(ring_path(str(tmp_path), 0)).stat().st_mode & 0o777) == "0o600"
    for r in rings:
        r.close()


def test_batches_that_wrap_around_the_ring_arrive_whole(tmp_path: Path) -> None:
    with writer_and_reader(tmp_path, 512) as (writer, reader):
        for round_ in range(40):  # several times around
            batch = observations(1 + round_ % 3, tag=str(round_))
            writer.publish(batch)
            assert reader.read_others() == batch
        assert reader.lost_bytes == 0


def test_a_reader_left_behind_skips_to_the_writer_and_counts_the_loss(tmp_path: Path) -> None:
    with writer_and_reader(tmp_path, 512) as (writer, reader):
        for _ in range(20):
            writer.publish(observations(2))
        assert reader.read_others() == []
        assert reader.lost_bytes > 512
        writer.publish(observations(1, tag="later"))
        assert reader.read_others() == observations(1, tag="later")


def test_a_batch_too_large_for_the_ring_is_dropped_and_counted(tmp_path: Path) -> None:
    with writer_and_reader(tmp_path, 256) as (writer, reader):
        writer.publish(observations(50))
        assert writer.dropped == 50
        assert reader.read_others() == []


def test_garbage_in_a_ring_is_skipped_and_reading_goes_on(tmp_path: Path) -> None:
    with writer_and_reader(tmp_path, 1024) as (writer, reader):
        garbage = (5).to_bytes(4, "little") + b"\xc1\xc1\xc1\xc1\xc1"  # 0xc1 is never valid msgpack
        writer._copy_in(writer._maps[0], 0, garbage)
        writer._positions[0][0] = len(garbage)
        assert reader.read_others() == []
        assert reader.undecodable == 1
        writer.publish(observations(2))
        assert reader.read_others() == observations(2)


def test_a_restarted_writer_continues_its_ring_and_a_new_reader_skips_history(tmp_path: Path) -> None:
    reader = LearningRings(str(tmp_path), 2, 1, size=1024)
    writer = LearningRings(str(tmp_path), 2, 0, size=1024)
    writer.publish(observations(2))
    writer.close()
    writer = LearningRings(str(tmp_path), 2, 0, size=1024)  # the same index, restarted
    writer.publish(observations(1, tag="after"))
    assert reader.read_others() == [*observations(2), *observations(1, tag="after")]
    late = LearningRings(str(tmp_path), 2, 1, size=1024)
    assert late.read_others() == []
    for r in (reader, writer, late):
        r.close()


@pytest.mark.parametrize(("workers", "index", "size"), [(2, 2, 1024), (0, 0, 1024), (2, 0, 8)])
def test_impossible_rings_are_refused(tmp_path: Path, workers: int, index: int, size: int) -> None:
    with pytest.raises(ValueError, match="learning rings"):
        LearningRings(str(tmp_path), workers, index, size=size)


def test_a_copy_the_writer_may_be_overwriting_is_not_read(tmp_path: Path) -> None:
    """The writer copies a batch in before it moves its position, so a reader more than half a ring behind
    (a batch is at most half the ring) could copy bytes the writer was overwriting at that moment and find
    the position unchanged (the fifth review's lead): here the writer is stopped mid-publish."""
    with writer_and_reader(tmp_path, 512) as (writer, reader):
        published = []
        while writer._positions[0][0] - reader._cursors[0] < 400:  # past half the ring behind, not a whole
            batch = observations(1, tag=str(len(published)))
            writer.publish(batch)
            published += batch
        behind = writer._positions[0][0] - reader._cursors[0]
        record = writer._encoder.encode(observations(2, tag="next"))
        record = len(record).to_bytes(4, "little") + record
        writer._copy_in(writer._maps[0], writer._positions[0][0], record)  # in, the position not yet moved
        assert reader.read_others() == []  # not garbage, nor a half-overwritten batch
        assert (reader.lost_bytes, reader.undecodable) == (behind, 0)
