"""Classification at the edge: which classification a request to the office's document system has.

Rules (gateway_edge_rules) are tried by position; the first that matches the request's host,
method and path gives the classification. A rule may instead say "from_upstream": the document
system itself is asked (HEAD <probe base><uri>) and its classification header read; the answer
is kept, shared by every process, for the rule set's TTL. No rule matches → the rule set's
default classification.

Matching is on a canonical path, so that the spelling of a URI cannot slip past a rule: the path
is percent-decoded until stable (%2F, %252F), backslashes are slashes, `;params` of a segment are
dropped, dot segments and repeated slashes resolved, and the comparison ignores case. A rule
written for /mat/** therefore also catches /MAT/x, /public/../mat/x, /mat%2fx and /mat;v=1/x —
matching more than the upstream would is the safe direction.

Compiled rules are cached per process and reloaded when the rule set's version (read with every
decision, in the decision's own query) moves: a new secret rule applies on the next request
everywhere.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import posixpath
import re
import threading
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

import httpx
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow

from .edge_models import FROM_UPSTREAM, PATTERN_KINDS, EdgeLabel, EdgeRule, EdgeRuleSet
from .models import CLASSIFICATIONS

log = logging.getLogger("document_gateway.edge")

MAX_PATTERN = 1024
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "MKCOL", "COPY", "MOVE", "LOCK",
           "UNLOCK", "PROPPATCH", "REPORT", "SEARCH")
# Words a document system may put in its classification header (Vietnamese levels of state secrets
# are all "secret" here: none of them may reach a mobile device).
_LABELS = {"public": "public", "internal": "internal", "confidential": "confidential", "secret": "secret",
           "cong-khai": "public", "noi-bo": "internal", "han-che": "confidential", "mat": "secret",
           "toi-mat": "secret", "tuyet-mat": "secret"}


class RuleError(ValueError):
    """A rule that cannot be stored; `code` names the field (the API says which)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class ClassificationUnavailable(RuntimeError):
    """A from_upstream rule matched and the upstream could not be asked: the request is refused."""


# ------------------------------------------------------------------ canonical paths (pure)
_PARAMS = re.compile(r";[^/]*")


def canonical_path(uri: str) -> str:
    path = uri.split("#", 1)[0].split("?", 1)[0]
    for _ in range(4):
        decoded = unquote(path, errors="strict") if "%" in path else path
        if decoded == path:
            break
        path = decoded
    path = _PARAMS.sub("", path.replace("\\", "/"))
    trailing = path.endswith("/")
    path = posixpath.normpath("/" + path.lstrip("/"))
    path = re.sub("/{2,}", "/", path)
    if trailing and path != "/":
        path += "/"
    return path.lower()


def compile_pattern(kind: str, pattern: str) -> re.Pattern:
    if kind == "prefix":
        return re.compile(re.escape(canonical_path(pattern)))  # used with .match: a prefix
    if kind == "glob":
        out, i, p = [], 0, canonical_path(pattern) if not pattern.endswith("/**") else canonical_path(pattern[:-3]) + "/**"
        while i < len(p):
            if p.startswith("**", i):
                out.append(".*")
                i += 2
            elif p[i] == "*":
                out.append("[^/]*")
                i += 1
            elif p[i] == "?":
                out.append("[^/]")
                i += 1
            else:
                out.append(re.escape(p[i]))
                i += 1
        # "/mat/**" also covers "/mat" itself.
        return re.compile("".join(out).replace("/.*", "(?:/.*)?") + r"\Z")
    if kind == "regex":
        return re.compile(pattern, re.IGNORECASE)
    raise RuleError("pattern_kind", f"pattern kind must be one of {', '.join(PATTERN_KINDS)}")


@dataclass(frozen=True)
class CompiledRule:
    id: int
    name: str
    host: str
    methods: frozenset
    kind: str
    regex: re.Pattern
    classification: str

    def matches(self, host: str, method: str, path: str) -> bool:
        if self.host and self.host != host:
            return False
        if self.methods and method not in self.methods:
            return False
        if self.kind == "regex":
            return self.regex.search(path) is not None
        return self.regex.match(path) is not None


@dataclass(frozen=True)
class RuleSet:
    version: int
    rules: tuple
    default: str
    probe_base_url: str
    probe_header: str
    probe_ttl: int

    def match(self, host: str, method: str, path: str) -> CompiledRule | None:
        for rule in self.rules:
            if rule.matches(host, method, path):
                return rule
        return None


def canonical_host(host: str) -> str:
    host = (host or "").strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


