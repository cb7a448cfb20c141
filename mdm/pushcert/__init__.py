"""The APNs push certificate in service (issue #22, item 4): its state as APNs sees it (refused,
topic mismatch, expired), renewal without a restart, the guard against a certificate created "new"
instead of renewed (a different topic strands every enrolled iPad), expiry warnings 30/14/7 days
ahead, and the push state shown in the console, the API (/api/v1/push-certificate) and the CLI
(`ipad-mdm push-cert show|install`)."""
from __future__ import annotations

from .certificate import PushCertificate, PushCertificateRefused, TopicChangeRefused, classify
from .service import current, install, install_and_wake, status

__all__ = ["PushCertificate", "PushCertificateRefused", "TopicChangeRefused", "classify", "current", "install",
           "install_and_wake", "status"]
