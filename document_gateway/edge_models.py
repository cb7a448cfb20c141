"""Storage of the reverse-proxy decision (migration 0022_gateway_edge).

Tables
  gateway_edge_rules      classification of the protected application's URIs, first match by position
  gateway_edge_ruleset    one row (id 1): a version bumped with every rule change (each process reloads
                          its compiled rules when the version it reads with the decision moves) and the
                          classification of a URI no rule matches
  gateway_edge_labels     classifications the upstream itself returned for a URI (rules of kind
                          "from_upstream"), shared by every process until they expire
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ipad_mdm.db import Base, utcnow

# What a rule may assign: a classification, or "ask the upstream" (its classification header).
FROM_UPSTREAM = "from_upstream"
PATTERN_KINDS = ("glob", "regex", "prefix")


class EdgeRule(Base):
    __tablename__ = "gateway_edge_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    position: Mapped[int] = mapped_column(Integer, index=True)
    name: Mapped[str] = mapped_column(String(255))
    # "" = any host; else the Host the proxy saw (compared case-insensitively, no port).
    host: Mapped[str] = mapped_column(String(255), default="")
    pattern_kind: Mapped[str] = mapped_column(String(8), default="glob")
    pattern: Mapped[str] = mapped_column(String(1024))
    # "" = every method; else a comma-separated list (GET,HEAD).
    methods: Mapped[str] = mapped_column(String(64), default="")
    classification: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class EdgeRuleSet(Base):
    __tablename__ = "gateway_edge_ruleset"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    default_classification: Mapped[str] = mapped_column(String(16), default="internal")
    # Where "from_upstream" rules ask (HEAD <probe_base><uri>) and which response header they read.
    probe_base_url: Mapped[str] = mapped_column(String(1024), default="")
    probe_header: Mapped[str] = mapped_column(String(64), default="X-Document-Classification")
    probe_ttl_seconds: Mapped[int] = mapped_column(Integer, default=300)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class EdgeLabel(Base):
    __tablename__ = "gateway_edge_labels"

    # SHA-256 of "host uri" (the URI can be 2 KiB: the key stays short and indexed).
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    uri: Mapped[str] = mapped_column(Text)
    classification: Mapped[str] = mapped_column(String(16))
    fetched_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
