"""Observation: what the engine says it runs (log facts), the machine it runs on, GPU telemetry."""
