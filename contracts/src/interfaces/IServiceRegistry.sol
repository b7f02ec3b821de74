// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAccountRegistry} from "./IAccountRegistry.sol";

/// @title IServiceRegistry
/// @notice Service subscriptions of DecentraSpace accounts: hosting, storage, domains and databases, their
/// state (Active, Paused, Suspended, Cancelled), prices per hour by kind and tier, tier limits, and the
/// expiry of Free-tier services. Only Active, unexpired services are chargeable. Every piece of state can
/// be rebuilt from the events below.
interface IServiceRegistry {
    /// @notice What a service provides.
    enum ServiceKind {
        StaticHosting,
        DynamicHosting,
        Storage,
        Domain,
        Database
    }

    /// @notice The lifecycle of a service. Cancelled is final.
    enum ServiceState {
        None,
        Active,
        Paused,
        Suspended,
        Cancelled
    }

    /// @notice One service's record.
    /// @param owner The account that owns the service
    /// @param kind What the service provides
    /// @param state Its state
    /// @param createdAt When it was created (unix seconds)
    /// @param expiresAt When it expires while its owner is on the Free tier (0: never)
    /// @param ref An off-chain reference chosen at creation (e.g. a hash of the site name)
    struct Service {
        address owner;
        ServiceKind kind;
        ServiceState state;
        uint64 createdAt;
        uint64 expiresAt;
        bytes32 ref;
    }

    /// @notice A service was created, Active.
    event ServiceCreated(
        uint256 indexed serviceId, address indexed owner, ServiceKind kind, bytes32 ref, uint64 expiresAt
    );
    /// @notice A service was paused by its owner or an operator.
    event ServicePaused(uint256 indexed serviceId, address indexed by);
    /// @notice A paused or suspended service was resumed.
    event ServiceResumed(uint256 indexed serviceId, address indexed by);
    /// @notice A service was suspended by an operator (e.g. its owner ran out of credit).
    event ServiceSuspended(uint256 indexed serviceId, address indexed by);
    /// @notice A service was cancelled, for good.
    event ServiceCancelled(uint256 indexed serviceId, address indexed by);
    /// @notice A service's expiry was set (0: never).
    event ServiceExpirySet(uint256 indexed serviceId, uint64 expiresAt);
    /// @notice The hourly price of a kind of service for a tier was set, in credit units.
    event PriceSet(ServiceKind indexed kind, IAccountRegistry.Tier indexed tier, uint256 creditsPerHour);
    /// @notice How many non-cancelled services of a kind an account of a tier may hold was set.
    event TierLimitSet(ServiceKind indexed kind, IAccountRegistry.Tier indexed tier, uint32 limit);

    /// @notice A zero address was given where an address is required.
    error ServiceRegistryZeroAddress();
    /// @notice No service has this id.
    error ServiceRegistryUnknownService(uint256 serviceId);
    /// @notice The caller neither owns the service nor holds OPERATOR_ROLE.
    error ServiceRegistryNotOwner(uint256 serviceId, address caller);
    /// @notice The service's state does not allow this action.
    error ServiceRegistryInvalidState(uint256 serviceId, ServiceState state);
    /// @notice The owner holds as many services of this kind as its tier allows.
    error ServiceRegistryTierLimitExceeded(address owner, ServiceKind kind, uint32 limit);
    /// @notice The owner is not registered, or is suspended.
    error ServiceRegistryAccountNotActive(address owner);
    /// @notice The owner's balance does not cover one hour of the service.
    error ServiceRegistryInsufficientCredit(uint256 serviceId, uint256 balance, uint256 required);
    /// @notice The owner's balance does not cover one hour of a service of this kind at its tier's price,
    /// so it cannot be opened.
    error ServiceRegistryInsufficientCreditToOpen(
        address owner, ServiceKind kind, uint256 balance, uint256 required
    );
    /// @notice The service expired.
    error ServiceRegistryServiceExpired(uint256 serviceId, uint64 expiresAt);

    /// @notice Creates a service owned by the caller, within its tier's limit and only when the owner's balance
    /// covers one hour of its price (a price of zero needs none). Free-tier services expire
    /// after the free-tier duration.
    /// @return serviceId The new service's id (ids start at 1)
    function createService(ServiceKind kind, bytes32 ref) external returns (uint256 serviceId);

    /// @notice Creates a service for `owner` (OPERATOR_ROLE), e.g. the storage service at a first upload.
    /// @return serviceId The new service's id
    function createServiceFor(address owner, ServiceKind kind, bytes32 ref)
        external
        returns (uint256 serviceId);

    /// @notice Pauses an Active service (its owner, or OPERATOR_ROLE on the owner's request).
    function pause(uint256 serviceId) external;

    /// @notice Resumes a Paused or Suspended service (its owner, or OPERATOR_ROLE). The owner must be active,
    /// the service unexpired, and the balance must cover one hour of its price.
    function resume(uint256 serviceId) external;

    /// @notice Suspends an Active or Paused service (OPERATOR_ROLE).
    function suspend(uint256 serviceId) external;

    /// @notice Cancels a service for good (its owner, or OPERATOR_ROLE).
    function cancel(uint256 serviceId) external;

    /// @notice Sets a service's expiry (OPERATOR_ROLE); 0 means it never expires.
    function setExpiry(uint256 serviceId, uint64 expiresAt) external;

    /// @notice Sets the hourly price of a kind of service for a tier (DEFAULT_ADMIN_ROLE).
    function setPrice(ServiceKind kind, IAccountRegistry.Tier tier, uint256 creditsPerHour) external;

    /// @notice Sets how many non-cancelled services of a kind an account of a tier may hold
    /// (DEFAULT_ADMIN_ROLE).
    function setTierLimit(ServiceKind kind, IAccountRegistry.Tier tier, uint32 limit) external;

    /// @notice One service's record.
    function serviceOf(uint256 serviceId) external view returns (Service memory);

    /// @notice The owner of a service (zero when it does not exist).
    function ownerOf(uint256 serviceId) external view returns (address);

    /// @notice Whether a service expired: it has an expiry, the expiry passed, and its owner is on the Free
    /// tier (a Paid owner's services do not expire).
    function isExpired(uint256 serviceId) external view returns (bool);

    /// @notice Whether a service may be charged now: Active and not expired.
    function isChargeable(uint256 serviceId) external view returns (bool);

    /// @notice The hourly price of a service for its owner's tier now.
    function priceOf(uint256 serviceId) external view returns (uint256);

    /// @notice The hourly price of a kind of service for a tier.
    function priceFor(ServiceKind kind, IAccountRegistry.Tier tier) external view returns (uint256);

    /// @notice How many non-cancelled services of a kind an account of a tier may hold.
    function tierLimit(ServiceKind kind, IAccountRegistry.Tier tier) external view returns (uint32);

    /// @notice How many non-cancelled services of a kind an account holds.
    function openServices(address owner, ServiceKind kind) external view returns (uint32);

    /// @notice How many services were ever created (the highest id).
    function serviceCount() external view returns (uint256);
}
