"""Webhook administration (/api/v1). Office-wide tokens only: events name iPads of every unit.

  GET    /api/v1/webhooks                        security.read    subscribers, delivery counts
  POST   /api/v1/webhooks                        security.write   {name, url, secret, events}
  PATCH  /api/v1/webhooks/<id>                   security.write   {url, events, active, secret}
  DELETE /api/v1/webhooks/<id>                   security.write
  GET    /api/v1/webhooks/<id>/deliveries        security.read    the delivery log (?status=, paging)
  POST   /api/v1/webhooks/<id>/retry             security.write   {"deliveries": [ids]} or all failed

The secret is given by the caller (it is generated where the receiver keeps it) and never
returned, logged or shown again.
"""
from __future__ import annotations

from flask import Blueprint, g, jsonify, request
from sqlalchemy import func, select

from ipad_mdm.auth import require
from ipad_mdm.web import error, instance, json_object, office_wide, paging, unit_of_work

from . import service
from .models import DELIVERY_STATES, WebhookDelivery, WebhookSubscriber

bp = Blueprint("webhooks_api", __name__, url_prefix="/api/v1/webhooks")


def _fail(exc: service.WebhookError):
    return error(exc.status, "invalid_webhook" if exc.status == 400 else "conflict", field=exc.field, detail=str(exc))


def _counts(s, ids) -> dict:
    counts = {i: {k: 0 for k in DELIVERY_STATES} for i in ids}
    for sid, status, n in s.execute(select(WebhookDelivery.subscriber_id, WebhookDelivery.status, func.count())
                                    .where(WebhookDelivery.subscriber_id.in_(ids))
                                    .group_by(WebhookDelivery.subscriber_id, WebhookDelivery.status)):
        counts[sid][status] = n
    return counts


@bp.get("")
@require("security.read")
@office_wide("webhooks")
def list_webhooks():
    with unit_of_work() as s:
        rows = s.scalars(select(WebhookSubscriber).order_by(WebhookSubscriber.id)).all()
        counts = _counts(s, [r.id for r in rows])
        return jsonify({"webhooks": [service.subscriber_dict(r, counts[r.id]) for r in rows]})


@bp.post("")
@require("security.write")
@office_wide("webhooks")
def create_webhook():
    data = json_object()
    try:
        with unit_of_work() as s:
            row = service.add_subscriber(s, instance().fernet(), name=data.get("name"), url=data.get("url"),
                                         secret=data.get("secret"), events=data.get("events"),
                                         by=getattr(g, "api_principal", "") or "")
            return jsonify(service.subscriber_dict(row)), 201
    except service.WebhookError as exc:
        return _fail(exc)


def _subscriber(s, webhook_id: int):
    return s.get(WebhookSubscriber, webhook_id)


@bp.patch("/<int:webhook_id>")
@require("security.write")
@office_wide("webhooks")
def update_webhook(webhook_id: int):
    data = json_object()
    try:
        with unit_of_work() as s:
            row = _subscriber(s, webhook_id)
            if row is None:
                return error(404, "webhook_not_found")
            return jsonify(service.subscriber_dict(service.update_subscriber(s, row, data, instance().fernet())))
    except service.WebhookError as exc:
        return _fail(exc)


@bp.delete("/<int:webhook_id>")
@require("security.write")
@office_wide("webhooks")
def delete_webhook(webhook_id: int):
    with unit_of_work() as s:
        row = _subscriber(s, webhook_id)
        if row is None:
            return error(404, "webhook_not_found")
        s.query(WebhookDelivery).filter(WebhookDelivery.subscriber_id == webhook_id).delete()
        s.delete(row)
    return jsonify({"deleted": webhook_id})


@bp.get("/<int:webhook_id>/deliveries")
@require("security.read")
@office_wide("webhooks")
def deliveries(webhook_id: int):
    limit, offset = paging()
    status = request.args.get("status")
    if status is not None and status not in DELIVERY_STATES:
        return error(400, "invalid_status", detail=f"status is one of {', '.join(DELIVERY_STATES)}")
    with unit_of_work() as s:
        if _subscriber(s, webhook_id) is None:
            return error(404, "webhook_not_found")
        q = select(WebhookDelivery).where(WebhookDelivery.subscriber_id == webhook_id)
        if status:
            q = q.where(WebhookDelivery.status == status)
        total = s.scalar(select(func.count()).select_from(q.subquery()))
        rows = s.scalars(q.order_by(WebhookDelivery.id.desc()).limit(limit).offset(offset)).all()
        return jsonify({"total": total, "limit": limit, "offset": offset,
                        "deliveries": [service.delivery_dict(d) for d in rows]})


@bp.post("/<int:webhook_id>/retry")
@require("security.write")
@office_wide("webhooks")
def retry(webhook_id: int):
    data = request.get_json(silent=True) if request.content_length else {}
    ids = (data or {}).get("deliveries") if isinstance(data, dict) else None
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                                                 for i in ids)):
        return error(400, "invalid_body", detail="deliveries is a list of delivery ids")
    with unit_of_work() as s:
        if _subscriber(s, webhook_id) is None:
            return error(404, "webhook_not_found")
        n = service.retry(s, webhook_id, ids)
    from ipad_mdm.outbox import OUTBOX_TASK
    from ipad_mdm.web import dispatcher

    dispatcher().submit(OUTBOX_TASK)
    return jsonify({"due_now": n})
