"""What one streamed request looked like, in raw timestamps (perf_counter s)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class ReadInfo(NamedTuple):
    """One socket read that carried content, as the client saw it."""

    content: int  # content events completed in this read
    late_first: float  # s: how late the stamp may be for its first content event
    late_last: float  # s: ... for its last content event
    # False: late_* is measured (busy-polled: now - last time the socket was seen
    # empty; kernel-stamped: the stamp is the last packet's arrival). True: only the
    # client's busy time before a blocking read, a lower bound: the events that piled
    # up in the read ((content - 1) stream intervals) say more (metrics.client_behind).
    first_estimated: bool = False
    last_estimated: bool = False


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
    # client-behind and burst checks (metrics.py): one ReadInfo per socket read
    # that carried content.
    content_reads: list[ReadInfo] = field(default_factory=list)
    kernel_stamps: bool = False  # stamps are the kernel's receive times (SO_TIMESTAMPNS)
    # The most bytes one read returned, and the socket's receive buffer. A client
    # that lets that much pile up closes TCP's window: the server is held back, and
    # later arrivals are late by the client's doing, however exactly stamped.
    max_read_bytes: int = 0
    rcvbuf: int = 0
    # The longest the client left arrived data unread while content was arriving
    # (kernel stamp to its read; without kernel stamps: the longest gap between two
    # polls). On loopback TCP acknowledges small segments when the client reads, so
    # a client that does not read holds the server's sends back: arrivals after it
    # are late however exactly they are stamped.
    stall_s: float = 0.0
    reads: int = 0  # socket reads that returned data
    parse_s: float = 0.0  # client time spent parsing, after the stream ended
    # llama.cpp: the server's own `timings` of this request (final chunk): prompt_n, prompt_ms,
    # predicted_n, predicted_ms, predicted_per_second, ... (None from servers that don't send it)
    server_timings: dict | None = None
