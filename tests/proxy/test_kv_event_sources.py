"""proxy/kv_event_sources.py: reading vLLM's `GET /kv_event_sources` answer, and when to ask again."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.kv_event_sources import MAX_ANSWER_BYTES, SourceBook, SourcesError, parse_sources

REPLICA = "http://10.0.0.5:8000"


def vllm_config(endpoint: str, **kw: Any) -> dict[str, Any]:
    """A rank's entry as vLLM 0.32 serializes its KVEventsConfig."""
    return {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": endpoint,
        "replay_endpoint": None,
        "buffer_steps": 10000,
        "hwm": 100000,
        "max_queue_size": 100000,
        "topic": "",
        **kw,
    }


def answer(*endpoints: str, **kw: Any) -> bytes:
    return json.dumps({str(rank): vllm_config(e, **kw) for rank, e in enumerate(endpoints)}).encode()


def test_vllms_answer_gives_every_ranks_endpoint_on_the_replicas_host() -> None:
    # `--kv-events-config '{"endpoint": "tcp://*:5557"}'` with two data-parallel ranks: port + rank each
    body = answer("tcp://*:5557", "tcp://*:5558")
    assert parse_sources(body, REPLICA) == {0: "tcp://10.0.0.5:5557", 1: "tcp://10.0.0.5:5558"}
    assert parse_sources(b"{}", REPLICA) == {}  # events off


@pytest.mark.parametrize("wildcard", ["*", "0.0.0.0", "::", "[::]"])
def test_every_wildcard_host_becomes_the_replicas_host(wildcard: str) -> None:
    assert parse_sources(answer(f"tcp://{wildcard}:6000"), "http://gpu-3.svc:8000") == {
        0: "tcp://gpu-3.svc:6000"
    }


def test_ipv6_replicas_get_brackets_and_named_hosts_are_kept() -> None:
    assert parse_sources(answer("tcp://*:5557"), "http://[fd00::7]:8000") == {0: "tcp://[fd00::7]:5557"}
    named = answer("tcp://192.168.1.9:5557", "tcp://[fd00::9]:5558", "ipc:///tmp/kv-rank2")
    assert parse_sources(named, REPLICA) == {
        0: "tcp://192.168.1.9:5557",
        1: "tcp://[fd00::9]:5558",
        2: "ipc:///tmp/kv-rank2",
    }


def test_ranks_without_a_reachable_zmq_publisher_are_left_out() -> None:
    body = json.dumps(
        {
            "0": vllm_config("tcp://*:5557", enable_kv_cache_events=False),
            "1": vllm_config("tcp://*:5558", publisher="null"),
            "2": vllm_config("inproc://cache_dp2"),  # the server's own process only
            "3": {"endpoint": "tcp://*:5560"},  # fields left out: their defaults
            "1023": vllm_config("tcp://*:6580"),
        }
    ).encode()
    assert parse_sources(body, REPLICA) == {3: "tcp://10.0.0.5:5560", 1023: "tcp://10.0.0.5:6580"}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b"null",
        b'{"sources": []}',  # the simulator's old shape: "sources" is no rank
        json.dumps({"-1": vllm_config("tcp://*:1")}).encode(),
        json.dumps({"1024": vllm_config("tcp://*:1")}).encode(),
        json.dumps({"01": vllm_config("tcp://*:1")}).encode(),
        json.dumps({"0": "tcp://*:1"}).encode(),
        json.dumps({"0": {"endpoint": 5557}}).encode(),
        json.dumps({"0": {"topic": ""}}).encode(),  # no endpoint
        json.dumps({"0": vllm_config("tcp://*:1", enable_kv_cache_events="yes")}).encode(),
        b'{"0": {"endpoint": "tcp://*:1", "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    ],
)
def test_garbage_is_refused(body: bytes) -> None:
    with pytest.raises(SourcesError):
        parse_sources(body, REPLICA)


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://r:5557",
        "udp://r:5557",
        "tcp://r",
        "tcp://r:",
        "tcp://r:0",
        "tcp://r:65536",
        "tcp://r:*",
        "tcp://r:٣",  # a digit, but not an ASCII one
        "tcp://:5557x",
        "tcp://ho st:5557",
        "tcp://eth0;10.0.0.1:5557",  # ZMQ's source-address form: not a place to connect to
        "tcp://-r:5557",
        "tcp://[zz::1]:5557",
        "tcp://fd00::1:5557",  # an IPv6 address needs brackets
        "ipc://",
        "ipc:///tmp/a\nb",
        "tcp://" + "a" * 1100 + ":5557",
    ],
)
def test_an_odd_endpoint_refuses_the_answer(endpoint: str) -> None:
    with pytest.raises(SourcesError):
        parse_sources(answer("tcp://*:5557", endpoint), REPLICA)


def test_a_wildcard_needs_a_replica_host() -> None:
    with pytest.raises(SourcesError, match="names no host"):
        parse_sources(answer("tcp://*:5557"), "unix:///run/vllm.sock")


def test_oversized_answers_are_refused_before_decoding() -> None:
    many = json.dumps({str(r): vllm_config(f"tcp://*:{5557 + r}") for r in range(1024)}).encode()
    assert len(many) < MAX_ANSWER_BYTES  # the largest real answer fits
    assert len(parse_sources(many, REPLICA)) == 1024
    padded = b"{}" + b" " * MAX_ANSWER_BYTES
    with pytest.raises(SourcesError, match="bytes"):
        parse_sources(padded, REPLICA)


def test_a_replica_is_asked_once_and_again_only_when_its_answer_was_of_no_use() -> None:
    book = SourceBook(retry_s=30.0)
    assert book.due("a", 0.0) and book.ranks("a") is None
    book.answered("a", {}, 0.0)  # a 404, an error or no rank: the caller falls back to the port
    assert book.ranks("a") == {}
    assert not book.due("a", 29.9)
    assert book.due("a", 30.0)
    book.answered("a", {0: "tcp://a:5557", 1: "tcp://a:5558"}, 30.0)
    assert book.ranks("a") == {0: "tcp://a:5557", 1: "tcp://a:5558"}
    assert not book.due("a", 10_000.0)  # a usable answer is kept
    book.forget("a")
    assert book.due("a", 10_000.0) and book.ranks("a") is None
