"""Simulated vLLM replicas: an engine model served over vLLM's HTTP surface.

Sans-IO core (no asyncio, no clock reads): `tokenizer` (text <-> ids, chat template), `block_hash` and
`block_pool` (paged prefix cache), `kv_events` (vLLM's KV-cache event wire format), `cost_model` (step time,
`PROFILES`), `request_queue`, `request_state`, `engine_types` and `engine` (one vLLM engine on a virtual
clock). I/O shell: `driver` (asyncio pacing of an engine against wall time), `metrics`, `openai_api` (wire
types), `kv_publisher` (KV events over ZMQ), `routes` and `replica` (one aiohttp server), `server`
(`start_fleet`, `serve_fleet_forever`).

Discrete-event cluster (many engines behind the proxy's scheduler core on one virtual clock, no I/O):
`event_queue` (clock and event heap), `des_client` (agent workflows as token ids), `cluster_replica`,
`cluster_result` (config and records), `cluster` (`run_cluster`), `cluster_bench` (a command-line run).
"""

import saga_native  # noqa: F401  (first: the compiled modules' stale-build guard)
