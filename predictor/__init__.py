"""Agent Execution Graphs, learned online from the request stream (built by a later issue)."""
