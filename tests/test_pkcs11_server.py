"""The whole server with its CA key and profile-signing key on a PKCS#11 token (SoftHSM2)."""
from __future__ import annotations

import subprocess
import uuid

from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from mdm.models import Device
from tests.conftest import start_live_server


def test_server_with_token_keys_enrolls_a_device(tmp_path, database_url, softhsm_token):
    label = uuid.uuid4().hex[:8]
    ca_key = softhsm_token.generate_rsa(f"ca-{label}", bits=3072)
    signing_key = softhsm_token.generate_rsa(f"signer-{label}")
    # No seeded instance: the CA certificate is created for the token key at first start.
    srv = start_live_server(tmp_path, database_url, seed=False, ca_pkcs11=ca_key, signing_pkcs11=signing_key)
    try:
        inst = srv.instance
        assert not (inst.settings.secrets_dir / "ca.key").exists()
        assert not (inst.settings.secrets_dir / "signer.key").exists()
        assert inst.ca.certificate.public_key().public_numbers() == inst.ca.key.public_key().public_numbers()

        # The enrollment profile is signed on the token and verifies with openssl.
        profile = tmp_path / "enroll.mobileconfig"
        profile.write_bytes(srv.http().get(srv.enrollment_url()).content)
        subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", str(profile), "-CAfile", srv.ca_path,
                        "-purpose", "any", "-out", "/dev/null"], check=True, capture_output=True)

        # SCEP decrypts with the token's CA key and issues with it; check-ins verify against it.
        sim = srv.simulator()
        sim.enroll(srv.enrollment_url())
        srv.wait_pushes()
        sim.process_commands()
        cert_pem = tmp_path / "device.pem"
        cert_pem.write_bytes(sim.identity.public_bytes(Encoding.PEM))
        subprocess.run(["openssl", "verify", "-CAfile", srv.ca_path, str(cert_pem)], check=True, capture_output=True)
        with srv.session() as s:
            assert s.scalar(select(Device).where(Device.udid == sim.udid)).security_info["PasscodePresent"] is True
        sim.close()
    finally:
        srv.stop()
