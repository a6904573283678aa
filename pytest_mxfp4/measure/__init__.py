"""Measurement: exact-length prompts, a streaming client that timestamps raw
SSE lines, llama-benchy's metric definitions, and a client-lag watchdog."""
