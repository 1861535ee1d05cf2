"""Providers: the async interface and its implementations (Replicate, and Replicate's simulator)."""
