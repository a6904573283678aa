"""What one streamed request looked like, in raw timestamps (perf_counter s)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StreamTiming:
    start: float  # just before the request was sent
    first_response: float | None = None  # first SSE data line (llama-benchy "ttfr")
    first_content: float | None = None  # first chunk carrying generated text/tokens
    last_content: float | None = None  # last chunk carrying generated text/tokens
    end: float | None = None  # [DONE] or stream close
    content_chunks: int = 0
    prompt_tokens: int | None = None  # from usage
    completion_tokens: int | None = None  # from usage
    token_ids_seen: int = 0  # sum of len(token_ids) over chunks, when the server sends them
    finish_reason: str | None = None
    system_fingerprint: str | None = None  # vLLM: "vllm-<version>-<hash of its config>"
    chunk_times: list[float] = field(default_factory=list)
    # What the client itself saw of its reads (see measure/rawstream.py), for the
    # client-behind and burst checks (metrics.py). One entry per socket read that
    # carried content: (content chunks in it, late_s, spun). spun: busy-polled, and
    # late_s bounds how late that read's stamp can be (now - last time the socket
    # was seen empty); blocking read: late_s = how long the client was busy before
    # asking for it (a lower bound; metrics adds what the events per read imply).
    content_reads: list[tuple[int, float, bool]] = field(default_factory=list)
    reads: int = 0  # socket reads that returned data
    parse_s: float = 0.0  # client time spent parsing, after the stream ended
    # llama.cpp: the server's own `timings` of this request (final chunk): prompt_n, prompt_ms,
    # predicted_n, predicted_ms, predicted_per_second, ... (None from servers that don't send it)
    server_timings: dict | None = None
