"""The simulated Replicate: a seeded fleet of trainings behind Replicate's HTTP API."""
