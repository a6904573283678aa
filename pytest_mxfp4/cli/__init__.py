"""The command line: one module per command; offline, never the network stack."""
