"""com.apple.mobiledevice.passwordpolicy and com.apple.applicationaccess."""

from __future__ import annotations

from .spec import Key, _PayloadSpec, _b, _d, _fail, _i, _s, _strings


# --------------------------------------------------------------------------
# com.apple.mobiledevice.passwordpolicy
# --------------------------------------------------------------------------


def _passcode_rule(label: str, d: dict) -> None:
    # Apple: minutesUntilFailedLoginReset "requires setting 'maxFailedAttempts'".
    if "minutesUntilFailedLoginReset" in d and "maxFailedAttempts" not in d:
        _fail(label, "maxFailedAttempts", "is required when minutesUntilFailedLoginReset is set")


_PASSCODE = _PayloadSpec(
    "com.apple.mobiledevice.passwordpolicy",
    "Passcode",
    (
        _b("allowSimple"),
        _b("forcePIN"),
        _i("maxFailedAttempts", min=2, max=11),
        _i("maxInactivity", min=0, max=15),
        _i("maxPINAgeInDays", min=0, max=730),
        _i("minComplexChars", min=0, max=4),
        _i("minLength", min=0, max=16),
        _b("requireAlphanumeric"),
        _i("pinHistory", min=1, max=50),
        _i("maxGracePeriod", min=0),  # local rule: minutes are never negative
        _i("minutesUntilFailedLoginReset", min=0),
        _b("changeAtNextAuth"),
        _d(
            "customRegex",
            (
                _s(
                    "passwordContentRegex",
                    required=True,
                    check=lambda v: "must not exceed 2048 characters" if len(v) > 2048 else None,
                ),
                Key("passwordContentDescription", "dictionary", values=_s("description")),
            ),
        ),
    ),
    rules=(_passcode_rule,),
)

# --------------------------------------------------------------------------
# com.apple.applicationaccess (every key of Apple's reference)
# --------------------------------------------------------------------------

