"""Run one case (e.g. pp2048 or tg32) against one server: warmups, measured
runs, every sample kept with the reasons it can't be trusted, if any."""

from __future__ import annotations

from dataclasses import replace

from pytest_mxfp4.formats.config import Case, Workloads
from pytest_mxfp4.errors import MeasurementError, PerfUserError
from pytest_mxfp4.measure.client import EngineClient, RequestSpec, StreamTimeout
from pytest_mxfp4.measure.concurrent import aggregate, all_together_s, peak_streams, run_round
from pytest_mxfp4.measure.fidelity import FLAG_SERVER_DISAGREES, SERVER_RATIO_BOUND, decode_ratio, disagrees, keep_timings
from pytest_mxfp4.measure.lag import LagMonitor
from pytest_mxfp4.measure.metrics import compute_metrics
from pytest_mxfp4.measure.prompts import PromptFactory
from pytest_mxfp4.measure.spec import request_counts
from pytest_mxfp4.formats.samples import (  # noqa: F401  (re-exported: Sample/CaseRun used to live here)
    FLAG_BURST,
    FLAG_CLIENT_LAG,
    FLAG_GPU_THROTTLED,
    FLAG_PREFIX_CACHE_HIT,
    CaseRun,
    Round,
    Sample,
)


class CaseRunner:
    """Measures one case on one server; `measure(n)` can be called again for
    more samples (sequential sampling, confirmation runs)."""

    def __init__(self, client: EngineClient, case: Case, workloads: Workloads, seed: int | None = None,
                 gpu_sampler=None, progress=None):
        self.client = client
        self.progress = progress  # a line writer: a stall is said when it happens
        self.stalled: str | None = None  # the first request timeout: the case stops there
        self.gpu_sampler = gpu_sampler  # telemetry.GpuSampler or None (no NVIDIA GPU)
        self.case = case
        self.w = workloads
        self.prompts = PromptFactory(client.count_tokens, seed, server=f"server {client.name!r}",
                                     source=case.prompt)
        self.latency_s = client.latency_s(workloads.latency_mode)
        self.result = CaseRun(server=client.name, case=case, latency_ms=self.latency_s * 1000.0)
        self._warmed = False
        self._reset_note_done = False

    def warmup(self) -> None:
        for _ in range(self.w.warmup):
            self._one(run=-1)  # discarded (a warm-up round of a concurrent case too)
            if self.stalled:
                break
        self._warmed = True

    def measure(self, n: int, max_extra: int | None = None) -> list[Sample]:
        """Take `n` trusted samples; flagged ones are kept but replaced, up to
        `max_extra` extra attempts (default 2n). Errors are kept and not retried.
        A concurrent case takes `n` rounds of N streams (N samples each): a
        round counts as trusted when each of its streams is."""
        if not self._warmed:
            self.warmup()
        max_extra = 2 * n if max_extra is None else max_extra
        taken, clean, attempts = [], 0, 0
        if self.stalled:  # (in the warmup) one error sample says why nothing was measured
            s = Sample(run=len(self.result.samples), error=self.stalled)
            self.result.samples.append(s)
            return [s]
        while clean < n and attempts < n + max_extra and not self.stalled:
            got = self._one(run=self._next_run())
            self.result.samples.extend(got)
            taken.extend(got)
            attempts += 1
            if any(s.error is not None for s in got):
                if attempts >= n:
                    break
                continue
            clean += all(s.clean for s in got)
        return taken

    def _next_run(self) -> int:
        return max((s.run for s in self.result.samples), default=-1) + 1

    def _one(self, run: int) -> list[Sample]:
        """One round: a single stream, or the case's N concurrent streams."""
        c, client = self.case, self.client
        n = c.concurrency
        samples = [Sample(run=run, stream=i) for i in range(n)]
        try:
            if self.w.reset_prefix_cache and not client.reset_prefix_cache() and not self._reset_note_done:
                self.result.notes.append(getattr(client, "prefix_cache_note",
                                                 "server offers no /reset_prefix_cache; relying on unique prompts "
                                                 "(vLLM: set VLLM_SERVER_DEV_MODE=1 to enable it)"))
                self._reset_note_done = True
            prompts = []
            for _ in range(n):  # each stream its own prompt (its own nonce): no shared prefix between them
                prefix = None
                if c.depth > 0:
                    # Load the context first so it sits in the KV cache, as llama-bench -d does.
                    prefix = self.prompts.exact(c.depth)
                    client.stream(RequestSpec(prefix, 1), exact=False)
                prompts.append(self.prompts.exact(c.depth + c.pp, prefix=prefix))
            hits_before, spec_before = client.counters()
            with LagMonitor() as lag, _telemetry(self.gpu_sampler) as gpu:
                if n == 1:
                    timings: list = [client.stream(RequestSpec(prompts[0], c.tg))]
                else:
                    timings = run_round(client, [RequestSpec(p, c.tg) for p in prompts])
                lag_ms = lag.max_lag_ms()
            hits_after, spec_after = client.counters()
        except StreamTimeout as e:
            return self._stalled(samples, run, e)
        except MeasurementError as e:
            for smp in samples:
                smp.error = str(e)
            return samples
        for smp, timing in zip(samples, timings):
            smp.client_lag_ms = lag_ms
            if isinstance(timing, StreamTimeout):
                return self._stalled(samples, run, timing)
            if isinstance(timing, MeasurementError):
                smp.error = str(timing) if n == 1 else f"stream {smp.stream}: {timing}"
                continue
            if isinstance(timing, BaseException):
                raise timing
            try:
                self._assess(smp, timing, gpu)
                # speculative decoding: the engine's own counts for this request (the counter
                # delta only where one request ran; concurrent streams: per-request timings)
                spec = request_counts(spec_before if n == 1 else None, spec_after if n == 1 else None,
                                      getattr(timing, "server_timings", None))
                if spec is not None and smp.metrics is not None:
                    smp.spec = spec.to_dict()
                    smp.metrics = replace(smp.metrics, accept_pct=spec.rate_pct, accept_len=spec.mean_length)
            except MeasurementError as e:
                smp.error = str(e) if n == 1 else f"stream {smp.stream}: {e}"
            except PerfUserError:
                raise
        if hits_before is not None and hits_after is not None:
            hit = hits_after - hits_before
            for smp in samples:
                smp.cache_hit_tokens = hit / n
                if hit > c.depth * n:  # more than the streams' own contexts: work was shared or cached
                    smp.flags.append(FLAG_PREFIX_CACHE_HIT)
        if n > 1:
            self._round(run, samples, timings)
        return samples

    def _stalled(self, samples: list[Sample], run: int, e: StreamTimeout) -> list[Sample]:
        # a stalled engine stalls the next request too: stop the case now, not
        # after runs x the timeout; say so at once (the case's line comes later)
        self.stalled = (f"{e}; the case was stopped at this first stall "
                        f"({'warmup' if run < 0 else f'run {run}'}), not retried")
        for smp in samples:
            smp.error = self.stalled
        if self.progress:
            self.progress(f"[{self.client.name}] {self.case.id}: stalled: {e}; stopping this case")
        return samples

    def _assess(self, sample: Sample, timing, gpu) -> None:
        """One stream's numbers and flags, exactly as a single stream's."""
        c, client = self.case, self.client
        if gpu is not None:
            sample.telemetry = [g.to_dict() for g in gpu.summary]
            if gpu.throttled:
                sample.flags.append(FLAG_GPU_THROTTLED)
        self.result.system_fingerprint = timing.system_fingerprint or self.result.system_fingerprint
        sample.prompt_tokens = timing.prompt_tokens
        sample.completion_tokens = timing.completion_tokens
        sample.content_chunks = timing.content_chunks
        check_token_counts(client.name, c, timing.prompt_tokens, timing.completion_tokens)
        check_streamed_tokens(client.name, timing.token_ids_seen, timing.completion_tokens)
        sample.metrics = compute_metrics(timing, self.latency_s, c.pp, c.tg)
        if sample.client_lag_ms > self.w.max_client_lag_ms:
            sample.flags.append(FLAG_CLIENT_LAG)
        self._server_check(sample, timing)
        from pytest_mxfp4.measure.metrics import CLIENT_BEHIND_BOUND, FLAG_CLIENT_BEHIND, burst_delivery, client_behind
        behind = client_behind(timing)  # the client was the limit: its own stamps say so
        if behind is not None and behind > CLIENT_BEHIND_BOUND:
            sample.flags.append(FLAG_CLIENT_BEHIND)
        elif burst_delivery(timing):  # the server held tokens back and flushed them
            sample.flags.append(FLAG_BURST)

    def _round(self, run: int, samples: list[Sample], timings: list) -> None:
        """The round's aggregate, and whether the server ran the N streams together."""
        n = len(samples)
        rd = Round(run=run, streams=n)
        ok = [t for t, smp in zip(timings, samples) if smp.error is None]
        if len(ok) < n:
            rd.error = f"{n - len(ok)} of {n} streams gave no numbers"
        else:
            rd.release_spread_ms = (max(t.start for t in ok) - min(t.start for t in ok)) * 1000.0
            decoding = [(t.first_content, t.last_content) for t in ok]
            rd.peak_streams = peak_streams(decoding)
            rd.together_ms = all_together_s(decoding) * 1000.0
            try:
                wall, rd.tokens, rd.agg_tps = aggregate(ok)
                rd.wall_ms = wall * 1000.0
            except MeasurementError as e:
                rd.error = str(e)
            if rd.peak_streams < n:
                # the server queued streams: this is not an N-stream measurement
                rd.error = (f"server {self.client.name!r} decoded at most {rd.peak_streams} of the {n} streams "
                            f"at once: it serialized them (fewer slots than streams? vLLM --max-num-seqs, "
                            f"llama.cpp -np); not a {self.case.id} number")
                for smp in samples:
                    smp.error = rd.error
        if run >= 0:
            self.result.rounds.append(rd)
            self._round_note()

    def _round_note(self) -> None:
        """One note per concurrent case: how together the release and the decoding were."""
        ok = [rd for rd in self.result.rounds if rd.error is None and rd.wall_ms]
        if not ok:
            return
        n = self.case.concurrency
        shares = sorted(rd.together_ms / rd.wall_ms for rd in ok)
        note = (f"{self.case.id}: {n} streams released within {max(rd.release_spread_ms for rd in ok):.2f} ms "
                f"(worst of {len(ok)} rounds); all {n} decoding at once for {shares[len(shares) // 2]:.0%} of a "
                f"round's wall (median)")
        self.result.notes[:] = [x for x in self.result.notes if not x.startswith(f"{self.case.id}: {n} streams ")]
        self.result.notes.append(note)

    def _server_check(self, sample: Sample, timing) -> None:
        """Keep the server's own timings (llama.cpp) and flag a sample whose
        client tg disagrees with the server's beyond SERVER_RATIO_BOUND."""
        sample.server_timings = keep_timings(getattr(timing, "server_timings", None))
        if sample.server_timings is None or sample.metrics is None:
            return
        sample.server_decode_ratio = decode_ratio(sample.metrics.tg_tps, sample.server_timings)
        if disagrees(sample.server_decode_ratio):
            sample.flags.append(FLAG_SERVER_DISAGREES)
        ratios = [s.server_decode_ratio for s in self.result.samples + [sample]
                  if s.server_decode_ratio is not None and s.run >= 0]
        if ratios:
            note = (f"client/server decode ratio (client tg / server predicted_per_second): "
                    f"median {sorted(ratios)[len(ratios) // 2]:.3f}, range {min(ratios):.3f}-{max(ratios):.3f} "
                    f"over {len(ratios)} samples; a sample beyond ±{SERVER_RATIO_BOUND:.0%} is flagged "
                    f"{FLAG_SERVER_DISAGREES}")
            self.result.notes[:] = [n for n in self.result.notes if not n.startswith("client/server decode ratio")]
            self.result.notes.append(note)


