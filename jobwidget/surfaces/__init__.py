"""Surfaces over the engine: the `Jobs` controller, the panel widget, the HTTP server, the CLI."""
