"""The instance folder: database, CA, keys. Initialised on first start.

Layout (secrets/ is 0700 and every file in it 0600):
  ca/ca.pem            CA certificate (public)
  ca/signer.pem        profile-signing certificate issued by the CA
  ca/scep-ra.pem       SCEP registration authority's certificate issued by the CA
  ca/server.pem        TLS server certificate for the embedded server
  ca/push.pem          APNs push certificate (demo: self-signed stand-in)
  secrets/ca.key       CA key (absent when it lives on a PKCS#11 token)
  secrets/signer.key   profile-signing key (absent on PKCS#11)
  secrets/scep-ra.key  SCEP RA key (always a file: it opens and signs every SCEP exchange)
  secrets/server.key, secrets/push.key, secrets/app.key, secrets/data.key
  secrets/audit.key    HMAC key of the gateway's audit chain
  audit/checkpoints.jsonl   signed checkpoints of that chain (document_gateway.audit)
"""
from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import secrets
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from .config import Settings
from .crypto.ca import CertificateAuthority, RegistrationAuthority, create_ca_for_key, utcnow
from .crypto.keys import FileKey, KeyHandle, write_private_key, write_secret_file
from .crypto.pkcs11_keys import Pkcs11Key
from .db import Database
from .files import private_dir, tighten_tree, write_atomic

log = logging.getLogger(__name__)
_init_lock = threading.Lock()


@dataclass
class Instance:
    settings: Settings
    database: Database
    ca: CertificateAuthority
    signer_cert: x509.Certificate
    signer_key: KeyHandle
    push_cert_path: Path
    push_key_path: Path
    push_topic: str
    server_cert_path: Path
    server_key_path: Path
    app_secret: bytes
    data_key: bytes
    # Keys the gateway's audit hash chain (HMAC-SHA256); only the server's files hold it.
    audit_key: bytes = b""
    # Rows of that chain written before the key existed (plain SHA-256) end here.
    audit_unkeyed_up_to: int = 0
    # Opens SCEP requests and signs the answers (None: the CA itself does, three CA-key operations).
    scep_ra: RegistrationAuthority | None = None

    def fernet(self) -> Fernet:
        return Fernet(self.data_key)

    @property
    def pushes_off_reason(self) -> str | None:
        """"demo_push_certificate" when pushes cannot work: the demo's self-signed stand-in of a push
        certificate, aimed at Apple's real APNs (which refuses it). Commands are then only queued and
        reach the iPad when it checks in by itself; nothing waits on Apple."""
        if urlsplit(self.settings.apns_url).hostname not in APPLE_APNS_HOSTS:
            return None
        # Apple's push certificates are issued by Apple; the demo's stand-in is self-signed.
        cert = x509.load_pem_x509_certificate(Path(self.push_cert_path).read_bytes())
        return "demo_push_certificate" if cert.issuer == cert.subject else None


APPLE_APNS_HOSTS = ("api.push.apple.com", "api.sandbox.push.apple.com", "api.development.push.apple.com")


def _secret_bytes(path: Path, factory) -> bytes:
    if not path.exists():
        write_secret_file(path, factory())
    return path.read_bytes().strip()


def _hostnames(base_url: str) -> list[str]:
    host = urlsplit(base_url).hostname or "localhost"
    return [host, "localhost", "127.0.0.1"]