# ------------------------------------------------------------------ the per-process cache
_cache: dict = {}
_lock = threading.Lock()


def ruleset(session: Session, version: int | None) -> RuleSet:
    """The compiled rules for `version` (read with the decision); reloaded when it moved."""
    current = _cache.get("rules")
    if current is not None and version is not None and current.version == version:
        return current
    with _lock:
        loaded = _load(session)
        _cache["rules"] = loaded
        return loaded


def _load(session: Session) -> RuleSet:
    head = ensure_ruleset(session)
    rows = session.scalars(select(EdgeRule).order_by(EdgeRule.position, EdgeRule.id)).all()
    rules = []
    for r in rows:
        try:
            regex = compile_pattern(r.pattern_kind, r.pattern)
        except (re.error, RuleError):
            # Stored rules were checked on the way in; a rule that no longer compiles (a newer
            # Python's regex syntax) must not open anything: it matches every path.
            log.error("edge rule %s does not compile; it now matches every request", r.id)
            regex = re.compile("")
        methods = frozenset(m for m in (r.methods or "").upper().split(",") if m)
        rules.append(CompiledRule(r.id, r.name, canonical_host(r.host), methods, r.pattern_kind, regex,
                                  r.classification))
    return RuleSet(head.version, tuple(rules), head.default_classification, head.probe_base_url.rstrip("/"),
                   head.probe_header, head.probe_ttl_seconds)


def ensure_ruleset(session: Session) -> EdgeRuleSet:
    head = session.get(EdgeRuleSet, 1)
    if head is None:
        try:
            with session.begin_nested():
                session.add(EdgeRuleSet(id=1, version=1))
        except IntegrityError:
            pass
        head = session.get(EdgeRuleSet, 1)
    return head


def bump(session: Session) -> None:
    ensure_ruleset(session)
    session.execute(update(EdgeRuleSet).where(EdgeRuleSet.id == 1)
                    .values(version=EdgeRuleSet.version + 1, updated_at=utcnow()))


# ------------------------------------------------------------------ classify one request
def classify(session: Session, rules: RuleSet, host: str, method: str, uri: str) -> tuple[str, CompiledRule | None]:
    path = canonical_path(uri)
    rule = rules.match(canonical_host(host), method, path)
    if rule is None:
        return rules.default, None
    if rule.classification != FROM_UPSTREAM:
        return rule.classification, rule
    return upstream_label(session, rules, canonical_host(host), uri), rule


def _plain(label: str) -> str:
    """"Tối mật", "toi-mat", "TOI MAT" → "toi-mat" (Vietnamese with or without its marks)."""
    stripped = "".join(c for c in unicodedata.normalize("NFD", label.strip().lower()) if not unicodedata.combining(c))
    return "-".join(stripped.replace("đ", "d").split())


def _label_key(host: str, uri: str) -> str:
    return hashlib.sha256(f"{host} {uri}".encode("utf-8", "surrogateescape")).hexdigest()


def upstream_label(session: Session, rules: RuleSet, host: str, uri: str) -> str:
    key, now = _label_key(host, uri), utcnow()
    kept = session.execute(select(EdgeLabel.classification)
                           .where(EdgeLabel.key == key, EdgeLabel.expires_at > now)).scalar()
    if kept is not None:
        return kept
    if not rules.probe_base_url:
        raise ClassificationUnavailable("no upstream address is configured for from_upstream rules")
    try:
        r = httpx.head(rules.probe_base_url + uri, timeout=3.0, follow_redirects=False,
                       headers={"X-MDM-Classification-Probe": "1"})
    except httpx.HTTPError as exc:
        raise ClassificationUnavailable(f"upstream unreachable: {type(exc).__name__}") from None
    if r.status_code >= 500:
        raise ClassificationUnavailable(f"upstream answered {r.status_code}")
    raw = _plain(unquote(r.headers.get(rules.probe_header) or ""))
    value = _LABELS.get(raw) or (rules.default if not raw else "secret")  # an unknown label is treated as secret
    session.execute(delete(EdgeLabel).where(EdgeLabel.key == key))
    try:
        with session.begin_nested():
            session.execute(insert(EdgeLabel).values(key=key, host=host, uri=uri[:2048], classification=value,
                                                     fetched_at=now,
                                                     expires_at=now + dt.timedelta(seconds=max(rules.probe_ttl, 0))))
    except IntegrityError:
        pass  # another process stored it at the same moment
    return value


