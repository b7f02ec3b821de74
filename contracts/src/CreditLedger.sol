// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ICreditLedger} from "./interfaces/ICreditLedger.sol";
import {IServiceRegistry} from "./interfaces/IServiceRegistry.sol";
import {PlatformUpgradeable} from "./utils/PlatformUpgradeable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

/// @title CreditLedger
/// @notice Credit balances of DecentraSpace accounts (6 decimals: 1 credit unit = 1 micro-USD).
/// Invariant: the sum of all balances equals `totalCredited() - totalDebited()`. A payment reference credits
/// at most once and a usage reference charges at most once, so retried payments and meter batches are safe.
/// A usage tied to a service is charged only while the ServiceRegistry says the service is chargeable.
contract CreditLedger is ICreditLedger, PlatformUpgradeable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice May credit card payments.
    bytes32 public constant PAYMENT_ORACLE_ROLE = keccak256("PAYMENT_ORACLE_ROLE");
    /// @notice May charge usage.
    bytes32 public constant BILLING_ROLE = keccak256("BILLING_ROLE");

    uint256 private constant WAD = 1e18;

    /// @custom:storage-location erc7201:decentraspace.storage.CreditLedger
    struct CreditLedgerStorage {
        mapping(address account => uint256) balances;
        mapping(address token => uint256) tokenRates;
        mapping(bytes32 paymentRef => bool) usedPaymentRefs;
        mapping(bytes32 usageRef => bool) usedUsageRefs;
        uint256 totalCredited;
        uint256 totalDebited;
        IServiceRegistry serviceRegistry;
    }

    // keccak256(abi.encode(uint256(keccak256("decentraspace.storage.CreditLedger")) - 1)) & ~bytes32(uint256(0xff))
    bytes32 private constant STORAGE_LOCATION =
        0xa9e4237e07a7d3126e46e8d5e440c5e421f14cd48cb2747044a082c2af6ad400;

    /// @custom:oz-upgrades-unsafe-allow constructor
    constructor(address trustedForwarder_) PlatformUpgradeable(trustedForwarder_) {}

    /// @notice Initialises the proxy: `admin` gets DEFAULT_ADMIN_ROLE. Deductions tied to a service need
    /// `setServiceRegistry` first.
    function initialize(address admin) external initializer {
        if (admin == address(0)) revert CreditLedgerZeroAddress();
        __Platform_init(admin);
    }

    /// @inheritdoc ICreditLedger
    function recharge(address token, uint256 amount) external nonReentrant returns (uint256) {
        return _recharge(_msgSender(), token, amount);
    }

    /// @inheritdoc ICreditLedger
    function rechargeWithPermit(
        address token,
        uint256 amount,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external nonReentrant returns (uint256) {
        address account = _msgSender();
        // A permit seen in the mempool can be submitted by anyone first; the allowance then exists already,
        // so a failed permit is not fatal and the transfer decides.
        try IERC20Permit(token).permit(account, address(this), amount, deadline, v, r, s) {} catch {}
        return _recharge(account, token, amount);
    }

    /// @inheritdoc ICreditLedger
    function creditFiat(address account, uint256 credits, bytes32 paymentRef)
        external
        onlyRole(PAYMENT_ORACLE_ROLE)
    {
        if (account == address(0)) revert CreditLedgerZeroAddress();
        if (credits == 0) revert CreditLedgerZeroAmount();
        if (paymentRef == bytes32(0)) revert CreditLedgerZeroRef();
        CreditLedgerStorage storage $ = _getStorage();
        if ($.usedPaymentRefs[paymentRef]) revert CreditLedgerPaymentRefUsed(paymentRef);
        $.usedPaymentRefs[paymentRef] = true;
        uint256 balanceAfter = _credit($, account, credits);
        emit FiatCredited(account, paymentRef, credits, balanceAfter);
    }

    /// @inheritdoc ICreditLedger
    function deduct(address account, uint256 serviceId, uint256 credits, bytes32 usageRef)
        external
        onlyRole(BILLING_ROLE)
    {
        CreditLedgerStorage storage $ = _getStorage();
        _claimUsageRef($, account, credits, usageRef);
        if (!_isChargeable($, account, serviceId)) {
            revert CreditLedgerServiceNotChargeable(serviceId, account);
        }
        uint256 balance = $.balances[account];
        if (balance < credits) revert CreditLedgerInsufficientBalance(account, balance, credits);
        _debit($, account, serviceId, credits, usageRef);
    }

    /// @inheritdoc ICreditLedger
    function deductBatch(
        address[] calldata accounts,
        uint256[] calldata serviceIds,
        uint256[] calldata credits,
        bytes32[] calldata usageRefs
    ) external onlyRole(BILLING_ROLE) {
        uint256 n = accounts.length;
        if (n == 0 || serviceIds.length != n || credits.length != n || usageRefs.length != n) {
            revert CreditLedgerInvalidBatch();
        }
        CreditLedgerStorage storage $ = _getStorage();
        for (uint256 i; i < n; ++i) {
            address account = accounts[i];
            if (!_isChargeable($, account, serviceIds[i])) {
                // Checked before the reference is claimed: a skipped item can be charged by a later batch.
                emit DeductionSkipped(account, serviceIds[i], usageRefs[i]);
                continue;
            }
            _claimUsageRef($, account, credits[i], usageRefs[i]);
            _debit($, account, serviceIds[i], Math.min(credits[i], $.balances[account]), usageRefs[i]);
        }
    }

    /// @inheritdoc ICreditLedger
    function setTokenRate(address token, uint256 creditsPerTokenWad) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (token == address(0)) revert CreditLedgerZeroAddress();
        _getStorage().tokenRates[token] = creditsPerTokenWad;
        emit TokenRateSet(token, creditsPerTokenWad);
    }

    /// @inheritdoc ICreditLedger
    function withdraw(address token, address to, uint256 amount)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
        nonReentrant
    {
        if (token == address(0) || to == address(0)) {
            revert CreditLedgerZeroAddress();
        }
        if (amount == 0) revert CreditLedgerZeroAmount();
        IERC20(token).safeTransfer(to, amount);
        emit TreasuryWithdrawn(token, to, amount);
    }

    /// @inheritdoc ICreditLedger
    function setServiceRegistry(address serviceRegistry_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (serviceRegistry_ == address(0)) revert CreditLedgerZeroAddress();
        _getStorage().serviceRegistry = IServiceRegistry(serviceRegistry_);
        emit ServiceRegistryChanged(serviceRegistry_);
    }

    /// @inheritdoc ICreditLedger
    function balanceOf(address account) external view returns (uint256) {
        return _getStorage().balances[account];
    }

    /// @inheritdoc ICreditLedger
    function tokenRate(address token) external view returns (uint256) {
        return _getStorage().tokenRates[token];
    }

    /// @inheritdoc ICreditLedger
    function creditsFor(address token, uint256 amount) public view returns (uint256) {
        return Math.mulDiv(amount, _getStorage().tokenRates[token], WAD);
    }

    /// @inheritdoc ICreditLedger
    function isPaymentRefUsed(bytes32 paymentRef) external view returns (bool) {
        return _getStorage().usedPaymentRefs[paymentRef];
    }

    /// @inheritdoc ICreditLedger
    function isUsageRefUsed(bytes32 usageRef) external view returns (bool) {
        return _getStorage().usedUsageRefs[usageRef];
    }

    /// @inheritdoc ICreditLedger
    function totalCredited() external view returns (uint256) {
        return _getStorage().totalCredited;
    }

    /// @inheritdoc ICreditLedger
    function totalDebited() external view returns (uint256) {
        return _getStorage().totalDebited;
    }

    /// @inheritdoc ICreditLedger
    function serviceRegistry() external view returns (address) {
        return address(_getStorage().serviceRegistry);
    }

    function _recharge(address account, address token, uint256 amount) private returns (uint256 credits) {
        if (amount == 0) revert CreditLedgerZeroAmount();
        CreditLedgerStorage storage $ = _getStorage();
        if ($.tokenRates[token] == 0) revert CreditLedgerUnsupportedToken(token);

        // Credit what arrived, so a token that takes a fee on transfer cannot mint credits it did not pay.
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(account, address(this), amount);
        uint256 received = IERC20(token).balanceOf(address(this)) - before;

        credits = creditsFor(token, received);
        if (credits == 0) revert CreditLedgerAmountTooSmall(amount);
        uint256 balanceAfter = _credit($, account, credits);
        emit CreditsRecharged(account, token, received, credits, balanceAfter);
    }

    function _credit(CreditLedgerStorage storage $, address account, uint256 credits)
        private
        returns (uint256 balanceAfter)
    {
        balanceAfter = $.balances[account] + credits;
        $.balances[account] = balanceAfter;
        $.totalCredited += credits;
    }

    function _claimUsageRef(CreditLedgerStorage storage $, address account, uint256 credits, bytes32 usageRef)
        private
    {
        if (account == address(0)) revert CreditLedgerZeroAddress();
        if (credits == 0) revert CreditLedgerZeroAmount();
        if (usageRef == bytes32(0)) revert CreditLedgerZeroRef();
        if ($.usedUsageRefs[usageRef]) revert CreditLedgerUsageRefUsed(usageRef);
        $.usedUsageRefs[usageRef] = true;
    }

    function _debit(
        CreditLedgerStorage storage $,
        address account,
        uint256 serviceId,
        uint256 credits,
        bytes32 usageRef
    ) private {
        uint256 balanceAfter = $.balances[account] - credits;
        $.balances[account] = balanceAfter;
        $.totalDebited += credits;
        emit CreditsDeducted(account, serviceId, credits, balanceAfter, usageRef);
        if (balanceAfter == 0) emit CreditDepleted(account);
    }

    /// @dev Usage outside any service (id 0) is always chargeable; a service's usage only while the service
    /// is chargeable and owned by the account.
    function _isChargeable(CreditLedgerStorage storage $, address account, uint256 serviceId)
        private
        view
        returns (bool)
    {
        if (serviceId == 0) return true;
        IServiceRegistry registry = $.serviceRegistry;
        return address(registry) != address(0) && registry.ownerOf(serviceId) == account
            && registry.isChargeable(serviceId);
    }

    function _getStorage() private pure returns (CreditLedgerStorage storage $) {
        assembly {
            $.slot := STORAGE_LOCATION
        }
    }
}
