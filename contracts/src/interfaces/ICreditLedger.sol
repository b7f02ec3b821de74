// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ICreditLedger
/// @notice Credit balances of DecentraSpace accounts. Credits have 6 decimals (1 credit unit = 1 micro-USD).
/// They come in through ERC-20 recharges at an admin-set rate or card payments confirmed by the payment
/// oracle, and go out through usage deductions made by the billing role. Every balance can be rebuilt
/// from the events below.
interface ICreditLedger {
    /// @notice Credits were bought with an ERC-20 token.
    /// @param account The account credited
    /// @param token The token paid
    /// @param amount The token amount received, in the token's base units
    /// @param credits The credits added
    /// @param balanceAfter The account's balance after the recharge
    event CreditsRecharged(
        address indexed account, address indexed token, uint256 amount, uint256 credits, uint256 balanceAfter
    );

    /// @notice Credits were bought by card and confirmed by the payment oracle.
    /// @param account The account credited
    /// @param paymentRef The payment provider's reference, credited at most once
    /// @param credits The credits added
    /// @param balanceAfter The account's balance after the credit
    event FiatCredited(
        address indexed account, bytes32 indexed paymentRef, uint256 credits, uint256 balanceAfter
    );

    /// @notice Credits were charged for usage.
    /// @param account The account charged
    /// @param serviceId The service the usage belongs to (0: not tied to a service)
    /// @param credits The credits charged (in a batch, at most the balance there was)
    /// @param balanceAfter The account's balance after the charge
    /// @param usageRef The usage reference, charged at most once
    event CreditsDeducted(
        address indexed account,
        uint256 indexed serviceId,
        uint256 credits,
        uint256 balanceAfter,
        bytes32 usageRef
    );

    /// @notice A batch item was not charged because its service is not chargeable (paused, suspended,
    /// cancelled, expired, or not owned by the account). Its usage reference stays unused.
    /// @param account The account of the item
    /// @param serviceId The service of the item
    /// @param usageRef The usage reference of the item
    event DeductionSkipped(address indexed account, uint256 indexed serviceId, bytes32 usageRef);

    /// @notice A deduction left the account without credit.
    /// @param account The account
    event CreditDepleted(address indexed account);

    /// @notice The rate of a token changed.
    /// @param token The token
    /// @param creditsPerTokenWad Credit units per token base unit, scaled by 1e18 (0: token not accepted)
    event TokenRateSet(address indexed token, uint256 creditsPerTokenWad);

    /// @notice Tokens were withdrawn from the treasury.
    /// @param token The token
    /// @param to The receiver
    /// @param amount The amount, in the token's base units
    event TreasuryWithdrawn(address indexed token, address indexed to, uint256 amount);

    /// @notice The ServiceRegistry that deductions are checked against changed.
    /// @param serviceRegistry The new registry
    event ServiceRegistryChanged(address indexed serviceRegistry);

    /// @notice A zero address was given where an address is required.
    error CreditLedgerZeroAddress();
    /// @notice A zero amount was given where a positive one is required.
    error CreditLedgerZeroAmount();
    /// @notice A zero reference was given.
    error CreditLedgerZeroRef();
    /// @notice The token is not accepted (no rate set).
    error CreditLedgerUnsupportedToken(address token);
    /// @notice The amount buys less than one credit unit.
    error CreditLedgerAmountTooSmall(uint256 amount);
    /// @notice The payment reference was credited already.
    error CreditLedgerPaymentRefUsed(bytes32 paymentRef);
    /// @notice The usage reference was charged already.
    error CreditLedgerUsageRefUsed(bytes32 usageRef);
    /// @notice The account has too little credit.
    error CreditLedgerInsufficientBalance(address account, uint256 balance, uint256 required);
    /// @notice The service is not chargeable now (see `DeductionSkipped`).
    error CreditLedgerServiceNotChargeable(uint256 serviceId, address account);
    /// @notice The arrays of a batch differ in length or are empty.
    error CreditLedgerInvalidBatch();

    /// @notice Buys credits with `amount` of `token`, which the caller approved to this contract.
    /// @return credits The credits added
    function recharge(address token, uint256 amount) external returns (uint256 credits);

    /// @notice Buys credits with `amount` of `token`, approved by an EIP-2612 permit of the caller.
    /// @return credits The credits added
    function rechargeWithPermit(
        address token,
        uint256 amount,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external returns (uint256 credits);

    /// @notice Credits a card payment (PAYMENT_ORACLE_ROLE), at most once per payment reference.
    function creditFiat(address account, uint256 credits, bytes32 paymentRef) external;

    /// @notice Charges one usage (BILLING_ROLE). Reverts when the balance is short or the service is not
    /// chargeable.
    function deduct(address account, uint256 serviceId, uint256 credits, bytes32 usageRef) external;

    /// @notice Charges many usages at once (BILLING_ROLE). An item whose service is not chargeable is skipped
    /// first (`DeductionSkipped`, its reference left unused). Atomic on the references of the other items: a
    /// reused one reverts the whole batch, so a retried batch never charges twice. An item larger than the
    /// balance charges what is left.
    function deductBatch(
        address[] calldata accounts,
        uint256[] calldata serviceIds,
        uint256[] calldata credits,
        bytes32[] calldata usageRefs
    ) external;

    /// @notice Sets a token's rate (DEFAULT_ADMIN_ROLE); 0 stops accepting it.
    function setTokenRate(address token, uint256 creditsPerTokenWad) external;

    /// @notice Withdraws recharged tokens to `to` (DEFAULT_ADMIN_ROLE).
    function withdraw(address token, address to, uint256 amount) external;

    /// @notice Sets the ServiceRegistry that deductions are checked against (DEFAULT_ADMIN_ROLE).
    function setServiceRegistry(address serviceRegistry) external;

    /// @notice The credit balance of `account`, in credit units.
    function balanceOf(address account) external view returns (uint256);

    /// @notice The rate of `token`: credit units per base unit, scaled by 1e18.
    function tokenRate(address token) external view returns (uint256);

    /// @notice The credits `amount` of `token` buys now.
    function creditsFor(address token, uint256 amount) external view returns (uint256);

    /// @notice Whether a payment reference was credited.
    function isPaymentRefUsed(bytes32 paymentRef) external view returns (bool);

    /// @notice Whether a usage reference was charged.
    function isUsageRefUsed(bytes32 usageRef) external view returns (bool);

    /// @notice All credits ever added.
    function totalCredited() external view returns (uint256);

    /// @notice All credits ever charged.
    function totalDebited() external view returns (uint256);

    /// @notice The ServiceRegistry that deductions are checked against.
    function serviceRegistry() external view returns (address);
}
