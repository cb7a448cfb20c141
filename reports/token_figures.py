"""Signing USB tokens in the monthly report: certificates expiring within 30 days of the period's end
(or expired while the token is still out), tokens lost in the period with their revocation request,
and tokens not handed back (the holder no longer has an iPad from us, or is no longer active).

Each token's state and holder at the period's end are replayed from its event history, so a report on
a past month says what was true then; the certificate's expiry is the one on record now (a renewal
after the period moves it)."""
from __future__ import annotations

import datetime as dt

import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Connection

from document_gateway import Leader
from usb_tokens import UsbToken, UsbTokenEvent, service as tokens

from .loaders import _frame

EXPIRY_WINDOW = dt.timedelta(days=30)


def token_figures(conn: Connection, period, assignments: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], dict]:
    start, end = pd.Timestamp(period.start), pd.Timestamp(period.end)
    t = _frame(conn, select(UsbToken.id.label("token_id"), UsbToken.serial_number, UsbToken.kind,
                            UsbToken.cert_holder_name, UsbToken.cert_issuer_name, UsbToken.cert_serial,
                            UsbToken.cert_not_after, UsbToken.created_at)
               .where(UsbToken.created_at < period.end).order_by(UsbToken.serial_number), ("cert_not_after", "created_at"))
    e = _frame(conn, select(UsbTokenEvent.token_id, UsbTokenEvent.action, UsbTokenEvent.to_state, UsbTokenEvent.at,
                            UsbTokenEvent.leader_id, UsbTokenEvent.letter_number, UsbTokenEvent.data)
               .where(UsbTokenEvent.at < period.end).order_by(UsbTokenEvent.id), ("at",))
    leaders = {row.id: (row.full_name, row.active) for row in conn.execute(select(Leader.id, Leader.full_name, Leader.active))}
    last = e.groupby("token_id").tail(1).set_index("token_id") if len(e) else pd.DataFrame()
    moves = e[e["action"].isin(("hand_over", "return", "lost", "revoked"))]
    last_move = moves.groupby("token_id").tail(1).set_index("token_id") if len(moves) else pd.DataFrame()

    expiring, not_returned = [], []
    open_at_end = assignments[(assignments["assigned_at"] < end) &
                              (assignments["returned_at"].isna() | (assignments["returned_at"] >= end))]
    leaders_with_ipad = set(open_at_end["leader_id"].dropna().astype(int))
    for row in t.itertuples():
        state = last.at[row.token_id, "to_state"] if row.token_id in last.index else "in_stock"
        if state not in tokens.HELD:
            continue
        if pd.notna(row.cert_not_after) and row.cert_not_after <= end + EXPIRY_WINDOW:
            expiring.append({"token_serial": row.serial_number, "holder": row.cert_holder_name,
                             "issuer_name": row.cert_issuer_name, "not_after": row.cert_not_after,
                             "days_left": max(0, (row.cert_not_after - end).days), "token_state": state})
        if state == "handed_over" and row.token_id in last_move.index:
            move = last_move.loc[row.token_id]
            holder_id = int(move["leader_id"]) if pd.notna(move["leader_id"]) else None
            name, active = leaders.get(holder_id, ("", False))
            if holder_id not in leaders_with_ipad or not active:
                not_returned.append({"token_serial": row.serial_number, "holder": name, "handed_over_at": move["at"],
                                     "why": "leader_inactive" if not active else "no_ipad"})
    lost_rows = []
    for row in e[(e["action"] == "lost") & (e["at"] >= start)].itertuples():
        data = row.data or {}
        state = last.at[row.token_id, "to_state"] if row.token_id in last.index else "lost"
        lost_rows.append({"token_serial": data.get("serial_number", ""), "holder": data.get("holder", ""),
                          "lost_on": data.get("lost_on", ""), "at": row.at,
                          "revocation_request": f"{int(row.letter_number)}/TTTH-ATTT" if pd.notna(row.letter_number) else "",
                          "token_state": state})
    tables = {"usb_tokens_expiring": pd.DataFrame(expiring, columns=["token_serial", "holder", "issuer_name", "not_after",
                                                                      "days_left", "token_state"]),
              "usb_tokens_lost": pd.DataFrame(lost_rows, columns=["token_serial", "holder", "lost_on", "at",
                                                                  "revocation_request", "token_state"]),
              "usb_tokens_not_returned": pd.DataFrame(not_returned, columns=["token_serial", "holder", "handed_over_at", "why"])}
    held = int(sum(1 for tid in t["token_id"] if (last.at[tid, "to_state"] if tid in last.index else "in_stock") in tokens.HELD))
    kpis = {"usb_tokens": held, "usb_tokens_expiring_30d": len(expiring), "usb_tokens_lost": len(lost_rows),
            "usb_tokens_not_returned": len(not_returned)}
    return tables, kpis
