"""What LossLab may write about a config: secrets masked, MLflow's size limits kept.

Everything LossLab records (params, tags such as `overrides`, the config.yaml artifact, result.json,
sweep summaries) goes through these functions, so a value whose key looks secret (`db_password`,
`api_token`, ...) or a password inside a URI (`postgresql://carol:pw@host/x`) never leaves the
process. Hand-written because MLflow has no redaction of its own; no mlflow import here, so the
config checks in `build` can use it before MLflow is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: MLflow's limits (mlflow.utils.validation): keys, param values, tag values, items per log_batch
MAX_KEY_LEN, MAX_PARAM_LEN, MAX_TAG_LEN = 250, 6000, 8000
MAX_METRICS, MAX_PARAMS_TAGS = 1000, 100
MASK = "***"

_SECRET_KEY = re.compile(
    r"(password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential"
    r"|(^|[._-])(pass|pwd)($|[._-]))",
    re.IGNORECASE,
)
# scheme://user:password@  (the password is whatever runs up to the first '@' after it), also as
# Hydra and its sweepers escape it (`postgresql\\://carol\\:pw@`, backslashes doubled by YAML or JSON)
# and percent-encoded (`postgresql%3A%2F%2Fcarol%3Apw%40`, a URI inside another URI's query)
_COLON, _SLASH, _AT = (rf"(?:\\*{c}|%{code})" for c, code in ((":", "3[Aa]"), ("/", "2[Ff]"), ("@", "40")))
_URI_PASSWORD = re.compile(
    rf"(?P<pre>[A-Za-z][A-Za-z0-9+.-]*{_COLON}{_SLASH}{_SLASH}(?:(?!{_COLON}|{_AT})[^/\s])*)"
    rf"(?P<colon>{_COLON})(?:(?!{_AT})[^/\s])*(?P<at>{_AT})"
)
_KEY_CHARS = re.compile(r"^[/\w.\- :]*$")


def secret_key(key: object) -> bool:
    """True for a key whose value must never be recorded (`db_password`, `api_token`, `secret`, ...)."""
    return bool(_SECRET_KEY.search(str(key)))


def redact_uri(uri: str) -> str:
    """Drop a password from a URI before it is printed or recorded (`user:***@host`)."""
    parts = urlsplit(uri)
    try:
        password = parts.password
    except ValueError:
        password = None
    if password is None:
        return redact_text(uri)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:{MASK}@{host}" if parts.username else host
    return urlunsplit(parts._replace(netloc=netloc))


def redact_text(text: str) -> str:
    """Passwords of every URI inside free text (an override list, an error message) masked."""
    if ":" not in text and "%3" not in text:
        return text
    return _URI_PASSWORD.sub(lambda m: f"{m['pre']}{m['colon']}{MASK}{m['at']}", text)


def redact_value(key: object, value: Any) -> Any:
    """`value` as it may be recorded under `key`: masked if the key looks secret, else URIs cleaned."""
    if secret_key(key):
        return MASK if not isinstance(value, (Mapping, list, tuple)) else redact_tree(value, masked=True)
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, (Mapping, list, tuple)):
        return redact_tree(value)
    return value


def redact_tree(tree: Any, masked: bool = False) -> Any:
    """A plain copy of a nested config (dicts, lists) with every secret masked."""
    if isinstance(tree, Mapping):
        return {
            k: (MASK if masked else redact_value(k, v))
            if not isinstance(v, (Mapping, list, tuple))
            else redact_tree(v, masked or secret_key(k))
            for k, v in tree.items()
        }
    if isinstance(tree, (list, tuple)):
        return [
            redact_tree(v, masked)
            if isinstance(v, (Mapping, list, tuple))
            else (MASK if masked else redact_value("", v))
            for v in tree
        ]
    return MASK if masked else redact_value("", tree)


def redact_override(override: str) -> str:
    """One Hydra override (`+extra.db_password=x`, `db.uri=postgresql://u:p@h/d`) safe to record."""
    key, sep, _ = override.partition("=")
    if sep and secret_key(key.lstrip("+~")):
        return f"{key}={MASK}"
    return redact_text(override)


def redact_overrides(overrides: Iterable[str]) -> list[str]:
    return [redact_override(str(o)) for o in overrides]


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"loss.margin": "0.5", ...}; secrets masked, values cut to MLflow's limit."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and not secret_key(key):
            out.update(flatten(value, name + "."))
            continue
        text = MASK if secret_key(key) else str(redact_value(key, value))
        out[name] = text[:MAX_PARAM_LEN]
    return out


def clip_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tag values as strings cut to MLflow's 8,000 characters (a long `overrides` list, an error)."""
    return {str(k): str(v)[:MAX_TAG_LEN] for k, v in tags.items()}


def bad_param_key(keys: Iterable[str]) -> str | None:
    """A one-paragraph reason if a param key would be refused by MLflow, else None."""
    for key in keys:
        if len(key) > MAX_KEY_LEN:
            return (
                f"the config key {key[:60]}... is {len(key)} characters long; MLflow accepts param keys of "
                f"at most {MAX_KEY_LEN} characters. Use a shorter key (nested keys are joined with dots)."
            )
        if not _KEY_CHARS.match(key) or key.startswith("/") or "//" in key or "/./" in key or ".." in key:
            return (
                f"the config key {key!r} cannot be an MLflow param; accepted: letters, digits and "
                "_ - . / : or spaces, no leading '/' and no '..' or '//'."
            )
    return None


_SECRET_ASSIGNMENT = re.compile(
    r"(?P<key>[\w.+~/-]*(?:password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|credential)[\w.-]*)(?P<sep>\\*=|%3[Dd]|\\*:[ \t]*)"
    r"(?P<value>'[^'\n]*'|\"[^\"\n]*\"|(?:\\.|[^,\s\]\\])+)",
    re.IGNORECASE,
)


def scrub_text(text: str) -> str:
    """Secret assignments (`db_password: x`, `+a.api_token=x`) and URI passwords masked in YAML text."""

    def mask(m: re.Match[str]) -> str:  # YAML reads a bare *** as an alias: quote it there
        return f"{m['key']}{m['sep']}{repr(MASK) if m['sep'].lstrip(chr(92)).startswith(':') else MASK}"

    return redact_text(_SECRET_ASSIGNMENT.sub(mask, text))


def scrub_files(paths: Iterable[Any]) -> None:
    """Rewrite files (Hydra's .hydra/*.yaml, multirun.yaml) with secrets masked; missing ones skipped."""
    from pathlib import Path

    for path in paths:
        p = Path(path)
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        clean = scrub_text(text)
        if clean != text:
            p.write_text(clean)
