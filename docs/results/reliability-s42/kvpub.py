"""A KV-events publisher that floods valid batches. argv: endpoint seconds blocks_per_event"""

import os
import sys
import time

import msgspec
import zmq

sys.path.insert(
    0, os.environ.get("SAGA_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
)
from simulator.kv_events import BlockRemoved, BlockStored, KVEventBatch

ep, secs, nb = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
ctx = zmq.Context()
s = ctx.socket(zmq.XPUB)
s.set_hwm(100_000)
s.bind(ep)
s.recv()  # wait for a subscription
enc = msgspec.msgpack.Encoder()
hashes = list(range(1, nb + 1))
st = enc.encode(
    KVEventBatch(
        ts=time.time(),
        events=[
            BlockStored(
                block_hashes=hashes,
                parent_block_hash=None,
                token_ids=[],
                block_size=16,
                lora_id=None,
                medium="GPU",
                lora_name=None,
                session_id="s1",
            )
        ],
        data_parallel_rank=0,
    )
)
rm = enc.encode(
    KVEventBatch(
        ts=time.time(), events=[BlockRemoved(block_hashes=hashes, medium="GPU")], data_parallel_rank=0
    )
)
print("payload bytes", len(st), len(rm), flush=True)
seq = 0
t0 = time.time()
sent = 0
while time.time() - t0 < secs:
    for _ in range(50):
        s.send_multipart([b"", seq.to_bytes(8, "big"), st if seq % 2 == 0 else rm], copy=False)
        seq += 1
    sent += 50
    time.sleep(0.001)
print("sent", sent, "batches,", sent * len(st) / 1e6, "MB", flush=True)
time.sleep(600)
