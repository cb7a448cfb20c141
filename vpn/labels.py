"""What people read about VPN providers, campaigns and gateways (Vietnamese, English): one owner for
the console and the reports."""
from __future__ import annotations

CAMPAIGN_STATES = {
    "running": ("Đang thực hiện", "Running"), "paused": ("Tạm dừng", "Paused"),
    "rolling_back": ("Đang quay lại VPN cũ", "Rolling back"), "rolled_back": ("Đã quay lại VPN cũ", "Rolled back"),
    "done": ("Hoàn thành", "Done"),
}
CAMPAIGN_STAGES = {"pilot": ("Các đơn vị thí điểm", "Pilot units"), "all": ("Toàn bộ đơn vị", "All units")}
STEPS = {
    "pending": ("Chờ đến lượt", "Waiting"), "installing": ("Đang cài VPN mới", "Installing the new VPN"),
    "verifying": ("Chờ cổng VPN ghi nhận kết nối", "Waiting for the tunnel"),
    "removing_source": ("Đang gỡ VPN cũ", "Removing the old VPN"), "done": ("Đã chuyển xong", "Moved"),
    "failed": ("Không chuyển được, giữ VPN cũ", "Failed, kept the old VPN"),
    "rolling_back": ("Đang quay lại VPN cũ", "Rolling back"), "rolled_back": ("Đã quay lại VPN cũ", "Rolled back"),
}
# The reason code before ":" (the rest is the iPad's own error domain and code).
FAILURE_REASONS = {
    "tunnel_not_seen": ("Cổng VPN không ghi nhận kết nối bằng VPN mới trong thời hạn; iPad giữ VPN cũ",
                        "No gateway saw the new VPN's tunnel in time; the iPad kept the old VPN"),
    "install_failed": ("iPad từ chối cài hồ sơ VPN mới", "The iPad refused the new VPN profile"),
    "install_not_sent": ("Không tạo được hồ sơ VPN mới cho iPad", "The new VPN profile could not be made"),
    "source_not_removed": ("iPad không gỡ được VPN cũ (VPN mới vẫn hoạt động)",
                           "The iPad did not remove the old VPN (the new one works)"),
    "source_not_reinstalled": ("iPad không cài lại được VPN cũ khi quay lại", "The iPad did not take the old VPN back"),
    "target_not_removed": ("iPad không gỡ được VPN mới khi quay lại", "The iPad did not remove the new VPN"),
    "source_not_rebuildable": ("VPN cũ không do hệ thống cấp nên không cài lại được",
                               "The old VPN was not issued here and cannot be reinstalled"),
}
PROVIDER_KINDS = {"openvpn": ("OpenVPN (ứng dụng OpenVPN Connect)", "OpenVPN (OpenVPN Connect app)"),
                  "vpn_app": ("Ứng dụng VPN chuyên dụng", "Dedicated VPN app"),
                  "wireguard": ("WireGuard (có sẵn)", "WireGuard (built in)"), "ikev2": ("IKEv2 (có sẵn)", "IKEv2 (built in)")}
PROVIDER_AUTH = {"device_certificate": ("Chứng thư số cấp riêng cho từng iPad", "A certificate issued to each iPad"),
                 "imported_identity": ("Chứng thư số nhập từ bên ngoài", "An imported identity")}


def reason_code(reason: str | None) -> str:
    return (reason or "").split(":", 1)[0].strip()
