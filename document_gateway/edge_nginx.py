"""The shipped nginx template (deploy/nginx/ipad-mdm-edge.conf.template), filled for one instance.

Placeholders are {{NAME}} (nginx's own variables are $name). Every value is checked to be a
plain token before it goes into the configuration, so nothing can smuggle a directive in.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

TEMPLATE = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "ipad-mdm-edge.conf.template"
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
# No whitespace, quotes, semicolons or braces: a value stays one nginx token.
_TOKEN = re.compile(r"[^\s;{}\"'\\$#]+\Z")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class EdgeSite:
    listen: str                 # "443" or "10.0.0.1:443"
    server_name: str
    tls_cert: str
    tls_key: str
    client_ca: str              # the project CA (instance/ca/ca.pem)
    mdm_url: str                # where nginx reaches ipad-mdm, https://mdm.example:8443
    mdm_ca: str                 # CA that signed ipad-mdm's TLS certificate (the project CA by default)
    upstream_url: str           # the document system, http://10.0.0.5:8080
    proxy_secret: str
    client_cert_header: str = "X-Client-Cert"
    max_body: str = "50m"
    mdm_tls_name: str | None = None  # the name on ipad-mdm's certificate, when mdm_url uses an address


def _hostport(url: str, what: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"{what} must be http(s)://host[:port] without a path")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return parts.scheme, f"{host}:{port}", parts.hostname


def render(site: EdgeSite, template: str | None = None) -> str:
    mdm_scheme, mdm_hostport, mdm_name = _hostport(site.mdm_url, "the ipad-mdm URL")
    up_scheme, up_hostport, _ = _hostport(site.upstream_url, "the document system URL")
    if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", site.client_cert_header):
        raise ConfigError("the client certificate header is an HTTP header name")
    if len(site.proxy_secret) < 16 or not re.fullmatch(r"[A-Za-z0-9._~+/=-]+", site.proxy_secret):
        raise ConfigError("the proxy secret must be at least 16 characters of A-Z a-z 0-9 . _ ~ + / = -")
    values = {
        "LISTEN": site.listen, "SERVER_NAME": site.server_name, "TLS_CERT": site.tls_cert, "TLS_KEY": site.tls_key,
        "CLIENT_CA": site.client_ca, "MDM_SCHEME": mdm_scheme, "MDM_HOSTPORT": mdm_hostport, "MDM_TLS_NAME": site.mdm_tls_name or mdm_name,
        "MDM_CA": site.mdm_ca, "UPSTREAM_SCHEME": up_scheme, "UPSTREAM_HOSTPORT": up_hostport,
        "PROXY_SECRET": site.proxy_secret, "CLIENT_CERT_HEADER": site.client_cert_header, "MAX_BODY": site.max_body,
    }
    for name, value in values.items():
        if not _TOKEN.match(str(value)):
            raise ConfigError(f"{name.lower()} must be one word without quotes, ';', '{{', '}}' or '$'")
    text = template if template is not None else TEMPLATE.read_text(encoding="utf-8")

    def fill(m):
        if m.group(1) not in values:
            raise ConfigError(f"the template names an unknown value {m.group(1)}")
        return str(values[m.group(1)])

    return _PLACEHOLDER.sub(fill, text)
