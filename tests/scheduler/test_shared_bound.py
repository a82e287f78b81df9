"""The bound `saga serve --workers N` shares (proxy/scheduler/shared_bound.py): each worker's share is always
its own, past it the workers' total decides."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.scheduler.shared_bound import reached


class Counts:
    """The workers' counts, as the table's `LiveCount` gives them to worker `me`."""

    def __init__(self, held: list[int], me: int = 0) -> None:
        self.held, self.me = held, me

    def publish(self, own: int) -> None:
        self.held[self.me] = own

    def others(self) -> int:
        return sum(self.held) - self.held[self.me]

    def workers(self) -> int:
        return len(self.held)


def test_one_process_is_bounded_by_its_own_calls_alone() -> None:
    assert not reached(9, None, 10) and reached(10, None, 10)
    assert not reached(9, Counts([9]), 10)  # one live worker


def test_a_worker_has_its_share_whatever_the_others_hold_and_borrows_while_the_total_has_room() -> None:
    assert not reached(4, Counts([4, 10]), 10)  # its share: 5
    assert reached(5, Counts([5, 5]), 10)  # its share, and the total at the bound
    assert not reached(7, Counts([7, 2]), 10)  # past its share, borrowing: the total has room
    assert reached(9, Counts([9, 1]), 10)
    assert not reached(0, Counts([0, 10, 0, 0]), 3)  # a share of at least one


@given(limit=st.integers(1, 50), workers=st.integers(2, 8), order=st.lists(st.integers(0, 7), max_size=400))
def test_workers_taking_places_in_any_order_stay_near_the_bound(
    limit: int, workers: int, order: list[int]
) -> None:
    """Each worker takes a place while `reached` allows, seeing the others' counts as they are: the total
    never passes `limit` + (workers - 1) x share, and each worker can always reach its share."""
    held = [0] * workers
    share = max(1, limit // workers)
    for w in (w % workers for w in order):
        if not reached(held[w], Counts(held, w), limit):
            held[w] += 1
        assert sum(held) <= limit + (workers - 1) * share
    for w in range(workers):
        while not reached(held[w], Counts(held, w), limit):
            held[w] += 1
        assert held[w] >= min(share, limit)
