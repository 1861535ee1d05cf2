"""The engine: store, configuration, providers, sync, poller, events. asyncio end to end; no UI imports."""
