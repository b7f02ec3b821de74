// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IAccountRegistry
/// @notice Accounts of the DecentraSpace platform: registration, tier (Free or Paid), status, and the
/// free-tier duration policy. Every piece of state can be rebuilt from the events below.
interface IAccountRegistry {
    /// @notice The account tiers. A Paid tier with an expiry in the past counts as Free.
    enum Tier {
        Free,
        Paid
    }

    /// @notice The lifecycle of an account.
    enum AccountStatus {
        Unregistered,
        Active,
        Suspended
    }

    /// @notice One account's record.
    /// @param tier The tier as last set (see `effectiveTier` for the tier in force now)
    /// @param status Unregistered, Active or Suspended
    /// @param registeredAt When the account registered (unix seconds)
    /// @param tierExpiresAt When a Paid tier ends (unix seconds); 0 means it does not end
    struct Account {
        Tier tier;
        AccountStatus status;
        uint64 registeredAt;
        uint64 tierExpiresAt;
    }

    /// @notice An account registered, on the Free tier and Active.
    /// @param account The wallet of the account
    /// @param registeredAt The block timestamp of the registration
    event AccountRegistered(address indexed account, uint64 registeredAt);

    /// @notice An account's tier changed.
    /// @param account The wallet of the account
    /// @param tier The new tier
    /// @param expiresAt When the tier ends (0: never)
    event TierChanged(address indexed account, Tier tier, uint64 expiresAt);

    /// @notice An account's status changed.
    /// @param account The wallet of the account
    /// @param status The new status
    event AccountStatusChanged(address indexed account, AccountStatus status);

    /// @notice An account bought months of the Paid tier with credits.
    /// @param account The wallet of the account
    /// @param months How many months were bought
    /// @param credits The credits charged
    /// @param usageRef The reference of the deduction in the CreditLedger
    event AccountUpgraded(address indexed account, uint32 months, uint256 credits, bytes32 usageRef);

    /// @notice The lifetime of Free-tier services changed.
    /// @param duration The new duration, in seconds
    event FreeTierDurationChanged(uint64 duration);

    /// @notice The price of one month of the Paid tier changed.
    /// @param creditsPerMonth The new price in credit units (0 disables upgrades)
    event PaidTierPriceChanged(uint256 creditsPerMonth);

    /// @notice The CreditLedger that upgrades are paid through changed.
    /// @param ledger The new ledger
    event CreditLedgerChanged(address indexed ledger);

    /// @notice A zero address was given where an address is required.
    error AccountRegistryZeroAddress();
    /// @notice The account is registered already.
    error AccountRegistryAlreadyRegistered(address account);
    /// @notice The account is not registered.
    error AccountRegistryNotRegistered(address account);
    /// @notice The account is suspended.
    error AccountRegistryAccountSuspended(address account);
    /// @notice `Unregistered` cannot be set as a status.
    error AccountRegistryInvalidStatus();
    /// @notice The expiry does not fit the tier (a Free tier has none; a Paid one ends in the future or never).
    error AccountRegistryInvalidExpiry(uint64 expiresAt);
    /// @notice The free-tier duration must be positive and at most ten years.
    error AccountRegistryInvalidDuration();
    /// @notice Upgrades are bought for 1 to `MAX_UPGRADE_MONTHS` months.
    error AccountRegistryInvalidMonths(uint32 months);
    /// @notice Upgrades are off: no price or no ledger is set.
    error AccountRegistryUpgradesDisabled();
    /// @notice The account is Paid without an end already.
    error AccountRegistryPermanentlyPaid(address account);

    /// @notice Registers the caller on the Free tier.
    function register() external;

    /// @notice Registers `account` on its behalf (OPERATOR_ROLE), e.g. at its first login.
    /// @param account The wallet to register
    function registerFor(address account) external;

    /// @notice Sets an account's tier (OPERATOR_ROLE).
    /// @param account The account
    /// @param tier The new tier
    /// @param expiresAt When a Paid tier ends (0: never); must be 0 for Free
    function setTier(address account, Tier tier, uint64 expiresAt) external;

    /// @notice Sets an account's status (OPERATOR_ROLE).
    /// @param account The account
    /// @param status Active or Suspended
    function setStatus(address account, AccountStatus status) external;

    /// @notice Sets how long Free-tier services live (OPERATOR_ROLE).
    /// @param duration The duration in seconds, from 1 to ten years
    function setFreeTierDuration(uint64 duration) external;

    /// @notice Sets the price of one month of the Paid tier (DEFAULT_ADMIN_ROLE).
    /// @param creditsPerMonth The price in credit units; 0 disables upgrades
    function setPaidTierPrice(uint256 creditsPerMonth) external;

    /// @notice Sets the CreditLedger that upgrades are paid through (DEFAULT_ADMIN_ROLE).
    /// @param ledger The ledger, which must grant this contract BILLING_ROLE
    function setCreditLedger(address ledger) external;

    /// @notice Buys `months` of the Paid tier with the caller's credits, extending a running Paid term.
    /// @param months How many months, 1 to `MAX_UPGRADE_MONTHS`
    function upgrade(uint32 months) external;

    /// @notice One account's record.
    function accountOf(address account) external view returns (Account memory);

    /// @notice Whether the account is registered and not suspended.
    function isActive(address account) external view returns (bool);

    /// @notice The tier in force now: Paid only while its term runs.
    function effectiveTier(address account) external view returns (Tier);

    /// @notice How long Free-tier services live, in seconds.
    function freeTierDuration() external view returns (uint64);

    /// @notice The price of one month of the Paid tier, in credit units.
    function paidTierPrice() external view returns (uint256);

    /// @notice The CreditLedger that upgrades are paid through.
    function creditLedger() external view returns (address);
}
