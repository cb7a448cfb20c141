"""USB tokens (issue #18): the registry of the leaders' signing tokens, handed over with the iPads.

Public surface
  MANIFEST
  service    register, load_certificate, hand_over, return_token, report_lost, mark_revoked, get, held_by,
             available, expiring_condition, days_left, warn_expiring, snapshot, token_dict, certificate_facts,
             STATES, STATE_LABELS, ACTION_LABELS, allowed_actions, TokenRefused
  letter     revocation_request_pdf(event data): the request to the issuing CA after a loss
  UsbToken, UsbTokenEvent   the stored rows (reports read them)
"""
from __future__ import annotations

import importlib

from ipad_mdm.manifest import Manifest

from . import service
from .models import UsbToken, UsbTokenEvent

__all__ = ["MANIFEST", "letter", "service", "UsbToken", "UsbTokenEvent"]

MANIFEST = Manifest(name="usb_tokens", models=("usb_tokens.models",), jobs=("usb_tokens.jobs",),
                    cli=("usb_tokens.cli:usb_token",))


def __getattr__(name: str):
    if name == "letter":  # reportlab: loaded when a letter is first printed
        return importlib.import_module(".letter", __name__)
    raise AttributeError(name)
