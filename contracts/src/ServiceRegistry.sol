// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAccountRegistry} from "./interfaces/IAccountRegistry.sol";
import {ICreditLedger} from "./interfaces/ICreditLedger.sol";
import {IServiceRegistry} from "./interfaces/IServiceRegistry.sol";
import {PlatformUpgradeable} from "./utils/PlatformUpgradeable.sol";

/// @title ServiceRegistry
/// @notice Service subscriptions of DecentraSpace accounts. Owners create, pause, resume and cancel their
/// services (directly or through the forwarder); the operator acts for owners at their request, suspends
/// services whose owners ran out of credit, and sets expiries. Tier limits are enforced here, at creation.
/// Free-tier services expire after the AccountRegistry's free-tier duration; an expiry only applies while
/// the owner is on the Free tier, so upgrading to Paid keeps a site alive.
contract ServiceRegistry is IServiceRegistry, PlatformUpgradeable {
    /// @custom:storage-location erc7201:decentraspace.storage.ServiceRegistry
    struct ServiceRegistryStorage {
        IAccountRegistry accounts;
        ICreditLedger ledger;
        uint256 serviceCount;
        mapping(uint256 serviceId => Service) services;
        mapping(ServiceKind kind => mapping(IAccountRegistry.Tier tier => uint256)) prices;
        mapping(ServiceKind kind => mapping(IAccountRegistry.Tier tier => uint32)) limits;
        mapping(address owner => mapping(ServiceKind kind => uint32)) openServices;
    }

    // keccak256(abi.encode(uint256(keccak256("decentraspace.storage.ServiceRegistry")) - 1)) & ~bytes32(uint256(0xff))
    bytes32 private constant STORAGE_LOCATION =
        0x134b9e8f04831f18b75072f47e5fb1512bc3370bdb8ac3891a830a4886fa0700;

    /// @custom:oz-upgrades-unsafe-allow constructor
    constructor(address trustedForwarder_) PlatformUpgradeable(trustedForwarder_) {}

    /// @notice Initialises the proxy: `admin` gets DEFAULT_ADMIN_ROLE; tiers, statuses and the free-tier
    /// duration come from `accounts`, balances from `ledger`. All limits start at zero: set them before use.
    function initialize(address admin, address accounts, address ledger) external initializer {
        if (admin == address(0) || accounts == address(0) || ledger == address(0)) {
            revert ServiceRegistryZeroAddress();
        }
        __Platform_init(admin);
        ServiceRegistryStorage storage $ = _getStorage();
        $.accounts = IAccountRegistry(accounts);
        $.ledger = ICreditLedger(ledger);
    }

    /// @inheritdoc IServiceRegistry
    function createService(ServiceKind kind, bytes32 ref) external returns (uint256) {
        return _create(_msgSender(), kind, ref);
    }

    /// @inheritdoc IServiceRegistry
    function createServiceFor(address owner, ServiceKind kind, bytes32 ref)
        external
        onlyRole(OPERATOR_ROLE)
        returns (uint256)
    {
        if (owner == address(0)) revert ServiceRegistryZeroAddress();
        return _create(owner, kind, ref);
    }

    /// @inheritdoc IServiceRegistry
    function pause(uint256 serviceId) external {
        Service storage svc = _ownedOrOperated(serviceId);
        if (svc.state != ServiceState.Active) revert ServiceRegistryInvalidState(serviceId, svc.state);
        svc.state = ServiceState.Paused;
        emit ServicePaused(serviceId, _msgSender());
    }

    /// @inheritdoc IServiceRegistry
    function resume(uint256 serviceId) external {
        Service storage svc = _ownedOrOperated(serviceId);
        if (svc.state != ServiceState.Paused && svc.state != ServiceState.Suspended) {
            revert ServiceRegistryInvalidState(serviceId, svc.state);
        }
        ServiceRegistryStorage storage $ = _getStorage();
        if (!$.accounts.isActive(svc.owner)) revert ServiceRegistryAccountNotActive(svc.owner);
        if (_isExpired($, svc)) revert ServiceRegistryServiceExpired(serviceId, svc.expiresAt);
        uint256 hourly = _priceOf($, svc);
        uint256 balance = $.ledger.balanceOf(svc.owner);
        if (balance < hourly) revert ServiceRegistryInsufficientCredit(serviceId, balance, hourly);
        svc.state = ServiceState.Active;
        emit ServiceResumed(serviceId, _msgSender());
    }

    /// @inheritdoc IServiceRegistry
    function suspend(uint256 serviceId) external onlyRole(OPERATOR_ROLE) {
        Service storage svc = _existing(serviceId);
        if (svc.state != ServiceState.Active && svc.state != ServiceState.Paused) {
            revert ServiceRegistryInvalidState(serviceId, svc.state);
        }
        svc.state = ServiceState.Suspended;
        emit ServiceSuspended(serviceId, _msgSender());
    }

    /// @inheritdoc IServiceRegistry
    function cancel(uint256 serviceId) external {
        Service storage svc = _ownedOrOperated(serviceId);
        if (svc.state == ServiceState.Cancelled) revert ServiceRegistryInvalidState(serviceId, svc.state);
        svc.state = ServiceState.Cancelled;
        --_getStorage().openServices[svc.owner][svc.kind];
        emit ServiceCancelled(serviceId, _msgSender());
    }

    /// @inheritdoc IServiceRegistry
    function setExpiry(uint256 serviceId, uint64 expiresAt) external onlyRole(OPERATOR_ROLE) {
        _existing(serviceId).expiresAt = expiresAt;
        emit ServiceExpirySet(serviceId, expiresAt);
    }

    /// @inheritdoc IServiceRegistry
    function setPrice(ServiceKind kind, IAccountRegistry.Tier tier, uint256 creditsPerHour)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        _getStorage().prices[kind][tier] = creditsPerHour;
        emit PriceSet(kind, tier, creditsPerHour);
    }

    /// @inheritdoc IServiceRegistry
    function setTierLimit(ServiceKind kind, IAccountRegistry.Tier tier, uint32 limit)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        _getStorage().limits[kind][tier] = limit;
        emit TierLimitSet(kind, tier, limit);
    }

    /// @inheritdoc IServiceRegistry
    function serviceOf(uint256 serviceId) external view returns (Service memory) {
        return _getStorage().services[serviceId];
    }

    /// @inheritdoc IServiceRegistry
    function ownerOf(uint256 serviceId) external view returns (address) {
        return _getStorage().services[serviceId].owner;
    }

    /// @inheritdoc IServiceRegistry
    function isExpired(uint256 serviceId) external view returns (bool) {
        ServiceRegistryStorage storage $ = _getStorage();
        return _isExpired($, $.services[serviceId]);
    }

    /// @inheritdoc IServiceRegistry
    function isChargeable(uint256 serviceId) external view returns (bool) {
        ServiceRegistryStorage storage $ = _getStorage();
        Service storage svc = $.services[serviceId];
        return svc.state == ServiceState.Active && !_isExpired($, svc);
    }

    /// @inheritdoc IServiceRegistry
    function priceOf(uint256 serviceId) external view returns (uint256) {
        ServiceRegistryStorage storage $ = _getStorage();
        return _priceOf($, _existing(serviceId));
    }

    /// @inheritdoc IServiceRegistry
    function priceFor(ServiceKind kind, IAccountRegistry.Tier tier) external view returns (uint256) {
        return _getStorage().prices[kind][tier];
    }

    /// @inheritdoc IServiceRegistry
    function tierLimit(ServiceKind kind, IAccountRegistry.Tier tier) external view returns (uint32) {
        return _getStorage().limits[kind][tier];
    }

    /// @inheritdoc IServiceRegistry
    function openServices(address owner, ServiceKind kind) external view returns (uint32) {
        return _getStorage().openServices[owner][kind];
    }

    /// @inheritdoc IServiceRegistry
    function serviceCount() external view returns (uint256) {
        return _getStorage().serviceCount;
    }

    /// @notice The AccountRegistry that tiers and statuses come from.
    function accountRegistry() external view returns (address) {
        return address(_getStorage().accounts);
    }

    /// @notice The CreditLedger that balances come from.
    function creditLedger() external view returns (address) {
        return address(_getStorage().ledger);
    }

    function _create(address owner, ServiceKind kind, bytes32 ref) private returns (uint256 serviceId) {
        ServiceRegistryStorage storage $ = _getStorage();
        IAccountRegistry accounts = $.accounts;
        if (!accounts.isActive(owner)) revert ServiceRegistryAccountNotActive(owner);

        IAccountRegistry.Tier tier = accounts.effectiveTier(owner);
        uint32 limit = $.limits[kind][tier];
        uint32 open = $.openServices[owner][kind];
        if (open >= limit) revert ServiceRegistryTierLimitExceeded(owner, kind, limit);
        // A priced service opens only for an owner whose balance covers its first hour, whoever sends the
        // call (the owner, the forwarder or the operator). Usage not charged yet is the API's to count.
        uint256 hourly = $.prices[kind][tier];
        if (hourly != 0) {
            uint256 balance = $.ledger.balanceOf(owner);
            if (balance < hourly) {
                revert ServiceRegistryInsufficientCreditToOpen(owner, kind, balance, hourly);
            }
        }

        uint64 expiresAt =
            tier == IAccountRegistry.Tier.Free ? uint64(block.timestamp) + accounts.freeTierDuration() : 0;
        serviceId = ++$.serviceCount;
        $.services[serviceId] = Service({
            owner: owner,
            kind: kind,
            state: ServiceState.Active,
            createdAt: uint64(block.timestamp),
            expiresAt: expiresAt,
            ref: ref
        });
        $.openServices[owner][kind] = open + 1;
        emit ServiceCreated(serviceId, owner, kind, ref, expiresAt);
    }

    function _existing(uint256 serviceId) private view returns (Service storage svc) {
        svc = _getStorage().services[serviceId];
        if (svc.state == ServiceState.None) revert ServiceRegistryUnknownService(serviceId);
    }

    function _ownedOrOperated(uint256 serviceId) private view returns (Service storage svc) {
        svc = _existing(serviceId);
        address caller = _msgSender();
        if (caller != svc.owner && !hasRole(OPERATOR_ROLE, caller)) {
            revert ServiceRegistryNotOwner(serviceId, caller);
        }
    }

    function _isExpired(ServiceRegistryStorage storage $, Service storage svc) private view returns (bool) {
        uint64 expiresAt = svc.expiresAt;
        return expiresAt != 0 && block.timestamp >= expiresAt
            && $.accounts.effectiveTier(svc.owner) == IAccountRegistry.Tier.Free;
    }

    function _priceOf(ServiceRegistryStorage storage $, Service storage svc) private view returns (uint256) {
        return $.prices[svc.kind][$.accounts.effectiveTier(svc.owner)];
    }

    function _getStorage() private pure returns (ServiceRegistryStorage storage $) {
        assembly {
            $.slot := STORAGE_LOCATION
        }
    }
}
