# ruff: noqa: SIM115  (a reviewer's reproduction, kept as it ran)
"""Scripted vLLM KV-event publisher. argv: endpoint script.json
script: list of steps; each step {"seq": n (optional, default next), "events": [...]} or {"sleep": s}
or {"wait_file": path} (wait until the file exists). events: ["S", session, [hashes], parent] |
["R", [hashes]] | ["C"]."""

import json
import os
import sys
import time

import msgspec
import zmq

sys.path.insert(
    0,
    os.environ.get("SAGA_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))),
)
from simulator.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KVEventBatch

ep, path = sys.argv[1], sys.argv[2]
steps = json.load(open(path))
ctx = zmq.Context()
s = ctx.socket(zmq.XPUB)
s.bind(ep)
s.recv()  # a subscription
time.sleep(0.3)
enc = msgspec.msgpack.Encoder()
seq = 0
for st in steps:
    if "sleep" in st:
        time.sleep(st["sleep"])
        continue
    if "wait_file" in st:
        while not os.path.exists(st["wait_file"]):
            time.sleep(0.05)
        continue
    seq = st.get("seq", seq)
    evs = []
    for e in st["events"]:
        if e[0] == "S":
            evs.append(
                BlockStored(
                    block_hashes=e[2],
                    parent_block_hash=e[3],
                    token_ids=[0] * (16 * len(e[2])),
                    block_size=16,
                    lora_id=None,
                    medium="GPU",
                    lora_name=None,
                    session_id=e[1],
                )
            )
        elif e[0] == "R":
            evs.append(BlockRemoved(block_hashes=e[1], medium="GPU"))
        else:
            evs.append(AllBlocksCleared())
    s.send_multipart(
        [
            b"",
            seq.to_bytes(8, "big"),
            enc.encode(KVEventBatch(ts=time.time(), events=evs, data_parallel_rank=0)),
        ]
    )
    print("sent seq", seq, flush=True)
    seq += 1
print("done", flush=True)
time.sleep(600)
