"""Agent Fair Share across tenants by task completion time (built by a later issue)."""
