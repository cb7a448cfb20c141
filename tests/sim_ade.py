"""What an iPad does in Setup Assistant with an Automated Device Enrollment profile (a mixin of
tests/simulator.py's SimulatedIPad).

Apple's activation hands the iPad the MDM server's ADE profile (url, await_device_configured);
the iPad POSTs its machine information — a plist (UDID, SERIAL, PRODUCT, VERSION, LANGUAGE)
signed as CMS SignedData with its Apple-issued device certificate — gets the enrollment
profile, enrolls as usual (SCEP, Authenticate, TokenUpdate with AwaitingConfiguration true), and
stays in Setup Assistant answering commands until DeviceConfigured arrives.
"""
from __future__ import annotations

import datetime as dt
import plistlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ipad_mdm.crypto import cms
from ipad_mdm.crypto.keys import FileKey


class AppleDeviceCA:
    """The tests' stand-in for Apple's device-certificate CA ("Apple iPhone Device CA")."""

    def __init__(self, name: str = "Apple iPhone Device CA (test stand-in)"):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Apple Inc. (test)")])
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def device_certificate(self, udid: str):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, udid)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=3650)).sign(self.key, hashes.SHA256()))
        return cert, key


class ADEDevice:
    def machine_info(self, device_ca: AppleDeviceCA, *, serial: str | None = None) -> bytes:
        """The signed machine information Setup Assistant sends."""
        if getattr(self, "device_cert", None) is None:
            self.device_cert, self.device_key = device_ca.device_certificate(self.udid)
        info = plistlib.dumps({"UDID": self.udid, "SERIAL": serial or self.serial, "PRODUCT": self.state.product_name,
                               "VERSION": self.state.build_version, "LANGUAGE": "vi"})
        return cms.sign(info, self.device_cert, FileKey(self.device_key), detached=False, extra_certs=[device_ca.cert])

    def ade_enroll(self, ade_url: str, device_ca: AppleDeviceCA, *, await_configuration: bool = True,
                   body: bytes | None = None):
        """From the ADE profile's url to TokenUpdate; the iPad then waits for DeviceConfigured."""
        from .simulator import SimulatorError

        resp = self.client.post(ade_url, content=body if body is not None else self.machine_info(device_ca),
                                headers={"Content-Type": "application/pkcs7-signature"})
        if resp.status_code != 200:
            raise SimulatorError(f"ADE enrollment refused: {resp.status_code} {resp.text[:300]}")
        if resp.headers.get("content-type", "").split(";")[0] != "application/x-apple-aspen-config":
            raise SimulatorError(f"wrong content type {resp.headers.get('content-type')}")
        self.install_enrollment_profile(resp.content)
        self.scep_enroll()
        self.state.awaiting_configuration = await_configuration
        for step in (self.authenticate, self.token_update):
            r = step()
            if r.status_code != 200:
                raise SimulatorError(f"{step.__name__} refused: {r.status_code} {r.text}")
        return resp

    def _answer_DeviceConfigured(self, command):
        if not self.state.awaiting_configuration:
            from .simulator import _Refused

            raise _Refused(12021, "MCMDMErrorDomain", "The device is not awaiting configuration.")
        self.state.awaiting_configuration = False  # Setup Assistant goes on