_RESTRICTION_BOOLEANS = """
allowAccountModification allowActivityContinuation allowAddingGameCenterFriends
allowAirDrop allowAirPlayIncomingRequests allowAirPrint allowAirPrintCredentialsStorage
allowAirPrintiBeaconDiscovery allowAppCellularDataModification allowAppClips
allowAppInstallation allowApplePersonalizedAdvertising allowAppRemoval allowAppsToBeHidden
allowAppsToBeLocked allowARDRemoteManagementModification allowAssistant
allowAssistantUserGeneratedContent allowAssistantWhileLocked allowAutoCorrection
allowAutoDim allowAutomaticAppDownloads allowAutomaticScreenSaver allowAutoUnlock
allowBluetoothModification allowBluetoothSharingModification allowBookstore
allowBookstoreErotica allowCallRecording allowCamera allowCellularPlanModification
allowChat allowCloudAddressBook allowCloudBackup allowCloudBookmarks allowCloudCalendar
allowCloudDesktopAndDocuments allowCloudDocumentSync allowCloudFreeform
allowCloudKeychainSync allowCloudMail allowCloudNotes allowCloudPhotoLibrary
allowCloudPrivateRelay allowCloudReminders allowContentCaching allowContinuousPathKeyboard
allowDefinitionLookup allowDeviceNameModification allowDeviceSleep
allowDiagnosticSubmission allowDiagnosticSubmissionModification allowDictation
allowEnablingRestrictions allowEnterpriseAppTrust allowEnterpriseBookBackup
allowEnterpriseBookMetadataSync allowEraseContentAndSettings allowESIMModification
allowESIMOutgoingTransfers allowExplicitContent allowFileSharingModification
allowFilesNetworkDriveAccess allowFilesUSBDriveAccess allowFindMyDevice allowFindMyFriends
allowFindMyFriendsModification allowFingerprintForUnlock allowFingerprintModification
allowGameCenter allowGenmoji allowGlobalBackgroundFetchWhenRoaming allowHostPairing
allowImagePlayground allowImageWand allowInAppPurchases allowInternetSharingModification
allowiPhoneMirroring allowiPhoneWidgetsOnMac allowiTunes allowiTunesFileSharing
allowKeyboardShortcuts allowLiveVoicemail allowLocalUserCreation
allowLockScreenControlCenter allowLockScreenNotificationsView allowLockScreenTodayView
allowMailPrivacyProtection allowMailSummary allowManagedAppsCloudSync
allowManagedToWriteUnmanagedContacts allowMarketplaceAppInstallation
allowMediaSharingModification allowMultiplayerGaming allowMusicService allowNews allowNFC
allowNotificationsModification allowOpenFromManagedToUnmanaged
allowOpenFromUnmanagedToManaged allowOTAPKIUpdates allowPairedWatch
allowPassbookWhileLocked allowPasscodeModification allowPasswordAutoFill
allowPasswordProximityRequests allowPasswordSharing allowPersonalHotspotModification
allowPersonalizedHandwritingResults allowPhotoStream allowPodcasts allowPredictiveKeyboard
allowPrinterSharingModification allowProximitySetupToNewDevice allowRadioService
allowRapidSecurityResponseInstallation allowRapidSecurityResponseRemoval allowRCSMessaging
allowRemoteAppleEventsModification allowRemoteAppPairing allowRemoteScreenObservation
allowSafari allowScreenShot allowSharedDeviceTemporarySession allowSharedStream
allowSpellCheck allowSpotlightInternetResults allowStartupDiskModification
allowSystemAppRemoval allowTimeMachineBackup allowUIAppInstallation
allowUIConfigurationProfileInstallation allowUniversalControl
allowUnmanagedToReadManagedContacts allowUnpairedExternalBootToRecovery
allowUntrustedTLSPrompt allowUSBRestrictedMode allowVideoConferencing allowVoiceDialing
allowVPNCreation allowWallpaperModification allowWebDistributionAppInstallation
allowWritingTools forceAirDropUnmanaged forceAirPlayIncomingRequestsPairingPassword
forceAirPlayOutgoingRequestsPairingPassword forceAirPrintTrustedTLSRequirement
forceAssistantProfanityFilter forceAuthenticationBeforeAutoFill forceAutomaticDateAndTime
forceBypassScreenCaptureAlert forceClassroomAutomaticallyJoinClasses
forceClassroomRequestPermissionToLeaveClasses forceClassroomUnpromptedAppAndDeviceLock
forceClassroomUnpromptedScreenObservation forceDelayedAppSoftwareUpdates
forceDelayedMajorSoftwareUpdates forceDelayedSoftwareUpdates forceEncryptedBackup
forceITunesStorePasswordEntry forceLimitAdTracking forceOnDeviceOnlyDictation
forceOnDeviceOnlyTranslation forcePreserveESIMOnErase forceWatchWristDetection
forceWiFiPowerOn forceWiFiToAllowedNetworksOnly forceWiFiWhitelisting
requireManagedPasteboard safariAllowAutoFill safariAllowJavaScript safariAllowPopups
safariForceFraudWarning
""".split()

_RESTRICTIONS = _PayloadSpec(
    "com.apple.applicationaccess",
    "Restrictions",
    (
        *(_b(name) for name in _RESTRICTION_BOOLEANS),
        _strings("allowListedAppBundleIDs"),
        _strings("autonomousSingleAppModePermittedAppIDs"),
        _strings("blacklistedAppBundleIDs"),
        _strings("blockedAppBundleIDs"),
        _strings("whitelistedAppBundleIDs"),
        _i("enforcedFingerprintTimeout"),
        _i("enforcedSoftwareUpdateDelay", min=1, max=90),
        _i("enforcedSoftwareUpdateMajorOSDeferredInstallDelay", min=1, max=90),
        _i("enforcedSoftwareUpdateMinorOSDeferredInstallDelay", min=1, max=90),
        _i("enforcedSoftwareUpdateNonOSDeferredInstallDelay", min=1, max=90),
        _i("ratingApps", min=0, max=1000),
        _i("ratingMovies", min=0, max=1000),
        _i("ratingTVShows", min=0, max=1000),
        _s("ratingRegion", allowed=("us", "au", "ca", "de", "fr", "ie", "jp", "nz", "gb")),
        Key("safariAcceptCookies", "real", allowed=(0, 1, 1.5, 2)),
    ),
)

