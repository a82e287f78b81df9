"""`python -m loadtests.bench.learning_cost`: what sharing the predictors' learning costs a worker of
`saga serve --workers N` per observation (proxy/shared_learning.py): replaying another worker's observation
into this worker's graphs (`Predictor.learn`), and passing it through a ring (publish, then read by another
worker). The observations are those of `--sessions` toy agent sessions (tests' known-structure stream).
Prints CPU µs (process time) per observation for each, the best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

from predictor import Predictor
from predictor.predictor import Learned
from proxy.shared_learning import LearningRings

BATCH = 30  # observations per sync period at ~2,000 calls a second


def observations(sessions: int, seed: int = 0) -> list[Learned]:
    """Transitions and ends of `sessions` sessions of a toy agent with five tools."""
    rng = random.Random(seed)
    teacher = Predictor()
    teacher.keep_learned()
    now = 0.0
    tools = ["search", "read", "edit", "test", "answer"]
    for i in range(sessions):
        sid, prompt = f"s{i}", 1_000
        for _ in range(rng.randrange(5, 30)):
            teacher.call_arrived(sid, "toy", now, prompt)
            now += rng.uniform(0.5, 3.0)
            tool = rng.choice(tools)
            reason, names = ("stop", ()) if tool == "answer" else ("tool_calls", (tool,))
            teacher.call_finished(sid, now, prompt, 100, reason, names)
            now += rng.uniform(0.1, 5.0)
            prompt += 300
        teacher.session_ended(sid)
    return teacher.take_learned()


def measure(sessions: int) -> tuple[int, float, float]:
    """(observations, replay µs each, ring µs each)."""
    learned = observations(sessions)
    started = time.process_time()
    Predictor().learn(learned)
    replay = time.process_time() - started
    with tempfile.TemporaryDirectory(prefix="saga-") as directory:
        writer, reader = (
            LearningRings(directory, 2, 0, size=1 << 22),
            LearningRings(directory, 2, 1, size=1 << 22),
        )
        started = time.process_time()
        passed = 0
        for i in range(0, len(learned), BATCH):
            writer.publish(learned[i : i + BATCH])
            passed += len(reader.read_others())
        ring = time.process_time() - started
        writer.close()
        reader.close()
    assert passed == len(learned)
    return len(learned), replay / len(learned) * 1e6, ring / len(learned) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = [measure(args.sessions) for _ in range(args.repeat)]
    replay, ring = min(r[1] for r in runs), min(r[2] for r in runs)
    print(f"{runs[0][0]} observations: replay {replay:.2f} µs each, ring {ring:.2f} µs each")


if __name__ == "__main__":
    main()
