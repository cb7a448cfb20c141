"""Policy administration: create, update (new version), assign, delete, serialise.

Every change - including (re)assignment, enabling/disabling and deletion - bumps
`Policy.version` and writes an immutable PolicyVersion snapshot, because verdicts
and transitions cite (policy_id, version) and the report must be able to show
exactly which rules a device was judged by.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ipad_mdm.models import Unit
from ipad_mdm.refusal import Refusal
from ipad_mdm.timefmt import iso

from . import clock
from .models import Policy, PolicyUnit, PolicyVersion
from .action_specs import validate_actions
from .labels import vi_path
from .rules import PolicyInputError, validate_rules, vn_int

MAX_HOURS = 24 * 365
_FIELDS = ("name", "description", "enabled", "rules", "actions", "grace_hours", "escalation_hours", "assign")


class PolicyNotFound(LookupError):
    pass


class PolicyConflict(Refusal):
    """The name is taken, or the policy changed since the editor loaded it (409)."""


def _hours(field: str, value: Any, *, nullable: bool) -> int | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_HOURS:
        extra = " or null" if nullable else ""
        raise PolicyInputError(f"{field} must be an integer number of hours between 0 and {MAX_HOURS}{extra}, got {value!r}",
                               f"{vi_path(field)}: cần một số nguyên từ 0 đến {vn_int(MAX_HOURS)}" +
                               (" (để trống nếu không chuyển sang chặn)" if nullable else "") + f", không phải “{value}”.")
    return value


def _assignment(session: Session, value: Any) -> tuple[bool, list[int]]:
    """{"all": bool, "units": ["code", ...]} -> (assign_all, unit ids)."""
    if not isinstance(value, dict):
        raise PolicyInputError('assign must be an object like {"all": false, "units": ["VP-PILOT-1"]}',
                               'Phạm vi áp dụng cần dạng {"all": false, "units": ["VP-PILOT-1"]}.')
    unknown = set(value) - {"all", "units"}
    if unknown:
        raise PolicyInputError(f"assign: unknown key(s) {', '.join(sorted(unknown))}; allowed: all, units",
                               f"Phạm vi áp dụng: không có mục {', '.join(sorted(unknown))} (chỉ có all, units).")
    assign_all = value.get("all", False)
    if not isinstance(assign_all, bool):
        raise PolicyInputError("assign.all must be true or false", "Áp dụng cho toàn cơ quan: phải là có hoặc không.")
    codes = value.get("units", [])
    if not isinstance(codes, list) or not all(isinstance(c, str) and c for c in codes):
        raise PolicyInputError("assign.units must be a list of unit codes", "Các đơn vị áp dụng: cần danh sách mã đơn vị.")
    ids = []
    for code in dict.fromkeys(codes):
        unit = session.scalar(select(Unit).where(Unit.code == code))
        if unit is None:
            raise PolicyInputError(f"assign.units: unknown unit code {code!r}", f"Không có đơn vị mã “{code}”.")
        ids.append(unit.id)
    return assign_all, sorted(ids)


def _validated(session: Session, body: Any, *, creating: bool) -> dict:
    if not isinstance(body, dict):
        raise PolicyInputError("request body must be a JSON object", "Nội dung phải là một đối tượng JSON.")
    unknown = set(body) - set(_FIELDS) - {"version"}
    if unknown:
        raise PolicyInputError(f"unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(_FIELDS)}",
                               f"Không có mục {', '.join(sorted(unknown))}; các mục được dùng: {', '.join(_FIELDS)}.")
    out: dict[str, Any] = {}
    if "name" in body or creating:
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= 128:
            raise PolicyInputError("name is required: a string of 1-128 characters",
                                   "Vui lòng nhập tên chính sách (1–128 ký tự).")
        out["name"] = name.strip()
    if "description" in body:
        if not isinstance(body["description"], str) or len(body["description"]) > 4000:
            raise PolicyInputError("description must be a string of at most 4000 characters",
                                   "Mô tả dài tối đa 4.000 ký tự.")
        out["description"] = body["description"]
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise PolicyInputError("enabled must be true or false", "Trạng thái bật/tắt phải là có hoặc không.")
        out["enabled"] = body["enabled"]
    if "rules" in body or creating:
        if "rules" not in body:
            raise PolicyInputError("rules is required: a non-empty list of rule objects",
                                   "Chính sách cần ít nhất một quy tắc.")
        out["rules"] = validate_rules(body["rules"])
    if "actions" in body:
        out["actions"] = validate_actions(body["actions"])
    if "grace_hours" in body:
        out["grace_hours"] = _hours("grace_hours", body["grace_hours"], nullable=False)
    if "escalation_hours" in body:
        out["escalation_hours"] = _hours("escalation_hours", body["escalation_hours"], nullable=True)
    if "assign" in body:
        out["assign_all"], out["unit_ids"] = _assignment(session, body["assign"])
    return out


def _snapshot(session: Session, policy: Policy, change: str, by: str) -> PolicyVersion:
    row = PolicyVersion(
        policy_id=policy.id, version=policy.version, name=policy.name, description=policy.description,
        enabled=policy.enabled, rules=list(policy.rules), actions=list(policy.actions),
        grace_hours=policy.grace_hours, escalation_hours=policy.escalation_hours, assign_all=policy.assign_all,
        unit_ids=policy.unit_ids, change=change, created_at=clock.now(), created_by=by,
    )
    session.add(row)
    return row


def _set_units(policy: Policy, unit_ids: list[int]) -> None:
    policy.units = [PolicyUnit(unit_id=u) for u in unit_ids]


def _name_taken(session: Session, name: str, except_id: int | None = None) -> bool:
    stmt = select(Policy.id).where(Policy.name == name)
    if except_id is not None:
        stmt = stmt.where(Policy.id != except_id)
    return session.scalar(stmt) is not None


def create_policy(session: Session, body: Any, *, by: str = "") -> Policy:
    data = _validated(session, body, creating=True)
    if _name_taken(session, data["name"]):
        raise PolicyConflict(f"a policy named {data['name']!r} already exists",
                             f"Đã có chính sách tên “{data['name']}”. Vui lòng chọn tên khác.")
    now = clock.now()
    policy = Policy(
        name=data["name"], description=data.get("description", ""), enabled=data.get("enabled", True), version=1,
        rules=data["rules"], actions=data.get("actions", []), grace_hours=data.get("grace_hours", 72),
        escalation_hours=data.get("escalation_hours"), assign_all=data.get("assign_all", False),
        created_at=now, created_by=by, updated_at=now, updated_by=by,
    )
    _set_units(policy, data.get("unit_ids", []))
    session.add(policy)
    session.flush()
    _snapshot(session, policy, "created", by)
    session.flush()
    return policy


def get_policy(session: Session, policy_id: int, *, include_deleted: bool = False) -> Policy:
    policy = session.get(Policy, policy_id)
    if policy is None or (policy.deleted_at is not None and not include_deleted):
        raise PolicyNotFound(f"unknown policy {policy_id}")
    return policy


def _check_version(policy: Policy, body: Any) -> None:
    """Optional optimistic concurrency: {"version": N} must be the current version."""
    if isinstance(body, dict) and "version" in body:
        if body["version"] != policy.version:
            raise PolicyConflict(f"policy {policy.id} is at version {policy.version}, not {body['version']!r}; "
                                 "reload it and apply your change again",
                                 f"Chính sách đã được người khác sửa (nay là phiên bản {policy.version}). Vui lòng tải "
                                 "lại trang và thực hiện lại thay đổi.")


def update_policy(session: Session, policy_id: int, body: Any, *, by: str = "") -> Policy:
    policy = get_policy(session, policy_id)
    data = _validated(session, body, creating=False)
    _check_version(policy, body)
    if not data:
        raise PolicyInputError("nothing to change: give at least one of " + ", ".join(_FIELDS),
                               "Không có nội dung nào thay đổi.")
    if "name" in data and _name_taken(session, data["name"], policy.id):
        raise PolicyConflict(f"a policy named {data['name']!r} already exists",
                             f"Đã có chính sách tên “{data['name']}”. Vui lòng chọn tên khác.")
    for key in ("name", "description", "enabled", "rules", "actions", "grace_hours", "escalation_hours", "assign_all"):
        if key in data:
            setattr(policy, key, data[key])
    if "unit_ids" in data:
        _set_units(policy, data["unit_ids"])
    return _bump(session, policy, "updated", by)


def assign_policy(session: Session, policy_id: int, body: Any, *, by: str = "") -> Policy:
    policy = get_policy(session, policy_id)
    _check_version(policy, body)
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "version"}
    policy.assign_all, unit_ids = _assignment(session, body)
    _set_units(policy, unit_ids)
    return _bump(session, policy, "assigned", by)


def delete_policy(session: Session, policy_id: int, *, by: str = "") -> Policy:
    """Soft delete: history keeps citing its versions; it no longer applies."""
    policy = get_policy(session, policy_id)
    policy.enabled = False
    policy.deleted_at = clock.now()
    return _bump(session, policy, "deleted", by)


def _bump(session: Session, policy: Policy, change: str, by: str) -> Policy:
    session.flush()
    policy.version += 1
    policy.updated_at = clock.now()
    policy.updated_by = by
    session.flush()
    _snapshot(session, policy, change, by)
    session.flush()
    return policy


def list_policies(session: Session, *, include_deleted: bool = False) -> list[Policy]:
    stmt = select(Policy).order_by(Policy.id)
    if not include_deleted:
        stmt = stmt.where(Policy.deleted_at.is_(None))
    return list(session.scalars(stmt))



def _unit_codes(session: Session, ids: list[int]) -> list[str]:
    if not ids:
        return []
    return list(session.scalars(select(Unit.code).where(Unit.id.in_(ids)).order_by(Unit.code)))


def policy_dict(session: Session, policy: Policy, *, versions: bool = False) -> dict:
    out = {
        "id": policy.id, "name": policy.name, "description": policy.description, "enabled": policy.enabled,
        "version": policy.version, "rules": policy.rules, "actions": policy.actions,
        "grace_hours": policy.grace_hours, "escalation_hours": policy.escalation_hours,
        "assign": {"all": policy.assign_all, "units": _unit_codes(session, policy.unit_ids)},
        "created_at": iso(policy.created_at), "created_by": policy.created_by,
        "updated_at": iso(policy.updated_at), "updated_by": policy.updated_by,
        "deleted_at": iso(policy.deleted_at),
    }
    if versions:
        rows = session.scalars(select(PolicyVersion).where(PolicyVersion.policy_id == policy.id)
                               .order_by(PolicyVersion.version))
        out["versions"] = [{
            "version": v.version, "change": v.change, "name": v.name, "description": v.description,
            "enabled": v.enabled, "rules": v.rules, "actions": v.actions, "grace_hours": v.grace_hours,
            "escalation_hours": v.escalation_hours,
            "assign": {"all": v.assign_all, "units": _unit_codes(session, list(v.unit_ids or []))},
            "created_at": iso(v.created_at), "created_by": v.created_by,
        } for v in rows]
    return out
