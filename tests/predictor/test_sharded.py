"""The sharded session tables answer as the dict and OrderedDict they replace (predictor/sharded.py): exactly
while whole, and once split with each shard in the OrderedDict's order and the oldest taken shard by shard."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter, OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predictor.sharded import SHARDS, ShardedDict, ShardedLru

KEYS = st.sampled_from([f"s{i}" for i in range(40)])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, st.integers()),
        st.tuples(st.just("set_newest"), KEYS, st.integers()),
        st.tuples(st.just("move"), KEYS, st.just(0)),
        st.tuples(st.just("touch"), KEYS, st.just(0)),
        st.tuples(st.just("pop"), KEYS, st.just(0)),
        st.tuples(st.just("pop_oldest"), st.just(""), st.just(0)),
    ),
    max_size=300,
)
SPLIT_AT = st.sampled_from([1, 2, 10, 30, 4096])  # split at once, soon, late, never


def _is_in_order(part: list[str], order: list[str]) -> bool:
    place = {key: n for n, key in enumerate(order)}
    return all(place[a] < place[b] for a, b in itertools.pairwise(part))


@settings(max_examples=400, deadline=None)
@given(OPS, st.integers(0, 20), SPLIT_AT)
def test_an_lru_table_answers_as_an_ordered_dict_and_keeps_its_order_in_every_part(
    ops: list[tuple[str, str, int]], salt: int, split_at: int
) -> None:
    table: ShardedLru[int] = ShardedLru(salt, split_at)
    model: OrderedDict[str, int] = OrderedDict()
    for op, key, value in ops:
        whole = len(table.parts()) == 1
        if op == "set":
            table[key] = value
            model[key] = value
        elif op == "set_newest":
            table.set_newest(key, value)
            model[key] = value
            model.move_to_end(key)
        elif op == "move":
            if key in model:
                table.move_to_end(key)
                model.move_to_end(key)
            else:
                with pytest.raises(KeyError):
                    table.move_to_end(key)
        elif op == "touch":
            assert table.touch(key) == model.get(key)
            if key in model:
                model.move_to_end(key)
        elif op == "pop":
            assert table.pop(key) == model.pop(key, None)
        elif model:
            oldest = table.oldest()
            taken, taken_value = table.pop_oldest()
            if whole:  # exactly the OrderedDict's
                assert oldest == taken == next(iter(model))
            assert model.pop(taken) == taken_value
        else:
            assert table.oldest() is None
            with pytest.raises(KeyError):
                table.pop_oldest()
        assert len(table) == len(model) and bool(table) == bool(model)
        if len(table.parts()) == 1:
            assert list(table) == list(model)
        else:
            order = list(model)
            assert sorted(table) == sorted(order)
            assert all(_is_in_order(list(part), order) for part in table.parts())
    assert dict(table.items()) == dict(model)
    for key in [f"s{i}" for i in range(40)]:
        assert (key in table) == (key in model)
        assert table.get(key) == model.get(key)


def test_a_split_table_takes_its_oldest_from_every_shard_in_turn() -> None:
    """LRU in all but the exact pick: every key taken is among the oldest ones, and no shard is drained
    before the others."""
    table: ShardedLru[None] = ShardedLru(0, split_at=64)
    keys = [f"conv-{uuid.UUID(int=n).hex}" for n in range(20_000)]
    for key in keys:
        table[key] = None
    place = {key: n for n, key in enumerate(keys)}
    shard = {key: n for n, part in enumerate(table.parts()) for key in part}
    taken = [table.pop_oldest()[0] for _ in range(2_000)]
    assert Counter(shard[key] for key in taken) == {n: 2_000 // SHARDS for n in range(SHARDS)}
    assert max(place[key] for key in taken) < 2 * 2_000  # among the oldest, give or take


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), KEYS, st.integers()), max_size=300), st.integers(0, 20), SPLIT_AT)
def test_a_sharded_dict_answers_as_a_dict(ops: list[tuple[bool, str, int]], salt: int, split_at: int) -> None:
    table: ShardedDict[int] = ShardedDict(salt, split_at)
    model: dict[str, int] = {}
    for put, key, value in ops:
        if put:
            table[key] = value
            model[key] = value
        else:
            assert table.pop(key) == model.pop(key, None)
        assert len(table) == len(model) and bool(table) == bool(model)
    assert sorted(table) == sorted(model)
    assert sorted(table.values()) == sorted(model.values())
    assert dict(table.items()) == model
    for key in [f"s{i}" for i in range(40)]:
        assert (key in table) == (key in model)
        assert table.get(key) == model.get(key)
        if key not in model:
            with pytest.raises(KeyError):
                table[key]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=300), max_size=60), st.integers(0, 20))
def test_any_id_has_a_shard_and_is_found_there(keys: list[str], salt: int) -> None:
    """The shard comes from an id's characters: empty ids, one character, control characters, characters
    past the BMP and long ids each have one, and are found again, split or not."""
    for split_at in (1, 4096):
        table: ShardedLru[int] = ShardedLru(salt, split_at)
        model: OrderedDict[str, int] = OrderedDict()
        for n, key in enumerate(keys):
            table[key] = n
            model[key] = n
        assert dict(table.items()) == dict(model) and len(table) == len(model)
        for key in keys:
            assert table.touch(key) == model[key]
        for key in keys:
            assert table.pop(key) == model.pop(key, None)
        assert len(table) == 0


@pytest.mark.parametrize(
    "make_key",
    [
        lambda n: f"conv-f98b6eb582687690bcd1d57b-saga-3487-{n}",  # a session inferred per call
        lambda n: str(uuid.UUID(int=n * 2654435761)),  # clients' random ids
        lambda n: f"agent-{n}",
    ],
)
def test_keys_spread_over_every_shard_and_tables_of_other_salts_split_them_otherwise(make_key) -> None:  # type: ignore[no-untyped-def]
    """What the tables are for: no shard holds much more than its share of the keys, and tables with other
    salts do not put the same keys in the same shards (so they do not fill, and rebuild, at the same
    moment)."""
    keys = [make_key(n) for n in range(100_000)]
    tables: list[ShardedDict[None]] = [ShardedDict(salt) for salt in range(7)]  # the proxy's seven
    for table in tables:
        for key in keys:
            table[key] = None
        assert len(table.parts()) == SHARDS  # split past SPLIT_AT keys
        assert max(len(part) for part in table.parts()) < 2 * len(keys) / SHARDS

    def shard_of(table: ShardedDict[None]) -> dict[str, int]:
        return {key: n for n, part in enumerate(table.parts()) for key in part}

    first = shard_of(tables[0])
    for other in tables[1:]:
        where = shard_of(other)
        together = Counter(first[key] == where[key] for key in keys)[True]
        assert together < 2 * len(keys) / SHARDS  # about 1 in 16, as for independent shards (all, alike)