def _telemetry(sampler):
    from contextlib import nullcontext

    return sampler.window() if sampler is not None else nullcontext()


def check_streamed_tokens(server: str, token_ids_seen: int, completion_tokens: int | None) -> None:
    """Where the server streams token ids (vLLM with return_token_ids), usage
    must agree with them: usage that overstates the stream inflates tg t/s."""
    if token_ids_seen and completion_tokens is not None and token_ids_seen != completion_tokens:
        raise MeasurementError(f"server {server!r}: usage says {completion_tokens} completion tokens but "
                               f"{token_ids_seen} token ids were streamed; the decode rate would be wrong")


def check_token_counts(server: str, case: Case, prompt_tokens: int | None, completion_tokens: int | None) -> None:
    """A sample whose token counts differ from the request is an error, not a number."""
    want_prompt = case.depth + case.pp
    if prompt_tokens is None or completion_tokens is None:
        raise MeasurementError(f"server {server!r} sent no usage block (stream_options.include_usage); "
                               "token counts cannot be verified")
    if prompt_tokens != want_prompt:
        raise MeasurementError(f"prompt_tokens {prompt_tokens} != {want_prompt} requested")
    if completion_tokens != case.tg:
        raise MeasurementError(f"completion_tokens {completion_tokens} != {case.tg} requested "
                               "(does the server honour ignore_eos/min_tokens?)")