# ------------------------------------------------------------------ rule administration
def validate(data: dict) -> dict:
    """A rule from the API or the CLI: checked, canonical; raises RuleError."""
    name = str(data.get("name") or "").strip()
    if not name or len(name) > 255:
        raise RuleError("name", "name is required (at most 255 characters)")
    kind = str(data.get("pattern_kind") or "glob")
    pattern = data.get("pattern")
    if not isinstance(pattern, str) or not pattern.strip() or len(pattern) > MAX_PATTERN:
        raise RuleError("pattern", f"pattern is required (at most {MAX_PATTERN} characters)")
    if kind != "regex" and not pattern.startswith("/"):
        raise RuleError("pattern", "a glob or prefix pattern starts with /")
    try:
        compile_pattern(kind, pattern)
    except re.error as exc:
        raise RuleError("pattern", f"not a regular expression: {exc}") from None
    classification = str(data.get("classification") or "")
    if classification not in CLASSIFICATIONS + (FROM_UPSTREAM,):
        raise RuleError("classification", f"classification must be one of {', '.join(CLASSIFICATIONS + (FROM_UPSTREAM,))}")
    methods = data.get("methods") or []
    if isinstance(methods, str):
        methods = [m for m in methods.split(",") if m.strip()]
    methods = sorted({str(m).strip().upper() for m in methods})
    if any(m not in METHODS for m in methods):
        raise RuleError("methods", f"methods must be among {', '.join(METHODS)}")
    host = str(data.get("host") or "").strip()
    if len(host) > 255 or any(c in host for c in "/ \t"):
        raise RuleError("host", "host is a host name, without scheme or path")
    position = data.get("position")
    if position is not None and (not isinstance(position, int) or isinstance(position, bool) or not 0 <= position < 10**6):
        raise RuleError("position", "position is an integer from 0")
    return {"name": name, "pattern_kind": kind, "pattern": pattern, "classification": classification,
            "methods": ",".join(methods), "host": canonical_host(host), "position": position}


def add_rule(session: Session, data: dict, *, actor: str) -> EdgeRule:
    clean = validate(data)
    if clean["position"] is None:
        last = session.scalar(select(EdgeRule.position).order_by(EdgeRule.position.desc()).limit(1))
        clean["position"] = (last or 0) + 10
    rule = EdgeRule(**clean, created_by=actor[:128])
    session.add(rule)
    session.flush()
    bump(session)
    return rule


def delete_rule(session: Session, rule_id: int) -> bool:
    found = session.execute(delete(EdgeRule).where(EdgeRule.id == rule_id)).rowcount
    if found:
        bump(session)
        session.execute(delete(EdgeLabel))  # labels were fetched under the old rules
    return bool(found)


def configure(session: Session, data: dict) -> EdgeRuleSet:
    head = ensure_ruleset(session)
    if "default_classification" in data:
        value = data["default_classification"]
        if value not in CLASSIFICATIONS:
            raise RuleError("default_classification", f"must be one of {', '.join(CLASSIFICATIONS)}")
        head.default_classification = value
    if "probe_base_url" in data:
        url = str(data["probe_base_url"] or "").strip()
        if url and not re.match(r"https?://[^/\s]+(/\S*)?\Z", url):
            raise RuleError("probe_base_url", "probe_base_url is an http(s) URL")
        head.probe_base_url = url[:1024]
    if "probe_header" in data:
        header = str(data["probe_header"] or "")
        if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", header):
            raise RuleError("probe_header", "probe_header is an HTTP header name")
        head.probe_header = header
    if "probe_ttl_seconds" in data:
        ttl = data["probe_ttl_seconds"]
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl <= 86400:
            raise RuleError("probe_ttl_seconds", "probe_ttl_seconds is an integer from 0 to 86400")
        head.probe_ttl_seconds = ttl
    session.flush()
    bump(session)
    session.execute(delete(EdgeLabel))
    return head


def rule_dict(rule: EdgeRule) -> dict:
    return {"id": rule.id, "position": rule.position, "name": rule.name, "host": rule.host,
            "pattern_kind": rule.pattern_kind, "pattern": rule.pattern,
            "methods": [m for m in rule.methods.split(",") if m], "classification": rule.classification,
            "created_by": rule.created_by, "created_at": rule.created_at.isoformat()}


def ruleset_dict(head: EdgeRuleSet) -> dict:
    return {"version": head.version, "default_classification": head.default_classification,
            "probe_base_url": head.probe_base_url, "probe_header": head.probe_header,
            "probe_ttl_seconds": head.probe_ttl_seconds}
