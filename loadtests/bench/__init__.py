"""The benchmark harness: every policy and every peer router on the same seeded work, side by side."""