def _topic_of(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    return str(attrs[0].value) if attrs else None


def _ensure_ca(settings: Settings) -> CertificateAuthority:
    ca_dir, sec = settings.ca_dir, settings.secrets_dir
    cert_path = ca_dir / "ca.pem"
    if settings.ca_pkcs11 is not None:
        # With its certificate on disk the server starts while the token is away (check-ins, documents and
        # reports need no CA key); what does need it refuses, naming the token, until it is back.
        certified = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_key() if cert_path.exists() else None
        key: KeyHandle = Pkcs11Key(settings.ca_pkcs11, purpose="ca", certified_public=certified)
    else:
        key_path = sec / "ca.key"
        if not key_path.exists():
            log.info("creating demo CA key in %s", key_path)
            write_private_key(key_path, rsa.generate_private_key(public_exponent=65537, key_size=3072))
            cert_path.unlink(missing_ok=True)
        key = FileKey.load(key_path, own=True)
    if not cert_path.exists():
        cert = create_ca_for_key("iPad MDM Device CA", settings.organization, key)
        write_atomic(cert_path, CertificateAuthority(cert, key).certificate_pem)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return CertificateAuthority(cert, key)


def _ensure_signer(settings: Settings, ca: CertificateAuthority) -> tuple[x509.Certificate, KeyHandle]:
    cert_path = settings.ca_dir / "signer.pem"
    if settings.signing_pkcs11 is not None:
        # Not touched at start when its certificate is on disk: every worker process would try the PIN
        # (a wrong one locks a USB token after a few tries), and the server must start while the token
        # is away. The key found at first use must match the certificate; a new key on the token needs
        # ca/signer.pem removed, and the next start issues its certificate.
        if cert_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if cert.not_valid_after_utc > utcnow():
                return cert, Pkcs11Key(settings.signing_pkcs11, purpose="signing", certified_public=cert.public_key())
        key: KeyHandle = Pkcs11Key(settings.signing_pkcs11, purpose="signing")
    else:
        key_path = settings.secrets_dir / "signer.key"
        if not key_path.exists():
            write_private_key(key_path, rsa.generate_private_key(public_exponent=65537, key_size=2048))
            cert_path.unlink(missing_ok=True)
        key = FileKey.load(key_path, own=True)
    if cert_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.public_key().public_numbers() != key.public_key().public_numbers() or cert.not_valid_after_utc < utcnow():
            cert = None
    else:
        cert = None
    if cert is None:
        cert = ca.issue_signer("iPad MDM Profile Signing", key.public_key())
        write_atomic(cert_path, cert.public_bytes(_pem()))
    return cert, key


def _ensure_scep_ra(settings: Settings, ca: CertificateAuthority) -> RegistrationAuthority:
    """The SCEP RA's key and certificate. A new key or certificate costs one CA-key operation, at the
    first start (and when the certificate nears its end or the CA changed), not at every enrollment."""
    cert_path, key_path = settings.ca_dir / "scep-ra.pem", settings.secrets_dir / "scep-ra.key"
    if not key_path.exists():
        write_private_key(key_path, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        cert_path.unlink(missing_ok=True)
    key = FileKey.load(key_path, own=True)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes()) if cert_path.exists() else None
    if cert is not None and (cert.public_key().public_numbers() != key.public_key().public_numbers()
                             or cert.not_valid_after_utc < utcnow() + dt.timedelta(days=30)
                             or not ca.issued_this(cert)):
        cert = None
    if cert is None:
        cert = ca.issue_scep_ra(key.public_key())
        write_atomic(cert_path, cert.public_bytes(_pem()))
    return RegistrationAuthority(cert, key)


def _pem():
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.PEM


def _ensure_server_cert(settings: Settings, ca: CertificateAuthority) -> tuple[Path, Path]:
    cert_path, key_path = settings.ca_dir / "server.pem", settings.secrets_dir / "server.key"
    names = _hostnames(settings.base_url)
    current = None
    if cert_path.exists() and key_path.exists():
        current = x509.load_pem_x509_certificate(cert_path.read_bytes())
        try:
            san = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            have = {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
                str(v) for v in san.get_values_for_type(x509.IPAddress)
            }
        except x509.ExtensionNotFound:
            have = set()
        if not set(names) <= have or current.not_valid_after_utc < utcnow() or not ca.issued_this(current):
            current = None
    if current is None:
        cert, key = ca.issue_server(names)
        write_private_key(key_path, key)
        write_atomic(cert_path, cert.public_bytes(_pem()) + ca.certificate_pem)
    return cert_path, key_path


def _ensure_push_cert(settings: Settings) -> tuple[Path, Path, str]:
    """The APNs push certificate. Production imports Apple's; the demo makes a stand-in."""
    if settings.push_cert_path and settings.push_key_path:
        cert = x509.load_pem_x509_certificate(settings.push_cert_path.read_bytes())
        topic = settings.push_topic or _topic_of(cert)
        if not topic:
            raise RuntimeError("push certificate has no UID (topic); set IPAD_MDM_PUSH_TOPIC")
        return settings.push_cert_path, settings.push_key_path, topic
    cert_path, key_path = settings.ca_dir / "push.pem", settings.secrets_dir / "push.key"
    if not (cert_path.exists() and key_path.exists()):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        topic = f"com.apple.mgmt.External.{uuid.uuid4()}"
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.USER_ID, topic),
                x509.NameAttribute(NameOID.COMMON_NAME, f"APSP:{topic.rsplit('.', 1)[-1]}"),
            ]
        )
        import datetime as dt

        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(utcnow() - dt.timedelta(minutes=5))
            .not_valid_after(utcnow() + dt.timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        write_private_key(key_path, key)
        write_atomic(cert_path, cert.public_bytes(_pem()))
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert_path, key_path, settings.push_topic or _topic_of(cert)


def _protect_sqlite_file(url: str) -> None:
    """The embedded database holds UnlockTokens and encrypted keys: 0600 from the start
    (SQLite gives its -wal and -shm files the database file's permissions)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return
    path = Path(parsed.database)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


def _ensure_audit_key(settings: Settings, database: Database | None) -> tuple[bytes, int]:
    """The gateway audit chain's HMAC key, and how far the chain ran unkeyed before it existed.
    Both live in the secrets folder, out of reach of someone who can only write the database."""
    import json

    key_path, legacy_path = settings.secrets_dir / "audit.key", settings.secrets_dir / "audit-legacy.json"
    if not key_path.exists():
        unkeyed = 0
        if database is not None:
            from sqlalchemy import text

            try:
                with database.engine.connect() as conn:
                    unkeyed = int(conn.execute(text("SELECT last_seq FROM gateway_audit_head WHERE id = 1")).scalar() or 0)
            except Exception:  # no gateway tables (yet): nothing was written unkeyed
                unkeyed = 0
        write_secret_file(legacy_path, json.dumps({"unkeyed_up_to": unkeyed}).encode())
        write_secret_file(key_path, secrets.token_hex(32).encode())
    try:
        unkeyed = int(json.loads(legacy_path.read_text())["unkeyed_up_to"])
    except (OSError, ValueError, KeyError):
        unkeyed = 0
    return key_path.read_bytes().strip(), unkeyed


def open_instance(settings: Settings, *, migrate: bool = True) -> Instance:
    """Create whatever is missing in the instance folder, then open it."""
    # Everything under the instance is private to the server's user: 0700 folders, 0600 files.
    private_dir(settings.instance_dir)
    # Several gunicorn workers may start at once: one initialises, the others wait.
    lock_fd = os.open(settings.instance_dir / ".init.lock", os.O_RDWR | os.O_CREAT, 0o600)
    with _init_lock, os.fdopen(lock_fd, "r+") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        for folder in (settings.ca_dir, settings.secrets_dir):
            tighten_tree(folder)
            private_dir(folder)
        for folder in ("reports", "documents"):
            if (settings.instance_dir / folder).exists():
                private_dir(settings.instance_dir / folder)
        for entry in settings.instance_dir.iterdir():
            if entry.is_file() and not entry.is_symlink() and entry.stat().st_mode & 0o077:
                os.chmod(entry, 0o600)
        ca = _ensure_ca(settings)
        signer_cert, signer_key = _ensure_signer(settings, ca)
        scep_ra = _ensure_scep_ra(settings, ca)
        server_cert, server_key = _ensure_server_cert(settings, ca)
        push_cert, push_key, topic = _ensure_push_cert(settings)
        app_secret = _secret_bytes(settings.secrets_dir / "app.key", lambda: secrets.token_hex(32).encode())
        data_key = _secret_bytes(settings.secrets_dir / "data.key", Fernet.generate_key)
        _protect_sqlite_file(settings.database_url)
        database = Database(settings.database_url, echo=bool(settings.extra.get("echo_sql")))
        if migrate:
            database.migrate()
        # Every package's tables on the metadata (foreign keys across packages resolve at flush),
        # whether or not the migration above had to load them.
        from .packages import import_all_models

        import_all_models()
        audit_key, unkeyed_up_to = _ensure_audit_key(settings, database if migrate else None)
    return Instance(
        settings=settings,
        database=database,
        ca=ca,
        signer_cert=signer_cert,
        signer_key=signer_key,
        scep_ra=scep_ra,
        push_cert_path=push_cert,
        push_key_path=push_key,
        push_topic=topic,
        server_cert_path=server_cert,
        server_key_path=server_key,
        app_secret=app_secret,
        data_key=data_key,
        audit_key=audit_key,
        audit_unkeyed_up_to=unkeyed_up_to,
    )
