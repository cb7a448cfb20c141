"""A compliance policy as a form (#18, item 3): every rule kind with its parameters, the actions with
their options, the remediation period, the escalation to blocking and the assignment; the JSON stays
as the advanced view. Built from compliance's own rule and action specifications, so a new rule kind
appears in the form without a change here; the validation (and its Vietnamese messages) is compliance's."""
from __future__ import annotations

import re

from compliance import RULE_KINDS, labels

ACTION_TYPES = tuple(labels.ACTION_LABELS)


def _param(name: str) -> tuple[str, str, str]:
    """(Vietnamese, English, input kind) of a rule or action parameter."""
    return labels.PARAM_LABELS.get(name, (name, name, "text"))


def representable(policy: dict) -> bool:
    """The form holds one rule per kind; a policy written through the API with a kind twice is edited as JSON."""
    rules, actions = policy.get("rules"), policy.get("actions") or []
    if not isinstance(rules, list) or not isinstance(actions, list) or not all(isinstance(r, dict) for r in rules):
        return False
    kinds = [r.get("kind") for r in rules]
    return len(kinds) == len(set(kinds)) and all(k in RULE_KINDS for k in kinds) and \
        all(isinstance(a, str) or (isinstance(a, dict) and a.get("type") in ACTION_TYPES) for a in actions)


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return str(value)


def fields(policy: dict, lang: str) -> dict:
    """What the template needs: rules and actions in order, each with its words and current values."""
    i = 0 if lang == "vi" else 1
    rules_by_kind = {r["kind"]: r for r in policy.get("rules", []) if isinstance(r, dict) and "kind" in r}
    rules = []
    for kind in RULE_KINDS:
        current = rules_by_kind.get(kind)
        label = labels.RULE_LABELS.get(kind, (kind, kind, "", ""))
        immediate = "" if current is None or "immediate" not in current else ("1" if current["immediate"] else "0")
        rules.append({
            "kind": kind, "label": label[i], "hint": label[2 + i], "on": current is not None, "immediate": immediate,
            "immediate_default": labels.rule_defaults(kind)["immediate"],
            "params": [{"name": p, "label": _param(p)[i], "input": _param(p)[2],
                        "value": _text((current or {}).get(p, labels.rule_defaults(kind).get(p)))}
                       for p in labels.rule_parameters(kind)],
        })
    actions_by_type = {(a if isinstance(a, str) else a.get("type")): ({"type": a} if isinstance(a, str) else a)
                       for a in policy.get("actions", [])}
    actions = []
    for kind in ACTION_TYPES:
        current = actions_by_type.get(kind)
        actions.append({"type": kind, "label": labels.ACTION_LABELS[kind][i], "on": current is not None,
                        "options": [{"name": o, "label": _param(o)[i], "input": _param(o)[2],
                                     "value": _text((current or {}).get(o))} for o in labels.action_options(kind)]})
    return {"rules": rules, "actions": actions}


_SPLIT = re.compile(r"[\s,;]+")


def _value(raw: str, kind: str):
    """Form text -> the JSON value compliance validates. Anything unreadable is passed on as typed, so
    compliance's own message (in the reader's language) names the field and what it needs."""
    raw = (raw or "").strip()
    if kind == "int":
        return int(raw) if re.fullmatch(r"\d{1,9}", raw) else raw
    if kind in ("list", "emails"):
        return [v for v in _SPLIT.split(raw) if v]
    return raw


def _filled(form, prefix: str, names) -> dict:
    """The parameters typed in; one left empty is left out (a required one: compliance says "vui lòng nhập …")."""
    out = {}
    for name in names:
        value = _value(form.get(f"{prefix}.{name}", ""), _param(name)[2])
        if value not in ("", []):
            out[name] = value
    return out


def body(form) -> dict:
    """The policy body from the posted form (the same shape the API and the JSON view take)."""
    rules = []
    for kind in RULE_KINDS:
        if form.get(f"rule.{kind}") != "on":
            continue
        rule = {"kind": kind, **_filled(form, f"rule.{kind}", labels.rule_parameters(kind))}
        immediate = form.get(f"rule.{kind}.immediate", "")
        if immediate in ("0", "1"):
            rule["immediate"] = immediate == "1"
        rules.append(rule)
    actions = []
    for kind in ACTION_TYPES:
        if form.get(f"action.{kind}") != "on":
            continue
        actions.append({"type": kind, **_filled(form, f"action.{kind}", labels.action_options(kind))})
    escalation = form.get("escalation_hours", "").strip()
    return {
        "name": form.get("name", ""), "description": form.get("description", ""),
        "enabled": form.get("enabled") == "on", "rules": rules, "actions": actions,
        "grace_hours": _value(form.get("grace_hours", ""), "int"),
        "escalation_hours": _value(escalation, "int") if escalation else None,
        "assign": {"all": form.get("assign_all") == "1", "units": form.getlist("assign_units")},
    }
