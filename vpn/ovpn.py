"""An OpenVPN client configuration (.ovpn) as the VendorConfig of the OpenVPN Connect app.

OpenVPN Connect on iPadOS reads a managed VPN payload (VPNType "VPN", VPNSubType
net.openvpn.connect.app) whose VendorConfig holds the .ovpn directives: one key per directive with
its arguments as a string ("NOARGS" for a bare flag), a repeated directive as "name.2", "name.3", and
an inline block (<ca>…</ca>) as one string whose line breaks are written "\\n". Pure: no storage.

Key material in the file (the client's private key, tls-auth / tls-crypt keys, a PKCS#12, inline
user credentials) is split off as secret: the caller stores it encrypted and never echoes it; it
joins the VendorConfig only inside the signed profile sent to one iPad.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

OPENVPN_CONNECT_BUNDLE_ID = "net.openvpn.connect.app"
MAX_BYTES = 256 * 1024

# Inline blocks and directives that carry secrets; they never appear in a listing or an answer.
SECRET_BLOCKS = ("key", "tls-auth", "tls-crypt", "tls-crypt-v2", "secret", "pkcs12", "auth-user-pass", "http-proxy-user-pass")
# Directives naming a file on the machine that wrote the .ovpn: an iPad cannot read it.
FILE_DIRECTIVES = ("ca", "cert", "key", "tls-auth", "tls-crypt", "tls-crypt-v2", "pkcs12", "secret", "crl-verify",
                   "extra-certs", "dh")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,63}$")


class OvpnError(ValueError):
    """A .ovpn that cannot be turned into a profile; the message says which line and why (`vi`: in Vietnamese)."""

    def __init__(self, message: str, vi: str):
        super().__init__(message)
        self.vi = vi


@dataclass
class OvpnConfig:
    vendor_config: dict[str, str] = field(default_factory=dict)  # what may be shown
    secret_config: dict[str, str] = field(default_factory=dict)  # stored encrypted only
    remotes: list[str] = field(default_factory=list)             # "host port proto", for the listing

    @property
    def has_inline_identity(self) -> bool:
        return "cert" in self.vendor_config and "key" in self.secret_config


def _put(out: dict, name: str, value: str) -> None:
    key, n = name, 1
    while key in out:
        n += 1
        key = f"{name}.{n}"
    out[key] = value


def parse_ovpn(text: str | bytes) -> OvpnConfig:
    """Read a client .ovpn; raises OvpnError naming the line for anything an iPad could not use."""
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise OvpnError(f"the .ovpn file is larger than {MAX_BYTES // 1024} KiB", f"tệp lớn hơn {MAX_BYTES // 1024} KiB.")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise OvpnError("the .ovpn file is not UTF-8 text", "tệp không phải văn bản UTF-8.") from None
    if len(text) > MAX_BYTES:
        raise OvpnError(f"the .ovpn file is larger than {MAX_BYTES // 1024} KiB", f"tệp lớn hơn {MAX_BYTES // 1024} KiB.")
    cfg = OvpnConfig()
    lines = text.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line[0] in "#;":
            continue
        block = re.fullmatch(r"<([a-z0-9-]+)>", line)
        if block:
            name, body, start = block.group(1), [], i
            while i < len(lines) and lines[i].strip() != f"</{name}>":
                body.append(lines[i].rstrip())
                i += 1
            if i >= len(lines):
                raise OvpnError(f"line {start}: <{name}> is never closed", f"dòng {start}: khối <{name}> không có thẻ đóng.")
            i += 1
            value = "\\n".join(b for b in body if b)
            if not value:
                raise OvpnError(f"line {start}: <{name}> is empty", f"dòng {start}: khối <{name}> trống.")
            _put(cfg.secret_config if name in SECRET_BLOCKS else cfg.vendor_config, name, value)
            continue
        parts = line.split(None, 1)
        name = parts[0].lower()
        if not _NAME.match(name):
            raise OvpnError(f"line {i}: {parts[0][:40]!r} is not an OpenVPN directive", f"dòng {i}: “{parts[0][:40]}” không phải chỉ thị OpenVPN.")
        args = parts[1].strip() if len(parts) > 1 else ""
        if name in FILE_DIRECTIVES and args and args != "[inline]":
            raise OvpnError(f"line {i}: '{name}' names a file ({args[:60]}); put it inline as <{name}>…</{name}>, "
                            "an iPad cannot read files of the machine that wrote the .ovpn",
                            f"dòng {i}: “{name}” trỏ tới một tệp ({args[:60]}); vui lòng đưa nội dung vào tệp .ovpn "
                            f"dưới dạng <{name}>…</{name}> vì iPad không đọc được tệp của máy khác.")
        if name == "remote":
            if not args:
                raise OvpnError(f"line {i}: 'remote' needs a server", f"dòng {i}: “remote” thiếu địa chỉ máy chủ.")
            cfg.remotes.append(args)
        if name in SECRET_BLOCKS:
            _put(cfg.secret_config, name, args or "NOARGS")
        else:
            _put(cfg.vendor_config, name, args or "NOARGS")
    if not cfg.remotes:
        raise OvpnError("the .ovpn names no server ('remote' directive)", "tệp không có máy chủ VPN nào (chỉ thị “remote”).")
    if "ca" not in cfg.vendor_config:
        raise OvpnError("the .ovpn has no <ca> block: the iPad could not check the server", "tệp thiếu khối <ca>, iPad không kiểm tra được máy chủ VPN.")
    return cfg
