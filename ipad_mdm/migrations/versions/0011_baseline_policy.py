"""compliance: the baseline policy, assigned to every device (secure by default)

Revision ID: 0011_baseline_policy
Revises: 0004_compliance
Create Date: 2026-12-02

A fresh install used to judge every device compliant (no rule, nothing fails). This ships one
policy assigned to all devices; security officers edit it like any other (it is data).
"""
import datetime as dt
import json

from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0011_baseline_policy'
down_revision = '0004_compliance'
branch_labels = None
depends_on = None

NAME = "Chính sách cơ sở / Baseline"
DESCRIPTION = (
    "Chính sách an toàn thông tin tối thiểu áp dụng cho mọi iPad, do hệ thống cài sẵn; cán bộ phụ trách an toàn "
    "thông tin có thể chỉnh sửa. / The minimum security policy for every iPad, shipped with the server; security "
    "officers may edit it."
)
RULES = [
    {"kind": "passcode_present", "immediate": True},
    {"kind": "passcode_compliant"},
    {"kind": "min_os_version", "version": "18.0"},
    {"kind": "identity_certificate_valid", "not_expiring_within_days": 0},
    {"kind": "last_checkin_within_hours", "hours": 24},
    {"kind": "mdm_profile_present"},
    {"kind": "not_in_lost_mode"},
]
ACTIONS = [{"type": "notify"}, {"type": "block_gateway"}]
GRACE_HOURS = 24


def upgrade() -> None:
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT count(*) FROM compliance_policies WHERE name = :n"), {"n": NAME}).scalar():
        return
    now = dt.datetime.now(dt.timezone.utc)
    policies = sa.table("compliance_policies", sa.column("id", sa.Integer), sa.column("name"), sa.column("description"),
                        sa.column("enabled", sa.Boolean), sa.column("version", sa.Integer), sa.column("rules", sa.JSON),
                        sa.column("actions", sa.JSON), sa.column("grace_hours", sa.Integer),
                        sa.column("escalation_hours", sa.Integer), sa.column("assign_all", sa.Boolean),
                        sa.column("created_at", ipad_mdm.db.UTCDateTime()), sa.column("created_by"),
                        sa.column("updated_at", ipad_mdm.db.UTCDateTime()), sa.column("updated_by"))
    op.bulk_insert(policies, [dict(name=NAME, description=DESCRIPTION, enabled=True, version=1, rules=RULES,
                                   actions=ACTIONS, grace_hours=GRACE_HOURS, escalation_hours=None, assign_all=True,
                                   created_at=now, created_by="system", updated_at=now, updated_by="system")])
    policy_id = bind.execute(sa.text("SELECT id FROM compliance_policies WHERE name = :n"), {"n": NAME}).scalar()
    versions = sa.table("compliance_policy_versions", sa.column("policy_id", sa.Integer), sa.column("version", sa.Integer),
                        sa.column("name"), sa.column("description"), sa.column("enabled", sa.Boolean),
                        sa.column("rules", sa.JSON), sa.column("actions", sa.JSON), sa.column("grace_hours", sa.Integer),
                        sa.column("escalation_hours", sa.Integer), sa.column("assign_all", sa.Boolean),
                        sa.column("unit_ids", sa.JSON), sa.column("change"),
                        sa.column("created_at", ipad_mdm.db.UTCDateTime()), sa.column("created_by"))
    op.bulk_insert(versions, [dict(policy_id=policy_id, version=1, name=NAME, description=DESCRIPTION, enabled=True,
                                   rules=RULES, actions=ACTIONS, grace_hours=GRACE_HOURS, escalation_hours=None,
                                   assign_all=True, unit_ids=[], change="created", created_at=now,
                                   created_by="system")])


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM compliance_policies WHERE name = :n AND created_by = 'system'").bindparams(n=NAME))
