"""Keep secrets out of every file, log and message the plugin writes.

Three layers, applied wherever a command line, an environment or a piece of
server output leaves the process (results JSON, baselines, the Markdown
page, the step summary, the server log header, error tails, junit.xml):

* argv: the value after a key/token/secret/password/auth-like flag
  (`--api-key VALUE` and `--api-key=VALUE`) becomes `***`;
* env: a value whose *name* looks secret (`HF_TOKEN`, `MY_API_KEY`) or whose
  *value* looks like a credential (`hf_…`, `sk-…`, `ghp_…`, `Bearer …`);
* text: every value redacted by the two above is remembered for the life of
  the process, so the same string is also masked when it comes back in free
  text (vLLM echoes its arguments in its log); credential shapes are masked
  wherever they appear.

Pure functions; no pytest, no I/O.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Iterable

MASK = "***"

# Words that make a flag or variable name secret. Matched against the name's
# parts (split at - _ .), so --tokenizer, --max-num-batched-tokens and
# TOKENIZERS_PARALLELISM stay visible while --hf-token and HF_TOKEN do not.
_SECRET_WORDS = {
    "key", "apikey", "token", "secret", "secrets", "password", "passwd", "passphrase", "auth",
    "authorization", "credential", "credentials", "bearer", "cookie", "signature", "private",
    "accesskey", "secretkey", "sas", "pat",
}
_SECRET_SUFFIXES = ("token", "apikey", "secret", "password", "passwd")
# Before "key", a word that makes it a lookup key, not a credential
# (hardware_key names the box a baseline belongs to; cache_key, sort_key).
_LOOKUP_KEYS = {"hardware", "cache", "sort", "lookup", "primary", "foreign", "metric", "group", "partition",
                "shard", "hash", "dict", "map", "headline", "case"}
# A last name part that says the value describes a secret rather than being one.
_DESCRIPTORS = {"file", "path", "dir", "filename", "name", "id", "ids", "count", "len", "length", "limit",
                "mode", "type", "size", "format", "url", "env", "var", "header", "scheme"}

# Credential shapes, wherever they appear (case-sensitive prefixes as issued).
_SHAPES = re.compile(
    r"(?:"
    r"\bhf_[A-Za-z0-9]{8,}"                                  # Hugging Face
    r"|\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_\-]{8,}"   # OpenAI / Anthropic / Stripe style
    r"|\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{8,}"            # GitHub tokens
    r"|\bgithub_pat_[A-Za-z0-9_]{8,}"
    r"|\bglpat-[A-Za-z0-9_\-]{8,}"                           # GitLab
    r"|\bxox[abprs]-[A-Za-z0-9\-]{8,}"                       # Slack
    r"|\bAKIA[0-9A-Z]{16}\b"                                 # AWS access key id
    r"|\bnvapi-[A-Za-z0-9_\-]{8,}"                           # NVIDIA NGC
    r"|\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"  # JWT
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r")"
)
_SHAPE_PREFIXES = ("hf_", "sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "xoxa-", "xoxb-",
                   "xoxp-", "xoxr-", "xoxs-", "AKIA", "nvapi-", "eyJ", "PRIVATE KEY-----")
# "Bearer xyz" / "Basic base64" in headers: keep the scheme, mask the credential. (Not "token xyz":
# "token budget" is ordinary log text.)
_AUTH_SCHEME = re.compile(r"\b([Bb]earer|BEARER)(\s+)([A-Za-z0-9._~+/=\-]{6,})"
                          r"|\b(Basic)(\s+)((?=[A-Za-z0-9+/]\S*?[A-Z0-9+/])[A-Za-z0-9+/]{8,}={0,2})")
# user:password@ in URLs.
_URL_CREDS = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^/\s:@]+:)([^@\s/]+)(@)", re.I)
# key=value / "key": "value" pairs in free text whose key looks secret (vLLM's
# "non-default args: {'api_key': 'x'}", "--api-key=x" inside a longer line).
_KV = re.compile(
    r"""(?P<k>['"]?-{0,2}[A-Za-z][A-Za-z0-9_.\-]*['"]?)(?P<sep>\s*[:=]\s*)(?P<q>\[?['"]?)(?P<v>[^'"\s,}\]]+)"""
)

_known: set[str] = set()
_known_lock = threading.Lock()


def _parts(name: str) -> list[str]:
    return [p for p in re.split(r"[-_.\s]+", name.strip("-'\" ").lower()) if p]


def is_secret_name(name: str) -> bool:
    """True for names like HF_TOKEN, api_key, --api-key, X-Auth-Token, OPENAI_APIKEY;
    False for --tokenizer, --max-num-batched-tokens, HF_TOKEN_PATH, token_ids."""
    parts = _parts(name)
    if not parts or parts[-1] in _DESCRIPTORS:
        return False
    for i, p in enumerate(parts):
        if p == "key" and i > 0 and parts[i - 1] in _LOOKUP_KEYS:
            continue
        if p in _SECRET_WORDS or p.endswith(_SECRET_SUFFIXES):
            return True
    return False


# old name, kept for callers of servers/redact.py
is_secret = is_secret_name


def looks_secret(value: str) -> bool:
    """True when the value itself has a credential's shape (hf_…, sk-…, ghp_…, Bearer …)."""
    v = str(value)
    return bool(_SHAPES.search(v) or _AUTH_SCHEME.search(v) or _URL_CREDS.search(v))


def remember(value: str) -> None:
    """Mask this exact string in all later redact_text calls (min. 4 chars, so
    short values like "1" do not turn every number into ***)."""
    v = str(value)
    if len(v) >= 4 and v != MASK:
        with _known_lock:
            _known.add(v)


def forget_all() -> None:
    """Tests only: clear the remembered values."""
    with _known_lock:
        _known.clear()


def redact_text(text: Any) -> Any:
    """Mask remembered secret values and credential shapes in free text.
    Non-strings are returned unchanged."""
    if not isinstance(text, str) or not text:
        return text
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for v in known:
        if v in text:
            text = text.replace(v, MASK)
    # cheap substring checks first: a server log is megabytes of lines with none of these
    if any(p in text for p in _SHAPE_PREFIXES):
        text = _SHAPES.sub(MASK, text)
    lower = text.lower()
    if "bearer" in lower or "Basic" in text:
        text = _AUTH_SCHEME.sub(lambda m: (m.group(1) or m.group(4)) + (m.group(2) or m.group(5)) + MASK, text)
    if "://" in text:
        text = _URL_CREDS.sub(lambda m: m.group(1) + MASK + m.group(3), text)

    def kv(m: re.Match) -> str:
        if m.group("v") == MASK or m.group("v").lower() in ("bearer", "basic", "token") \
                or not is_secret_name(m.group("k")):
            return m.group(0)
        return m.group("k") + m.group("sep") + m.group("q") + MASK

    return _KV.sub(kv, text)


def redact_env(env: dict[str, Any] | None) -> dict[str, str]:
    """Values of secret-named variables, and values shaped like credentials, become ***."""
    out = {}
    for k, v in (env or {}).items():
        s = "" if v is None else str(v)
        if s and (is_secret_name(str(k)) or looks_secret(s)):
            remember(s)
            out[str(k)] = MASK
        else:
            out[str(k)] = redact_text(s)
    return out


def _flag_name(arg: str) -> str | None:
    if arg.startswith("-") and len(arg) > 1 and not _is_number(arg):
        return arg.split("=", 1)[0]
    return None


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def redact_argv(argv: Iterable[Any]) -> list[str]:
    """`--api-key X` / `--api-key=X` / `-H "Authorization: Bearer X"` -> value masked."""
    args = [str(a) for a in argv]
    out: list[str] = []
    mask_next = False
    for a in args:
        if mask_next:
            mask_next = False
            if _flag_name(a) is None:  # `--api-key --port 80`: no value given
                remember(a)
                out.append(MASK)
                continue
        flag = _flag_name(a)
        if flag is not None and is_secret_name(flag):
            if "=" in a:
                value = a.split("=", 1)[1]
                remember(value)
                out.append(f"{flag}={MASK}")
            else:
                mask_next = True
                out.append(a)
            continue
        if "=" in a and flag is None:  # KEY=VALUE (env-style argument)
            k, v = a.split("=", 1)
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) and is_secret_name(k):
                remember(v)
                out.append(f"{k}={MASK}")
                continue
        if looks_secret(a) and _SHAPES.fullmatch(a.strip()):
            remember(a.strip())
        out.append(redact_text(a))
    return out


