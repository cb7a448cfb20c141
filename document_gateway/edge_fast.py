"""The edge decision's hot path: a compliant iPad opening a document, on PostgreSQL.

The decision is the same function as everywhere (gate.decide → access.device_access, then the
edge classification); what this module saves is the machinery around it, which cost four
times the decision itself:
  * the proxy's certificate header is parsed once per process (a bounded LRU keyed by the
    header's SHA-256; the facts it caches — the certificate and its fingerprint — never change;
    revocation and everything else that can change is read on every request);
  * one transaction of three prepared statements on a plain psycopg connection of
    ipad_mdm.hot_connections (no SQLAlchemy pool or result machinery): the lookup together with the taking of the audit
    chain's head, then the audit row together with the new head, then COMMIT;
  * gunicorn's access line built from the atoms its format names, and none at all for an allowed
    answer: its audit row is the record (ipad_mdm.gunicorn_logging).
Only an allowed answer is produced here. Anything else — a refusal (it needs its reason page),
a device without a precomputed access row, rules changed since this process loaded them, a
rule that asks the upstream, an audit chain that cannot be appended, a database error — returns
None and the full path (edge_views, through SQLAlchemy) decides and answers from scratch.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections import OrderedDict, namedtuple

from sqlalchemy.dialects import postgresql

from ipad_mdm.gunicorn_logging import AUDITED

from . import audit_hot, edge, gate, policy
from .edge_models import FROM_UPSTREAM
from .edge_rules import _cache as _rules_cache
from .edge_rules import canonical_host, canonical_path

log = logging.getLogger("document_gateway.edge")

CACHE_SIZE = 65536

_Row = namedtuple("_Row", list(edge._LOOKUP.selected_columns.keys()))
_LOOKUP_SQL = str(edge._LOOKUP.compile(dialect=postgresql.psycopg.dialect()))
_LOOKUP_PARAMS = {"id_1": 1}

# The lookup and the taking of the chain head in one statement: the head's row stays locked until
# COMMIT (or ROLLBACK, which gives the number back). Lookup columns are NULL for an unknown certificate.
_LOOKUP_LOCKED_SQL = (audit_hot.TAKE_HEAD_CTE +
                      f"SELECT found.*, head.last_seq, head.last_hash FROM head LEFT JOIN ({_LOOKUP_SQL}) AS found ON true")


class _ParsedCache:
    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self._entries: OrderedDict[bytes, gate.Presented] = OrderedDict()
        self._lock = threading.Lock()

    def presented(self, request, settings) -> gate.Presented:
        value = request.headers.get(settings.client_cert_header or "") or ""
        key = hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest() if value else None
        if key is not None:
            with self._lock:
                hit = self._entries.get(key)
                if hit is not None:
                    self._entries.move_to_end(key)
                    return hit
        found = gate.presented(request, settings)
        if key is not None and found.error is None:
            with self._lock:
                self._entries[key] = found
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return found


PARSED = _ParsedCache()


def allow(inst, presented: gate.Presented, original: edge.Original, client_ip: str | None) -> edge.EdgeAnswer | None:
    """An allowed, audited answer, or None for the full path.

    One transaction (audit_hot): the lookup and the taking of the audit chain's head are one
    statement (the head's row lock serialises appends, as audit.append does), then the row and the
    new head in one statement, then COMMIT. A request this path does not allow rolls back — the
    sequence number it took is given back — and the full path answers it."""
    if not inst.database.is_postgres or presented.error is not None or original is None:
        return None
    taken = audit_hot.take_head(inst.database, _LOOKUP_LOCKED_SQL, {**_LOOKUP_PARAMS, "fp": presented.fingerprint})
    if taken is None:
        return None
    try:
        answer = _decide(inst, presented, original, taken.row)
    except (UnicodeDecodeError, ValueError) as exc:
        log.info("edge fast path declined: %s", type(exc).__name__)  # the full path answers it (403)
        answer = None
    except BaseException:
        taken.abandon()
        raise
    if answer is None:
        taken.abandon()
        return None
    answer.audit_id = taken.append(inst.audit_key, edge.audit_fields(answer, presented, client_ip))
    return answer if answer.audit_id is not None else None


def _decide(inst, presented: gate.Presented, original: edge.Original, found) -> edge.EdgeAnswer | None:
    if found is None or found[0] is None:
        return None  # no chain head, or a certificate that is no identity: the full path says why
    row = _Row(*found[:-2])
    if row.access_device_id is None:
        return None
    decision = gate.decide(None, inst.ca, presented, lookup=lambda _s, _fp: row)
    if not decision.allowed or decision.code != "allowed":
        return None  # refusals and grace (its warning is worded by the full path)
    rules = _rules_cache.get("rules")
    if rules is None or rules.version != row.rules_version:
        return None
    rule = rules.match(canonical_host(original.host), original.method, canonical_path(original.uri))
    classification = rules.default if rule is None else rule.classification
    if classification == FROM_UPSTREAM or not policy.classification_allowed(decision.leader_role, classification):
        return None
    return edge.EdgeAnswer(200, decision.code, decision, original, classification, row.unit_code)


# ------------------------------------------------------------------ in front of Flask
@functools.lru_cache(maxsize=64)
def _environ_key(name: str) -> str:
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


class _Headers:
    """Request headers by name, read from the environ (all the decision asks of them is .get; werkzeug's
    EnvironHeaders worked each name out again on each of a request's seven reads)."""

    __slots__ = ("environ",)

    def __init__(self, environ):
        self.environ = environ

    def get(self, name: str, default=None):
        return self.environ.get(_environ_key(name), default)


class _Request:
    """What gate.presented / gate.client_ip / edge.original_request read, straight from the environ."""

    __slots__ = ("environ", "headers", "method", "remote_addr")

    def __init__(self, environ):
        self.environ = environ
        self.headers = _Headers(environ)
        self.method = environ.get("REQUEST_METHOD", "GET")
        self.remote_addr = environ.get("REMOTE_ADDR")


class EdgeWSGI:
    """Answers /edge/decide for a compliant iPad without entering Flask (its request context,
    session and routing were a third of what remained). Everything else, and every request it
    cannot allow outright, goes to the app, where edge_views decides and answers in full."""

    PREFIX = "/edge/decide"

    def __init__(self, app, inst):
        self.app, self.inst = app, inst

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == self.PREFIX or path.startswith(self.PREFIX + "/"):
            answer = self._allow(environ, path)
            if answer is not None:
                headers = list(edge.response_headers(answer, "vi", None).items())
                # Without a length the server would close the proxy's kept-alive TLS connection.
                headers.append(("Content-Length", "0"))
                environ[AUDITED] = True  # the audit row is its record: gunicorn writes no access line
                start_response("200 OK", headers)
                return [b""]
        return self.app(environ, start_response)

    def _allow(self, environ, path):
        settings = self.inst.settings
        if not self.inst.database.is_postgres or not settings.client_cert_header:
            return None
        request = _Request(environ)
        if edge.proxy_checks(request.headers, settings) is not None:
            return None
        suffix = path[len(self.PREFIX) + 1:] if path.startswith(self.PREFIX + "/") else None
        try:
            original = edge.original_request(request.headers, request.method, suffix)
        except (edge.Malformed, UnicodeError):
            return None
        presented = PARSED.presented(request, settings)
        return allow(self.inst, presented, original, gate.client_ip(request, presented))
