"""Compliance storage: policies (as data, versioned), current verdicts, transition history.

Tables (migration 0004_compliance):
  compliance_policies              the current definition of each policy
  compliance_policy_versions       an immutable snapshot per edit (verdicts cite these)
  compliance_policy_units          which units a policy is assigned to (plus Policy.assign_all)
  compliance_device_verdicts       the current verdict, exactly one row per evaluated device
  compliance_verdict_transitions   every state change with reasons and the actions taken;
                                   the monthly report reads this table, so it is append-only
                                   and carries denormalised copies (unit, policy versions,
                                   reasons) rather than pointers to rows that may change.
  compliance_inventory_digests     (migration 0027) what the rules read of each device's inventory,
                                   with the digest of the inventory it was taken from: a cache
                                   of the scheduled run on PostgreSQL (compliance.bulk).
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ipad_mdm.db import Base, utcnow

# Verdict states, in escalation order (unknown sits outside the escalation ladder).
STATES = ("compliant", "grace", "non_compliant", "blocked", "unknown")


class Policy(Base):
    __tablename__ = "compliance_policies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Bumped on every edit (rules, actions, deadlines, assignment, enable/disable, delete).
    version: Mapped[int] = mapped_column(Integer, default=1)
    rules: Mapped[list] = mapped_column(default=list)
    actions: Mapped[list] = mapped_column(default=list)
    grace_hours: Mapped[int] = mapped_column(Integer, default=72)
    # Second deadline, counted from the moment the device became non_compliant
    # (the end of grace); None = never escalate to `blocked`.
    escalation_hours: Mapped[int | None] = mapped_column(Integer, default=None)
    assign_all: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(128), default="")
    # Soft delete: verdict history keeps pointing at the versions of a deleted policy.
    deleted_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    units: Mapped[list["PolicyUnit"]] = relationship(cascade="all, delete-orphan", lazy="selectin")
    versions: Mapped[list["PolicyVersion"]] = relationship(
        back_populates="policy", order_by="PolicyVersion.version", cascade="all, delete-orphan"
    )

    @property
    def unit_ids(self) -> list[int]:
        return sorted(u.unit_id for u in self.units)


class PolicyUnit(Base):
    __tablename__ = "compliance_policy_units"

    policy_id: Mapped[int] = mapped_column(ForeignKey("compliance_policies.id", ondelete="CASCADE"), primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), primary_key=True, index=True)


class PolicyVersion(Base):
    """Immutable snapshot of a policy as it was between two edits."""

    __tablename__ = "compliance_policy_versions"
    __table_args__ = (UniqueConstraint("policy_id", "version", name="uq_compliance_policy_versions_policy_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("compliance_policies.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean)
    rules: Mapped[list] = mapped_column()
    actions: Mapped[list] = mapped_column()
    grace_hours: Mapped[int] = mapped_column(Integer)
    escalation_hours: Mapped[int | None] = mapped_column(Integer, default=None)
    assign_all: Mapped[bool] = mapped_column(Boolean)
    unit_ids: Mapped[list] = mapped_column(default=list)
    # What changed, for the audit trail: created / updated / assigned / deleted.
    change: Mapped[str] = mapped_column(String(32), default="updated")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")

    policy: Mapped[Policy] = relationship(back_populates="versions")


class DeviceVerdict(Base):
    """The current compliance verdict of one device (the gateway and VPN read this)."""

    __tablename__ = "compliance_device_verdicts"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    # When the device entered `state`.
    since: Mapped[dt.datetime] = mapped_column()
    evaluated_at: Mapped[dt.datetime] = mapped_column()
    # The current non-compliance episode: started at the first failing evaluation,
    # cleared only by a compliant verdict (withholding inventory does not reset it).
    failing_since: Mapped[dt.datetime | None] = mapped_column(default=None)
    grace_deadline: Mapped[dt.datetime | None] = mapped_column(default=None)
    non_compliant_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    escalation_deadline: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Inventory captured before this instant belongs to an earlier enrollment and is ignored.
    inventory_since: Mapped[dt.datetime | None] = mapped_column(default=None)
    failing_rules: Mapped[list] = mapped_column(default=list)
    reasons_vi: Mapped[list] = mapped_column(default=list)
    reasons_en: Mapped[list] = mapped_column(default=list)
    # [{"policy_id", "version", "name"}] of every policy that applied.
    policy_versions: Mapped[list] = mapped_column(default=list)
    # Effective action names (union of the applicable policies), for VPN/gateway decisions.
    actions: Mapped[list] = mapped_column(default=list)


class VerdictTransition(Base):
    """One state change of a device's verdict (append-only; the monthly report reads it)."""

    __tablename__ = "compliance_verdict_transitions"
    __table_args__ = (
        Index("ix_compliance_transitions_device_at", "device_id", "at"),
        Index("ix_compliance_transitions_to_state_at", "to_state", "at"),
        Index("ix_compliance_transitions_unit_at", "unit_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # No cascade: the audit history must outlive an accidental device delete.
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    # Copies taken at transition time so reports survive re-assignment / renames.
    udid: Mapped[str] = mapped_column(String(64))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), default=None)
    from_state: Mapped[str | None] = mapped_column(String(16), default=None)
    to_state: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # What caused the evaluation: inventory:<kind>, schedule, enrolled, checked_out, retired, api, task.
    trigger: Mapped[str] = mapped_column(String(64), default="")
    grace_deadline: Mapped[dt.datetime | None] = mapped_column(default=None)
    escalation_deadline: Mapped[dt.datetime | None] = mapped_column(default=None)
    policy_versions: Mapped[list] = mapped_column(default=list)
    failing_rules: Mapped[list] = mapped_column(default=list)
    reasons_vi: Mapped[list] = mapped_column(default=list)
    reasons_en: Mapped[list] = mapped_column(default=list)
    # [{"action": "notify"|"cut_vpn"|"block_gateway"|"lock_device"|"lost_mode"|"verdict.changed",
    #   "status": ..., ...}] — the true outcome of each; failed ones are retried (compliance.jobs)
    actions: Mapped[list] = mapped_column(default=list)
    # Some action failed and is not yet done or superseded: compliance.retry_actions takes it up.
    actions_pending: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"), index=True)


class InventoryDigest(Base):
    """What the rules read of one device's inventory (facts.reduce_inventory: a few hundred bytes of
    its kilobytes), and the digest of the inventory it was reduced from (the reduction's tag and
    devices.inventory_version, which the database renews on every write of the inventory). The
    scheduled run uses it only while the device row's digest is the same: correct whatever wrote the
    inventory and however. Never read as a source of truth; deleting every row costs one slower run."""

    __tablename__ = "compliance_inventory_digests"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    reduced: Mapped[dict] = mapped_column()
    written_at: Mapped[dt.datetime] = mapped_column()
