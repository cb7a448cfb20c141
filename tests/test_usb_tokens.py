"""#18 USB tokens: the leaders' signing tokens registered with their certificate (from a file or read
from the token over real PKCS#11), handed over and returned on the iPad's own minute, lost in one action
that raises a security event and draws up the revocation request, warned about before expiry, and in
the monthly report."""
from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from ipad_mdm.db import utcnow
from tests.test_console_support import client_for, enroll_recorded, seed
from tests.test_mdm_api_cli import _cli


# ------------------------------------------------------------------ a state CA and leaders' certificates
def _name(**parts) -> x509.Name:
    oids = {"cn": NameOID.COMMON_NAME, "o": NameOID.ORGANIZATION_NAME, "c": NameOID.COUNTRY_NAME}
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in parts.items()])


def make_state_ca():
    """A stand-in for the state cipher authority's CA (its name as on real leaders' certificates)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = _name(c="VN", o="Ban Cơ yếu Chính phủ", cn="CA chuyên dùng Chính phủ (thử nghiệm)")
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


@pytest.fixture(scope="module")
def state_ca():
    return make_state_ca()


def leader_cert(state_ca, holder: str, *, days: int = 365) -> x509.Certificate:
    ca_key, ca_cert = state_ca
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(_name(c="VN", o="Văn phòng Chính phủ", cn=holder))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(ca_key, hashes.SHA256()))


def pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _pdftext(pdf: bytes, tmp_path, name: str) -> str:
    path = tmp_path / name
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout


# ------------------------------------------------------------------ certificates
def test_certificate_files_are_read_and_bad_ones_refused(state_ca):
    from usb_tokens import service

    cert = leader_cert(state_ca, "Nguyễn Văn An")
    for data in (pem(cert), der(cert)):
        facts = service.certificate_facts(data)
        assert facts["holder_name"] == "Nguyễn Văn An" and facts["issuer_name"] == "Ban Cơ yếu Chính phủ"
        assert facts["serial"] == format(cert.serial_number, "X") and facts["der"] == der(cert)
    key_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    for bad, words in ((pem(cert) + key_pem, "khóa bí mật"), (pem(state_ca[1]), "(CA)"), (b"not a certificate", "X.509"),
                       (b"", "trống"), (b"0" * 70_000, "quá lớn")):
        with pytest.raises(service.TokenRefused) as refused:
            service.certificate_facts(bad)
        assert words in refused.value.message("vi")
    # Of a token's certificates, the signer's: not the CA's that comes with it, the one valid longest.
    older, newer = leader_cert(state_ca, "A", days=30), leader_cert(state_ca, "A", days=700)
    assert service.signing_certificate([der(state_ca[1]), der(older), der(newer)]) == der(newer)
    with pytest.raises(service.TokenRefused):
        service.signing_certificate([der(state_ca[1])])


# ------------------------------------------------------------------ read from the token (PKCS#11, SoftHSM2)
def test_the_cli_reads_the_certificate_from_the_token_itself(server, softhsm_leader_token, state_ca):
    token = softhsm_leader_token
    cert = leader_cert(state_ca, "Trần Thị Bình", days=500)
    token.store_certificate("ca", der(state_ca[1]), key_id="02")  # tokens carry their CA chain too
    token.store_certificate("signing", der(cert), key_id="01")
    added = _cli(server, "usb-token", "add", "--from-token", "--module", token.module, "--token-label",
                 token.token_label, "--kind", "Token Ban Cơ yếu")
    result = json.loads(added.stdout)
    assert result["state"] == "in_stock" and result["kind"] == "Token Ban Cơ yếu"
    assert result["certificate"]["holder_name"] == "Trần Thị Bình" and result["certificate"]["source"] == "pkcs11"
    assert result["certificate"]["serial"] == format(cert.serial_number, "X")
    import pkcs11

    from ipad_mdm.crypto.pkcs11_keys import pkcs11_lib

    serial = pkcs11_lib(token.module).get_token(token_label=token.token_label).serial.decode().strip()
    assert result["serial_number"] == serial  # the token's own serial, not typed by anyone
    assert pkcs11  # (the same module the CLI loaded)
    # No PIN was asked for and none is stored; nothing secret is in the output.
    assert token.pin not in added.stdout + added.stderr
    again = _cli(server, "usb-token", "add", "--from-token", "--module", token.module, "--token-label",
                 token.token_label, check=False)
    assert again.returncode == 2 and "already registered" in again.stderr and "Traceback" not in again.stderr
    wrong = _cli(server, "usb-token", "add", "--from-token", "--module", token.module, "--token-label", "no-such",
                 check=False)
    assert wrong.returncode == 2 and "No token found" in wrong.stderr
    listed = json.loads(_cli(server, "usb-token", "list", "--expiring", "600").stdout)
    assert [t["serial_number"] for t in listed] == [serial]
    assert json.loads(_cli(server, "usb-token", "list", "--expiring", "30").stdout) == []


# ------------------------------------------------------------------ the console workflow
def _token_id(server, serial):
    from usb_tokens import UsbToken

    with server.session() as s:
        return s.scalar(select(UsbToken.id).where(UsbToken.serial_number == serial))


def _token(server, serial):
    from usb_tokens import UsbToken, service

    with server.session() as s:
        return service.token_dict(s.scalar(select(UsbToken).where(UsbToken.serial_number == serial)))


def _register(admin, serial, cert, kind="Token Ban Cơ yếu"):
    return admin.post("/console/usb-tokens/new", {"serial_number": serial, "kind": kind},
                      files={"certificate": ("leader.cer", der(cert), "application/pkix-cert")})


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_token_handed_over_with_the_ipad_returned_lost_and_revoked(server, state_ca, tmp_path):
    from ipad_mdm.security_events import SecurityEvent

    world = seed(server)
    admin, officer, auditor = client_for(server, "admin"), client_for(server, "security"), client_for(server, "auditor")
    cert_a = leader_cert(state_ca, "Nguyễn Văn An")
    assert _register(admin, "TK0001", cert_a).status_code == 303
    # A private key is never taken in; nothing is stored; the reason is in Vietnamese.
    key_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    bad = admin.post("/console/usb-tokens/new", {"serial_number": "TK0002"},
                     files={"certificate": ("key.pem", key_pem, "application/x-pem-file")})
    assert bad.status_code == 400 and "không được tải khóa bí mật" in bad.text and _token_id(server, "TK0002") is None
    assert _register(admin, "TK0001", cert_a).status_code == 400  # the same serial twice
    token_id = _token_id(server, "TK0001")

    # The iPad and the token go out on one minute.
    sim, record_id = enroll_recorded(server, admin, world["units"]["TCCB"])
    assert admin.post(f"/console/handover/{record_id}/assign", {"leader_id": world["leader_a"]}).status_code == 303
    page = admin.get(f"/console/handover/{record_id}").text
    assert 'id="hand_over-usb_token"' in page and "TK0001 — Nguyễn Văn An" in page
    r = admin.post(f"/console/handover/{record_id}/hand_over", {"usb_token_id": str(token_id), "condition": "Mới"})
    assert r.status_code == 303, r.text
    t = _token(server, "TK0001")
    assert t["state"] == "handed_over" and t["holder_leader_id"] == world["leader_a"]
    from console.models import HandoverEvent

    with server.session() as s:
        minute = s.scalar(select(HandoverEvent).where(HandoverEvent.record_id == record_id,
                                                      HandoverEvent.action == "hand_over"))
        minute_id, minute_no = minute.id, minute.minute_number
    text = _pdftext(admin.get(f"/console/handover/{record_id}/minute/{minute_id}.pdf").content, tmp_path, "m.pdf")
    assert "Thiết bị chữ ký số (USB token) bàn giao kèm theo" in text and "TK0001" in text and "Ban Cơ yếu" in text
    token_page = admin.get(f"/console/usb-tokens/{token_id}").text
    assert f"biên bản số {minute_no}/BB-TTTH" in token_page and "Đã bàn giao" in token_page

    # Roles: the auditor reads only; the security officer may report a loss but not hand a token out.
    assert auditor.get("/console/usb-tokens").status_code == 200
    assert auditor.post(f"/console/usb-tokens/{token_id}/lost", {"circumstances": "x"}).status_code == 403
    refused = officer.post(f"/console/usb-tokens/{token_id}/return", {})
    assert refused.status_code == 403 and "Quản trị CNTT" in refused.text  # names the role that may

    # Back with the iPad, on the return minute.
    page = admin.get(f"/console/handover/{record_id}").text
    assert f'id="return-usb_token-{token_id}"' in page
    r = admin.post(f"/console/handover/{record_id}/return", {"usb_token_id": str(token_id)})
    assert r.status_code == 303, r.text
    assert _token(server, "TK0001")["state"] == "returned" and _token(server, "TK0001")["holder_leader_id"] is None

    # Out again to another leader, then lost: one action, the officer's.
    assert admin.post(f"/console/usb-tokens/{token_id}/hand_over", {"leader_id": world["leader_b"]}).status_code == 303
    future = (utcnow() + dt.timedelta(days=3)).strftime("%Y-%m-%d")
    r = officer.post(f"/console/usb-tokens/{token_id}/lost", {"circumstances": "Để quên trên taxi", "lost_on": future})
    assert r.status_code == 409 and "không được sau ngày hôm nay" in r.text
    r = officer.post(f"/console/usb-tokens/{token_id}/lost", {"circumstances": "Để quên trên taxi"})
    assert r.status_code == 303, r.text
    assert _token(server, "TK0001")["state"] == "lost"
    with server.session() as s:
        [event] = s.scalars(select(SecurityEvent).where(SecurityEvent.kind == "usb_token_lost")).all()
        assert event.severity == "high" and "TK0001" in event.summary_vi and "/TTTH-ATTT" in event.summary_vi
    page = officer.get(f"/console/usb-tokens/{token_id}").text
    assert 'id="revocation-letter"' in page and "Bị mất" in page
    from usb_tokens import UsbTokenEvent

    with server.session() as s:
        lost = s.scalar(select(UsbTokenEvent).where(UsbTokenEvent.token_id == token_id, UsbTokenEvent.action == "lost"))
        lost_id, number = lost.id, lost.letter_number
    letter = officer.get(f"/console/usb-tokens/{token_id}/letter/{lost_id}.pdf")
    assert letter.status_code == 200 and letter.headers["content-type"] == "application/pdf"
    text = _pdftext(letter.content, tmp_path, "letter.pdf")
    for words in ("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", f"Số: {number}/TTTH-ATTT", "V/v đề nghị thu hồi chứng thư số",
                  "Kính gửi: Ban Cơ yếu Chính phủ", "Trần Thị Bình", format(cert_a.serial_number, "X"),
                  "Để quên trên taxi", "Trân trọng", "Nơi nhận"):
        assert words in text, words
    assert admin.get(f"/console/usb-tokens/{token_id}/letter/{minute_id + 10_000}.pdf").status_code == 404
    # Nothing can go out on a lost token; the CA's confirmation closes it.
    again = admin.post(f"/console/usb-tokens/{token_id}/hand_over", {"leader_id": world["leader_a"]})
    assert again.status_code == 409 and "Bị mất" in again.text
    assert officer.post(f"/console/usb-tokens/{token_id}/revoked", {"note": "Thông báo số 12/CTS"}).status_code == 303
    assert _token(server, "TK0001")["state"] == "revoked"
    # English switch on the registry.
    admin.post("/console/lang", {"lang": "en"})
    en = admin.get(f"/console/usb-tokens/{token_id}").text
    assert "Certificate revoked" in en and "Reported lost, revocation requested" in en
    for c in (admin, officer, auditor):
        c.close()
    sim.close()


def test_monthly_report_lists_tokens_expiring_lost_and_not_handed_back(server, state_ca, tmp_path):
    from reports import service as reports
    from usb_tokens import service

    world = seed(server)
    admin = client_for(server, "admin")
    from document_gateway import Leader

    with server.session() as s:
        a = s.get(Leader, world["leader_a"])
        service.register(s, serial_number="TK-SOON", certificate=der(leader_cert(state_ca, "An", days=10)), by="t")
        kept = service.register(s, serial_number="TK-KEPT", certificate=der(leader_cert(state_ca, "An", days=400)), by="t")
        lost = service.register(s, serial_number="TK-LOST", certificate=der(leader_cert(state_ca, "Bình", days=400)), by="t")
        service.hand_over(s, kept, a, by="t")
        service.report_lost(s, lost, by="t", circumstances="Mất cùng cặp tài liệu")
    # TK-KEPT is out with leader A, who has no iPad: not handed back.
    now = utcnow()
    period = now.astimezone(dt.timezone(dt.timedelta(hours=7))).strftime("%Y-%m")
    html = reports.build(server.instance.database, "monthly", period, "vi", ["html"], as_of=now)["html"].decode()
    section = html[html.index("USB token ký số của lãnh đạo"):]
    assert "TK-SOON" in section and "TK-LOST" in section and "1/TTTH-ATTT" in section and "TK-KEPT" in section
    assert "Lãnh đạo không còn sử dụng" not in section and "Lãnh đạo không còn được giao iPad, USB token chưa hoàn trả" in section
    assert "handed_over" not in section and "in_stock" not in section  # states in words
    assert "1.0/" not in section and "2026-" not in section  # numbers and dates as people write them
    en = reports.build(server.instance.database, "monthly", period, "en", ["html"], as_of=now)["html"].decode()
    assert "USB tokens lost in the period" in en and "Lost" in en
    admin.close()


def test_expiry_warnings_once_per_threshold_and_again_after_renewal(server, state_ca):
    from ipad_mdm.security_events import SecurityEvent
    from usb_tokens import service

    seed(server)
    with server.session() as s:
        token = service.register(s, serial_number="TK-EXP", certificate=der(leader_cert(state_ca, "An", days=20)), by="t")
        token_id = token.id
    admin = client_for(server, "admin")
    assert admin.get("/console/").text.count('id="need-usb_token_expiring"') == 1
    home = admin.get("/console/").text
    assert 'id="need-usb_token_expiring" href="/console/usb-tokens?expiring=30"' in home
    now = utcnow()
    with server.session() as s:
        assert service.warn_expiring(s, now) == [f"TK-EXP:{s.get(service.UsbToken, token_id).cert_serial}:30"]
        assert service.warn_expiring(s, now) == []  # said once
        assert service.warn_expiring(s, now + dt.timedelta(days=7))[0].endswith(":14")
        assert service.warn_expiring(s, now + dt.timedelta(days=7)) == []
        assert service.warn_expiring(s, now + dt.timedelta(days=21))[0].endswith(":0")
        texts = [e.summary_vi for e in s.scalars(select(SecurityEvent).where(SecurityEvent.kind == "usb_token_expiring"))]
    assert len(texts) == 3 and "còn 20 ngày" in texts[0] and "đã hết hạn" in texts[2]
    with server.session() as s:
        token = s.get(service.UsbToken, token_id)
        service.load_certificate(s, token, pem(leader_cert(state_ca, "An", days=720)), by="t")
        assert token.expiry_warned is None and service.warn_expiring(s, now) == []
    admin.close()
