"""Servers: start, watch and stop an engine (process, docker, external), and word how it ended."""
