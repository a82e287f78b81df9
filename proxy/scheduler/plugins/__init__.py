"""Routing policies: one plugin per module, registered in proxy.scheduler.registry."""
