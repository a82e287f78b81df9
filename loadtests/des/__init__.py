"""The discrete-event cluster: N simulated engines (`simulator.engine`) on one virtual clock, driven by the
unchanged scheduler core (`proxy.scheduler`) and token-level agent clients, for experiments at scale."""
