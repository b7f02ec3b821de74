// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IDomainRegistry
/// @notice Ownership of domains on DecentraSpace: names bought through the platform (recorded by the
/// registrar role, with an expiry) and external names (DNS, ENS, Handshake) whose ownership the verifier
/// role proved to a wallet; and the link from a domain to the hosting service it serves. A domain is keyed
/// by `node = keccak256(bytes(name))` of its normalised name. Every piece of state can be rebuilt from the
/// events below.
interface IDomainRegistry {
    /// @notice How ownership of a domain was established.
    enum OwnershipMethod {
        None,
        Purchase,
        Dns,
        Ens,
        Handshake
    }

    /// @notice One domain's record.
    /// @param owner The wallet that owns it
    /// @param method How ownership was established
    /// @param expiresAt When a purchased name ends (0 for proven external names)
    /// @param serviceId The hosting service it is linked to (0: none)
    struct Domain {
        address owner;
        OwnershipMethod method;
        uint64 expiresAt;
        uint256 serviceId;
    }

    /// @notice A name bought through the platform was recorded.
    event DomainRegistered(bytes32 indexed node, address indexed owner, string name, uint64 expiresAt);
    /// @notice A purchased name was renewed.
    event DomainRenewed(bytes32 indexed node, uint64 expiresAt);
    /// @notice Ownership of an external name was proven to a wallet.
    event DomainVerified(bytes32 indexed node, address indexed owner, string name, OwnershipMethod method);
    /// @notice A domain was linked to a hosting service.
    event DomainLinked(bytes32 indexed node, uint256 indexed serviceId);
    /// @notice A domain was unlinked from its hosting service.
    event DomainUnlinked(bytes32 indexed node, uint256 indexed serviceId);
    /// @notice A domain was released: it has no owner any more.
    event DomainReleased(bytes32 indexed node, address indexed owner);
    /// @notice A purchased name changed hands.
    event DomainTransferred(bytes32 indexed node, address indexed from, address indexed to);
    /// @notice The ServiceRegistry that links are checked against changed.
    event ServiceRegistryChanged(address indexed serviceRegistry);

    /// @notice A zero address was given where an address is required.
    error DomainRegistryZeroAddress();
    /// @notice The name is empty, longer than 253 bytes, or not normalised (upper case, spaces, controls).
    error DomainRegistryInvalidName(string name);
    /// @notice The expiry is not in the future (or, for a renewal, not later than the current one).
    error DomainRegistryInvalidExpiry(uint64 expiresAt);
    /// @notice The method cannot be recorded this way.
    error DomainRegistryInvalidMethod(OwnershipMethod method);
    /// @notice The name is held by a running purchase.
    error DomainRegistryUnavailable(bytes32 node);
    /// @notice The domain is not held (never recorded, released, or its purchase ended).
    error DomainRegistryNotHeld(bytes32 node);
    /// @notice The caller does not own the domain (nor holds the role that may act for owners).
    error DomainRegistryNotOwner(bytes32 node, address caller);
    /// @notice Only names bought through the platform can be renewed or transferred.
    error DomainRegistryNotPurchased(bytes32 node);
    /// @notice The service cannot be linked: not a hosting service, cancelled, or owned by another account.
    error DomainRegistryInvalidService(uint256 serviceId);
    /// @notice The domain is not linked.
    error DomainRegistryNotLinked(bytes32 node);

    /// @notice Records a name bought through the platform (REGISTRAR_ROLE).
    /// @return node The domain's key
    function recordPurchase(string calldata name, address owner, uint64 expiresAt)
        external
        returns (bytes32 node);

    /// @notice Extends a purchased name (REGISTRAR_ROLE).
    function renew(bytes32 node, uint64 expiresAt) external;

    /// @notice Records that `owner` proved ownership of an external name (VERIFIER_ROLE). A newer proof by
    /// another wallet replaces the older one (and its link); a running purchase cannot be overridden.
    /// @return node The domain's key
    function recordVerification(string calldata name, address owner, OwnershipMethod method)
        external
        returns (bytes32 node);

    /// @notice Links a held domain to one of the caller's hosting services (the owner).
    function link(bytes32 node, uint256 serviceId) external;

    /// @notice Unlinks a domain (its owner, or VERIFIER_ROLE for an external name whose proof has gone).
    function unlink(bytes32 node) external;

    /// @notice Gives a domain up (its owner, or VERIFIER_ROLE for an external name whose proof has gone); its
    /// record and name are cleared.
    function release(bytes32 node) external;

    /// @notice Hands a purchased name to another wallet (the owner); its link is dropped.
    function transfer(bytes32 node, address to) external;

    /// @notice Sets the ServiceRegistry that links are checked against (DEFAULT_ADMIN_ROLE).
    function setServiceRegistry(address serviceRegistry) external;

    /// @notice One domain's record.
    function domainOf(bytes32 node) external view returns (Domain memory);

    /// @notice The name recorded for a node.
    function nameOf(bytes32 node) external view returns (string memory);

    /// @notice The owner of a held domain (zero when not held).
    function ownerOf(bytes32 node) external view returns (address);

    /// @notice Whether a domain is held: recorded, not released, and (for a purchase) not expired.
    function isHeld(bytes32 node) external view returns (bool);

    /// @notice The key of a name: keccak256 of its bytes.
    function nodeOf(string calldata name) external pure returns (bytes32);

    /// @notice The ServiceRegistry that links are checked against.
    function serviceRegistry() external view returns (address);
}
