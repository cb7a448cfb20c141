"""Apple's declaration status reason codes in the office's words (Vietnamese) and in English.

A code the table does not know is described generically: no raw code reaches a Vietnamese page.
"""
from __future__ import annotations

REASONS: dict[str, tuple[str, str]] = {
    "Error.ActivationFailed": ("Không kích hoạt được do khai báo kích hoạt liên quan bị lỗi",
                               "Cannot be activated because an activation failed"),
    "Error.AppStoreDisabled": ("App Store đang bị tắt trên thiết bị", "The App Store is disabled"),
    "Error.AssetCannotBeDeserialized": ("Dữ liệu tài nguyên không đúng định dạng",
                                        "The asset data does not have the expected format"),
    "Error.AssetCannotBeDownloaded": ("Thiết bị không tải được dữ liệu tài nguyên", "The asset data cannot be downloaded"),
    "Error.AssetCannotBeVerified": ("Không kiểm tra được dữ liệu tài nguyên đã tải",
                                    "The downloaded asset data cannot be verified"),
    "Error.ConfigurationCannotBeApplied": ("Thiết bị không áp dụng được cấu hình",
                                           "The configuration cannot be applied to the device"),
    "Error.ConfigurationCannotBeDeserialized": ("Nội dung cấu hình không hợp lệ", "The configuration is not valid"),
    "Error.ConfigurationFailed": ("Không kích hoạt được do cấu hình liên quan bị lỗi",
                                  "Cannot be activated because a configuration failed"),
    "Error.ConfigurationIsInvalid": ("Cấu hình không phù hợp để áp dụng trên thiết bị",
                                     "The configuration is not valid for this device"),
    "Error.ConfigurationNotSupported": ("Thiết bị không hỗ trợ loại cấu hình này",
                                        "The configuration is not supported on this device"),
    "Error.DownloadFailed": ("Tải ứng dụng không thành công", "The app download failed"),
    "Error.DuplicateConfiguredApp": ("Ứng dụng đã được quản lý theo khai báo khác", "The app is already managed"),
    "Error.InstallFailed": ("Cài đặt ứng dụng không thành công", "The app install failed"),
    "Error.InvalidAppID": ("Không tìm thấy ứng dụng theo mã đã khai báo", "The app ID could not be found"),
    "Error.InvalidPayload": ("Khai báo chưa được tải đầy đủ", "A declaration is not fully loaded"),
    "Error.LicenseNotFound": ("Không có giấy phép cho ứng dụng", "No license for the app was available"),
    "Error.MissingAssets": ("Thiếu tài nguyên mà cấu hình cần", "Assets the configuration needs are missing"),
    "Error.MissingConfigurations": ("Thiếu cấu hình mà khai báo kích hoạt cần",
                                    "Configurations the activation needs are missing"),
    "Error.MissingState": ("Thiết bị thiếu thông tin trạng thái của khai báo", "Internal state of a declaration is missing"),
    "Error.NotAnApp": ("Dữ liệu tải về không phải là ứng dụng hợp lệ", "The downloaded data is not a valid app"),
    "Error.NotSupported": ("Thiết bị không hỗ trợ ứng dụng này", "The app is not supported on this device"),
    "Error.PredicateFailed": ("Điều kiện kích hoạt bị lỗi khi đánh giá", "A predicate evaluation failed"),
    "Error.UnableToEvaluatePredicate": ("Không đánh giá được điều kiện kích hoạt", "A predicate cannot be evaluated"),
    "Error.UnableToParsePredicate": ("Điều kiện kích hoạt viết sai cú pháp", "A predicate cannot be parsed"),
    "Error.UnableToParsePredicateWithCustomOperator": ("Điều kiện kích hoạt viết sai cú pháp",
                                                       "A predicate with a custom operator cannot be parsed"),
    "Error.Unknown": ("Thiết bị báo lỗi không xác định", "The device reported an unknown error"),
    "Error.UnknownPayloadKeys": ("Khai báo có trường dữ liệu thiết bị không nhận biết",
                                 "The declaration has payload keys the device does not know"),
    "Error.UnmanagedAppAlreadyInstalled": ("Ứng dụng đã được cài ngoài sự quản lý, chưa chuyển sang quản lý được",
                                           "An unmanaged copy of the app is installed"),
    "Error.UpdateFailed": ("Cập nhật ứng dụng không thành công", "The app update failed"),
    "Error.UserRejected": ("Người dùng đã từ chối cho quản lý ứng dụng", "The user rejected management of the app"),
    "Info.NotReferencedByActivation": ("Cấu hình chưa được khai báo kích hoạt nào sử dụng",
                                       "The configuration is not referenced by an activation"),
    "Info.NotReferencedByConfiguration": ("Tài nguyên chưa được cấu hình nào sử dụng",
                                          "The asset is not referenced by a configuration"),
    "Info.Predicate": ("Điều kiện kích hoạt không thoả mãn trên thiết bị này", "A predicate evaluated to false"),
    "Info.UpdateAvailable": ("Có bản cập nhật của ứng dụng", "An update is available for the app"),
}
UNKNOWN = ("Thiết bị báo lỗi khác khi áp dụng khai báo", "The device reported another error")


def describe(code, lang: str = "vi") -> str:
    vi, en = REASONS.get(code if isinstance(code, str) else "", UNKNOWN)
    if lang == "vi":
        return vi
    return en if code in REASONS else f"{en} ({str(code)[:80]})"


def describe_all(reasons, lang: str = "vi") -> list[str]:
    out = []
    for r in reasons or []:
        text = describe(r.get("code") if isinstance(r, dict) else None, lang)
        if text not in out:
            out.append(text)
    return out
