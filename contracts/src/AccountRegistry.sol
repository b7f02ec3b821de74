// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAccountRegistry} from "./interfaces/IAccountRegistry.sol";
import {ICreditLedger} from "./interfaces/ICreditLedger.sol";
import {PlatformUpgradeable} from "./utils/PlatformUpgradeable.sol";

/// @title AccountRegistry
/// @notice Accounts of DecentraSpace: registration, tier, status and the free-tier duration policy.
/// Users register and buy Paid months themselves (directly or through the forwarder); the platform's
/// operator registers users at their first login and applies admins' decisions on tiers and statuses.
contract AccountRegistry is IAccountRegistry, PlatformUpgradeable {
    /// @notice The free-tier duration at deployment: six months.
    uint64 public constant DEFAULT_FREE_TIER_DURATION = 180 days;
    /// @notice The longest free-tier duration: ten years (keeps expiry arithmetic far from overflow).
    uint64 public constant MAX_FREE_TIER_DURATION = 3650 days;
    /// @notice The length of one bought month.
    uint64 public constant MONTH = 30 days;
    /// @notice The most months one upgrade buys.
    uint32 public constant MAX_UPGRADE_MONTHS = 120;

    /// @custom:storage-location erc7201:decentraspace.storage.AccountRegistry
    struct AccountRegistryStorage {
        mapping(address account => Account) accounts;
        uint64 freeTierDuration;
        uint256 paidTierPrice;
        ICreditLedger creditLedger;
        uint256 upgradeNonce;
    }

    // keccak256(abi.encode(uint256(keccak256("decentraspace.storage.AccountRegistry")) - 1)) & ~bytes32(uint256(0xff))
    bytes32 private constant STORAGE_LOCATION =
        0x7d5cbcdb0e3279560e1c77b8860b6e64ab94e142a8526580c6e9e4a07a481c00;

    /// @custom:oz-upgrades-unsafe-allow constructor
    constructor(address trustedForwarder_) PlatformUpgradeable(trustedForwarder_) {}

    /// @notice Initialises the proxy: `admin` gets DEFAULT_ADMIN_ROLE; the free-tier duration starts at six
    /// months; upgrades stay off until a ledger and a price are set.
    function initialize(address admin) external initializer {
        if (admin == address(0)) revert AccountRegistryZeroAddress();
        __Platform_init(admin);
        _setFreeTierDuration(DEFAULT_FREE_TIER_DURATION);
    }

    /// @inheritdoc IAccountRegistry
    function register() external {
        _register(_msgSender());
    }

    /// @inheritdoc IAccountRegistry
    function registerFor(address account) external onlyRole(OPERATOR_ROLE) {
        if (account == address(0)) revert AccountRegistryZeroAddress();
        _register(account);
    }

    /// @inheritdoc IAccountRegistry
    function setTier(address account, Tier tier, uint64 expiresAt) external onlyRole(OPERATOR_ROLE) {
        Account storage acct = _registered(account);
        if (tier == Tier.Free ? expiresAt != 0 : (expiresAt != 0 && expiresAt <= block.timestamp)) {
            revert AccountRegistryInvalidExpiry(expiresAt);
        }
        acct.tier = tier;
        acct.tierExpiresAt = expiresAt;
        emit TierChanged(account, tier, expiresAt);
    }

    /// @inheritdoc IAccountRegistry
    function setStatus(address account, AccountStatus status) external onlyRole(OPERATOR_ROLE) {
        if (status == AccountStatus.Unregistered) revert AccountRegistryInvalidStatus();
        _registered(account).status = status;
        emit AccountStatusChanged(account, status);
    }

    /// @inheritdoc IAccountRegistry
    function setFreeTierDuration(uint64 duration) external onlyRole(OPERATOR_ROLE) {
        _setFreeTierDuration(duration);
    }

    /// @inheritdoc IAccountRegistry
    function setPaidTierPrice(uint256 creditsPerMonth) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _getStorage().paidTierPrice = creditsPerMonth;
        emit PaidTierPriceChanged(creditsPerMonth);
    }

    /// @inheritdoc IAccountRegistry
    function setCreditLedger(address ledger) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (ledger == address(0)) revert AccountRegistryZeroAddress();
        _getStorage().creditLedger = ICreditLedger(ledger);
        emit CreditLedgerChanged(ledger);
    }

    /// @inheritdoc IAccountRegistry
    function upgrade(uint32 months) external {
        if (months == 0 || months > MAX_UPGRADE_MONTHS) revert AccountRegistryInvalidMonths(months);
        AccountRegistryStorage storage $ = _getStorage();
        if ($.paidTierPrice == 0 || address($.creditLedger) == address(0)) {
            revert AccountRegistryUpgradesDisabled();
        }

        address account = _msgSender();
        Account storage acct = _registered(account);
        if (acct.status == AccountStatus.Suspended) revert AccountRegistryAccountSuspended(account);
        bool paidNow = _effectiveTier(acct) == Tier.Paid;
        if (paidNow && acct.tierExpiresAt == 0) revert AccountRegistryPermanentlyPaid(account);

        uint64 start = paidNow ? acct.tierExpiresAt : uint64(block.timestamp);
        uint64 expiresAt = start + MONTH * months;
        uint256 credits = $.paidTierPrice * months;
        bytes32 usageRef = keccak256(abi.encode(address(this), "upgrade", account, $.upgradeNonce++));

        acct.tier = Tier.Paid;
        acct.tierExpiresAt = expiresAt;
        emit TierChanged(account, Tier.Paid, expiresAt);
        emit AccountUpgraded(account, months, credits, usageRef);

        // Charged last: the ledger is a platform contract, and a short balance reverts everything above.
        $.creditLedger.deduct(account, 0, credits, usageRef);
    }

    /// @inheritdoc IAccountRegistry
    function accountOf(address account) external view returns (Account memory) {
        return _getStorage().accounts[account];
    }

    /// @inheritdoc IAccountRegistry
    function isActive(address account) external view returns (bool) {
        return _getStorage().accounts[account].status == AccountStatus.Active;
    }

    /// @inheritdoc IAccountRegistry
    function effectiveTier(address account) external view returns (Tier) {
        return _effectiveTier(_getStorage().accounts[account]);
    }

    /// @inheritdoc IAccountRegistry
    function freeTierDuration() external view returns (uint64) {
        return _getStorage().freeTierDuration;
    }

    /// @inheritdoc IAccountRegistry
    function paidTierPrice() external view returns (uint256) {
        return _getStorage().paidTierPrice;
    }

    /// @inheritdoc IAccountRegistry
    function creditLedger() external view returns (address) {
        return address(_getStorage().creditLedger);
    }

    function _register(address account) private {
        Account storage acct = _getStorage().accounts[account];
        if (acct.status != AccountStatus.Unregistered) revert AccountRegistryAlreadyRegistered(account);
        acct.status = AccountStatus.Active;
        acct.registeredAt = uint64(block.timestamp);
        emit AccountRegistered(account, uint64(block.timestamp));
    }

    function _setFreeTierDuration(uint64 duration) private {
        if (duration == 0 || duration > MAX_FREE_TIER_DURATION) revert AccountRegistryInvalidDuration();
        _getStorage().freeTierDuration = duration;
        emit FreeTierDurationChanged(duration);
    }

    function _registered(address account) private view returns (Account storage acct) {
        acct = _getStorage().accounts[account];
        if (acct.status == AccountStatus.Unregistered) revert AccountRegistryNotRegistered(account);
    }

    function _effectiveTier(Account storage acct) private view returns (Tier) {
        if (acct.tier == Tier.Paid && (acct.tierExpiresAt == 0 || acct.tierExpiresAt > block.timestamp)) {
            return Tier.Paid;
        }
        return Tier.Free;
    }

    function _getStorage() private pure returns (AccountRegistryStorage storage $) {
        assembly {
            $.slot := STORAGE_LOCATION
        }
    }
}
