"""Who may see which document on an iPad: the classification matrix and unit scope.

Classification (mức độ mật) × leader role. Documents with secret content stay on paper
(the office's rule): `secret` is in no role's set, so a secret document is never listed and
never served to a mobile device, whatever the device's state or the leader's rank.

    role              public  internal  confidential  secret
    minister            ✓        ✓           ✓           ✗
    vice_minister       ✓        ✓           ✓           ✗
    director            ✓        ✓           ✓           ✗
    deputy_director     ✓        ✓           ✗           ✗

Unit scope: the office's leadership (minister, vice ministers) oversee every unit and see the
documents of all units; a director or deputy director sees the documents owned by their unit,
shared with their unit (gateway_document_units) or marked all_units. A document may further
restrict the roles that see it (visible_roles; empty = no further restriction).
"""
from __future__ import annotations

from .models import CLASSIFICATIONS, LEADER_ROLES

NEVER_ON_MOBILE = frozenset({"secret"})

ROLE_CLEARANCE: dict[str, frozenset[str]] = {
    "minister": frozenset({"public", "internal", "confidential"}),
    "vice_minister": frozenset({"public", "internal", "confidential"}),
    "director": frozenset({"public", "internal", "confidential"}),
    "deputy_director": frozenset({"public", "internal"}),
}

OFFICE_WIDE_ROLES = frozenset({"minister", "vice_minister"})

assert set(ROLE_CLEARANCE) == set(LEADER_ROLES)
assert all(not (c & NEVER_ON_MOBILE) for c in ROLE_CLEARANCE.values())
assert NEVER_ON_MOBILE <= set(CLASSIFICATIONS)


def classification_allowed(role: str, classification: str) -> bool:
    return classification not in NEVER_ON_MOBILE and classification in ROLE_CLEARANCE.get(role, frozenset())


def in_scope(leader_role: str, leader_unit_id: int, doc) -> bool:
    """Unit and role scope only (classification is checked separately, so the audit can say which)."""
    if doc.visible_roles and leader_role not in doc.visible_roles:
        return False
    if leader_role in OFFICE_WIDE_ROLES or doc.all_units:
        return True
    return doc.unit_id == leader_unit_id or leader_unit_id in doc.visible_unit_ids


def document_refusal(leader_role: str, leader_unit_id: int, doc) -> str | None:
    """Why a leader allowed in by the gate may not read this document (the audit's reason code),
    or None: the one owner of the per-document decision (views and docs_fast both ask it)."""
    if doc is None:
        return "document_unknown"
    if doc.classification in NEVER_ON_MOBILE:
        return "classification_secret"
    if not classification_allowed(leader_role, doc.classification):
        return "classification_not_allowed"
    if doc.withdrawn_at is not None or not in_scope(leader_role, leader_unit_id, doc):
        return "document_not_visible"
    return None


def visible(leader_role: str, leader_unit_id: int, doc) -> bool:
    return document_refusal(leader_role, leader_unit_id, doc) is None
