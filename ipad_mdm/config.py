"""Settings: read once from the environment and the instance folder.

Every knob has an embedded default so `ipad-mdm serve` works on a fresh machine
(SQLite file, demo CA in the instance folder, no external servers).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Pkcs11Settings:
    """Where a signing (or CA) key lives on a PKCS#11 token."""

    module: str
    token_label: str
    key_label: str
    pin: str | None = field(default=None, repr=False)  # literal PIN (tests); prefer pin_file / pin_env
    pin_file: str | None = None
    pin_env: str | None = None

    def resolve_pin(self) -> str:
        if self.pin_file:
            return Path(self.pin_file).read_text().strip()
        if self.pin_env:
            value = os.environ.get(self.pin_env)
            if value is None:
                raise RuntimeError(f"PKCS#11 PIN variable {self.pin_env} is not set")
            return value
        if self.pin is not None:
            return self.pin
        raise RuntimeError("no PKCS#11 PIN source configured")


@dataclass(frozen=True)
class Settings:
    instance_dir: Path
    database_url: str
    base_url: str
    apns_url: str = "https://api.push.apple.com"
    # The APNs push certificate / key (PEM) issued by Apple for the MDM topic.
    # The demo instance creates a self-signed stand-in so enrollment works offline.
    push_cert_path: Path | None = None
    push_key_path: Path | None = None
    push_topic: str | None = None
    max_body_bytes: int = 2 * 1024 * 1024
    max_plist_depth: int = 32
    enrollment_token_ttl_hours: int = 72
    identity_cert_days: int = 365
    identity_renew_days: int = 30
    # mTLS through a trusted reverse proxy: header holding the URL-encoded PEM client cert.
    client_cert_header: str | None = None
    # Shared secret the proxy sends so a client on another path cannot forge the header.
    proxy_secret: str | None = None
    organization: str = "Văn phòng Chính phủ"
    org_identifier: str = "vn.gov.vpcp.mdm"
    apns_max_attempts: int = 5
    # Extra CA bundle to trust for the APNs endpoint (tests' local stand-in).
    apns_ca_file: str | None = None
    apns_timeout_seconds: float = 10.0
    signing_pkcs11: Pkcs11Settings | None = None
    ca_pkcs11: Pkcs11Settings | None = None
    celery_broker_url: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ca_dir(self) -> Path:
        return self.instance_dir / "ca"

    @property
    def secrets_dir(self) -> Path:
        return self.instance_dir / "secrets"

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)


def _pkcs11_from_env(prefix: str) -> Pkcs11Settings | None:
    module = os.environ.get(f"{prefix}_PKCS11_MODULE")
    if not module:
        return None
    return Pkcs11Settings(
        module=module,
        token_label=os.environ.get(f"{prefix}_PKCS11_TOKEN", ""),
        key_label=os.environ.get(f"{prefix}_PKCS11_KEY", ""),
        pin_file=os.environ.get(f"{prefix}_PKCS11_PIN_FILE"),
        pin_env=os.environ.get(f"{prefix}_PKCS11_PIN_ENV"),
    )


BASE_URL_FILE = "base-url"


def recorded_base_url(instance_dir: Path) -> str | None:
    """The public URL the last `serve` of this instance announced (instance/base-url), so that the
    CLI prints enrollment URLs for the server that really runs, not for the default port."""
    try:
        value = (Path(instance_dir) / BASE_URL_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return value if value.startswith(("https://", "http://")) and len(value) < 2048 else None


def load_settings(instance_dir: str | os.PathLike | None = None, **overrides) -> Settings:
    """Build settings from the environment; explicit keyword overrides win."""
    inst = Path(instance_dir or os.environ.get("IPAD_MDM_INSTANCE") or "./instance").resolve()
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{inst / 'ipad-mdm.sqlite3'}"
    base_url = os.environ.get("IPAD_MDM_BASE_URL") or recorded_base_url(inst) or "https://127.0.0.1:8000"
    push_cert = os.environ.get("IPAD_MDM_PUSH_CERT")
    push_key = os.environ.get("IPAD_MDM_PUSH_KEY")
    settings = Settings(
        instance_dir=inst,
        database_url=database_url,
        base_url=base_url.rstrip("/"),
        apns_url=(os.environ.get("IPAD_MDM_APNS_URL") or "https://api.push.apple.com").rstrip("/"),
        push_cert_path=Path(push_cert) if push_cert else None,
        push_key_path=Path(push_key) if push_key else None,
        push_topic=os.environ.get("IPAD_MDM_PUSH_TOPIC") or None,
        max_body_bytes=_env_int("IPAD_MDM_MAX_BODY_BYTES", 2 * 1024 * 1024),
        enrollment_token_ttl_hours=_env_int("IPAD_MDM_ENROLL_TTL_HOURS", 72),
        identity_cert_days=_env_int("IPAD_MDM_IDENTITY_DAYS", 365),
        identity_renew_days=_env_int("IPAD_MDM_IDENTITY_RENEW_DAYS", 30),
        client_cert_header=os.environ.get("IPAD_MDM_CLIENT_CERT_HEADER") or None,
        proxy_secret=os.environ.get("IPAD_MDM_PROXY_SECRET") or None,
        apns_max_attempts=_env_int("IPAD_MDM_APNS_ATTEMPTS", 5),
        apns_ca_file=os.environ.get("IPAD_MDM_APNS_CA") or None,
        signing_pkcs11=_pkcs11_from_env("IPAD_MDM_SIGNING"),
        ca_pkcs11=_pkcs11_from_env("IPAD_MDM_CA"),
        celery_broker_url=os.environ.get("CELERY_BROKER_URL") or None,
    )
    if _env_bool("IPAD_MDM_DEBUG_SQL", False):
        settings.extra["echo_sql"] = True
    return replace(settings, **overrides) if overrides else settings