def redact_obj(obj: Any, key: str = "") -> Any:
    """Recursively redact a JSON/YAML-like structure: lists under a key that
    names a command are treated as argv, mappings under an env-like key as an
    environment, secret-named keys lose their values, strings are scanned."""
    k = key.lower()
    if isinstance(obj, dict):
        if k.endswith("env") or k in ("environment_variables", "environ"):
            if all(not isinstance(v, (dict, list)) for v in obj.values()):
                return redact_env(obj)
        out = {}
        for kk, v in obj.items():
            if isinstance(v, (str, int, float)) and not isinstance(v, bool) and is_secret_name(str(kk)) and v != "":
                remember(str(v))
                out[kk] = MASK
            else:
                out[kk] = redact_obj(v, str(kk))
        return out
    if isinstance(obj, (list, tuple)):
        if (k.endswith("command") or k in ("argv", "args", "cmd")) and all(isinstance(x, (str, int, float)) for x in obj):
            return redact_argv(obj)
        return [redact_obj(x, key) for x in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def register_config_secrets(command: Iterable[Any] = (), env: dict[str, Any] | None = None) -> None:
    """Remember the secrets of a server config up front, before anything is
    started, so that its log and error messages are masked from the start."""
    redact_argv(command)
    redact_env(env or {})


__all__ = ["MASK", "is_secret_name", "is_secret", "looks_secret", "redact_text", "redact_env", "redact_argv",
           "redact_obj", "remember", "register_config_secrets", "forget_all"]
