"""deploy/gunicorn.conf.py terminating TLS: one SSLContext per worker (gunicorn's default builds one per
connection), and a certificate replaced on disk is the one the next connection is served."""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gunicorn import sock as gsock
from gunicorn.config import Config

CONF = Path(__file__).resolve().parents[1] / "deploy" / "gunicorn.conf.py"


def _write_cert(folder: Path, cn: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))


def _settings(folder: Path, monkeypatch) -> Config:
    monkeypatch.setenv("IPAD_MDM_TLS_CERT", str(folder / "server.pem"))
    monkeypatch.setenv("IPAD_MDM_TLS_KEY", str(folder / "server.key"))
    namespace: dict = {"__file__": str(CONF)}
    exec(compile(CONF.read_text(), str(CONF), "exec"), namespace)  # noqa: S102 — the real settings file
    cfg = Config()
    for name in ("certfile", "keyfile", "ssl_context"):
        cfg.set(name, namespace[name])
    return cfg


def _served_cn(cfg: Config, cafile: Path) -> str:
    """One real TLS connection through gunicorn's own wrapping; the common name the client saw."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with gsock.ssl_wrap_socket(conn, cfg) as tls:
            tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port)) as raw, client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        cn = dict(item[0] for item in tls.getpeercert()["subject"])["commonName"]
        tls.sendall(b"x")
    thread.join(10)
    listener.close()
    return cn


def test_one_context_per_worker_until_the_certificate_changes(tmp_path, monkeypatch):
    _write_cert(tmp_path, "mdm-one")
    cfg = _settings(tmp_path, monkeypatch)
    first = gsock.ssl_context(cfg)
    assert gsock.ssl_context(cfg) is first  # not rebuilt per connection
    assert _served_cn(cfg, tmp_path / "server.pem") == "mdm-one"

    _write_cert(tmp_path, "mdm-two")  # a renewed certificate: new files, new modification times
    stamp = os.stat(tmp_path / "server.pem").st_mtime_ns + 1_000_000
    os.utime(tmp_path / "server.pem", ns=(stamp, stamp))
    assert gsock.ssl_context(cfg) is not first
    assert _served_cn(cfg, tmp_path / "server.pem") == "mdm-two"
