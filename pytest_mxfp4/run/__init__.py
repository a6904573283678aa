"""The run controller: session, start plan, judging, shards, the machine lock."""
