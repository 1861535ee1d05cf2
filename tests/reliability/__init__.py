"""Reliability and security tests (issue 8): provider faults, crashes, concurrency, hostile input, tokens."""
