// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IDomainRegistry} from "./interfaces/IDomainRegistry.sol";
import {IServiceRegistry} from "./interfaces/IServiceRegistry.sol";
import {PlatformUpgradeable} from "./utils/PlatformUpgradeable.sol";

/// @title DomainRegistry
/// @notice Who owns which domain on DecentraSpace, and which hosting service each domain serves. The
/// registrar role records names bought through the platform; the verifier role records external names
/// (DNS, ENS, Handshake) whose ownership it proved off-chain. Owners link, unlink, release and transfer
/// (directly or through the forwarder). Names are stored normalised (lower case, no spaces or controls);
/// the API normalises (IDNA / ENSIP-15) before calling.
contract DomainRegistry is IDomainRegistry, PlatformUpgradeable {
    /// @notice May record purchases and renewals.
    bytes32 public constant REGISTRAR_ROLE = keccak256("REGISTRAR_ROLE");
    /// @notice May record ownership proofs, and unlink or release names whose proof has gone.
    bytes32 public constant VERIFIER_ROLE = keccak256("VERIFIER_ROLE");

    uint256 private constant MAX_NAME_LENGTH = 253;

    /// @custom:storage-location erc7201:decentraspace.storage.DomainRegistry
    struct DomainRegistryStorage {
        IServiceRegistry serviceRegistry;
        mapping(bytes32 node => Domain) domains;
        mapping(bytes32 node => string) names;
    }

    // keccak256(abi.encode(uint256(keccak256("decentraspace.storage.DomainRegistry")) - 1)) & ~bytes32(uint256(0xff))
    bytes32 private constant STORAGE_LOCATION =
        0x6cde6514f33f5df1037ef0f18a6e0567bfac5e0a05e9e9afe95b82a13a40b500;

    /// @custom:oz-upgrades-unsafe-allow constructor
    constructor(address trustedForwarder_) PlatformUpgradeable(trustedForwarder_) {}

    /// @notice Initialises the proxy: `admin` gets DEFAULT_ADMIN_ROLE; links are checked against
    /// `serviceRegistry_`.
    function initialize(address admin, address serviceRegistry_) external initializer {
        if (admin == address(0) || serviceRegistry_ == address(0)) revert DomainRegistryZeroAddress();
        __Platform_init(admin);
        _getStorage().serviceRegistry = IServiceRegistry(serviceRegistry_);
    }

    /// @inheritdoc IDomainRegistry
    function recordPurchase(string calldata name, address owner, uint64 expiresAt)
        external
        onlyRole(REGISTRAR_ROLE)
        returns (bytes32 node)
    {
        if (owner == address(0)) revert DomainRegistryZeroAddress();
        if (expiresAt <= block.timestamp) revert DomainRegistryInvalidExpiry(expiresAt);
        node = _validNode(name);
        DomainRegistryStorage storage $ = _getStorage();
        Domain storage domain = $.domains[node];
        // A registrar sells only free names, so an external proof on record is stale; a running purchase is not.
        if (domain.method == OwnershipMethod.Purchase && _isHeld(domain)) {
            revert DomainRegistryUnavailable(node);
        }
        _dropLink(node, domain);
        $.domains[node] =
            Domain({owner: owner, method: OwnershipMethod.Purchase, expiresAt: expiresAt, serviceId: 0});
        $.names[node] = name;
        emit DomainRegistered(node, owner, name, expiresAt);
    }

    /// @inheritdoc IDomainRegistry
    function renew(bytes32 node, uint64 expiresAt) external onlyRole(REGISTRAR_ROLE) {
        Domain storage domain = _getStorage().domains[node];
        if (domain.method != OwnershipMethod.Purchase) revert DomainRegistryNotPurchased(node);
        if (expiresAt <= domain.expiresAt || expiresAt <= block.timestamp) {
            revert DomainRegistryInvalidExpiry(expiresAt);
        }
        domain.expiresAt = expiresAt;
        emit DomainRenewed(node, expiresAt);
    }

    /// @inheritdoc IDomainRegistry
    function recordVerification(string calldata name, address owner, OwnershipMethod method)
        external
        onlyRole(VERIFIER_ROLE)
        returns (bytes32 node)
    {
        if (owner == address(0)) revert DomainRegistryZeroAddress();
        if (method == OwnershipMethod.None || method == OwnershipMethod.Purchase) {
            revert DomainRegistryInvalidMethod(method);
        }
        node = _validNode(name);
        DomainRegistryStorage storage $ = _getStorage();
        Domain storage domain = $.domains[node];
        if (domain.method == OwnershipMethod.Purchase && _isHeld(domain)) {
            revert DomainRegistryUnavailable(node);
        }
        // The same owner proving again keeps its link; a new owner starts unlinked.
        if (domain.owner != owner || domain.method == OwnershipMethod.Purchase) _dropLink(node, domain);
        domain.owner = owner;
        domain.method = method;
        domain.expiresAt = 0;
        $.names[node] = name;
        emit DomainVerified(node, owner, name, method);
    }

    /// @inheritdoc IDomainRegistry
    function link(bytes32 node, uint256 serviceId) external {
        DomainRegistryStorage storage $ = _getStorage();
        Domain storage domain = _heldBy(node, _msgSender(), false);
        IServiceRegistry.Service memory svc = $.serviceRegistry.serviceOf(serviceId);
        bool hosting = svc.kind == IServiceRegistry.ServiceKind.StaticHosting
            || svc.kind == IServiceRegistry.ServiceKind.DynamicHosting;
        if (
            svc.owner != domain.owner || !hosting || svc.state == IServiceRegistry.ServiceState.None
                || svc.state == IServiceRegistry.ServiceState.Cancelled
        ) revert DomainRegistryInvalidService(serviceId);
        _dropLink(node, domain);
        domain.serviceId = serviceId;
        emit DomainLinked(node, serviceId);
    }

    /// @inheritdoc IDomainRegistry
    function unlink(bytes32 node) external {
        Domain storage domain = _heldBy(node, _msgSender(), true);
        if (domain.serviceId == 0) revert DomainRegistryNotLinked(node);
        _dropLink(node, domain);
    }

    /// @inheritdoc IDomainRegistry
    function release(bytes32 node) external {
        Domain storage domain = _heldBy(node, _msgSender(), true);
        address owner = domain.owner;
        _dropLink(node, domain);
        DomainRegistryStorage storage $ = _getStorage();
        delete $.domains[node];
        delete $.names[node];
        emit DomainReleased(node, owner);
    }

    /// @inheritdoc IDomainRegistry
    function transfer(bytes32 node, address to) external {
        if (to == address(0)) revert DomainRegistryZeroAddress();
        Domain storage domain = _heldBy(node, _msgSender(), false);
        if (domain.method != OwnershipMethod.Purchase) revert DomainRegistryNotPurchased(node);
        address from = domain.owner;
        _dropLink(node, domain);
        domain.owner = to;
        emit DomainTransferred(node, from, to);
    }

    /// @inheritdoc IDomainRegistry
    function setServiceRegistry(address serviceRegistry_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (serviceRegistry_ == address(0)) revert DomainRegistryZeroAddress();
        _getStorage().serviceRegistry = IServiceRegistry(serviceRegistry_);
        emit ServiceRegistryChanged(serviceRegistry_);
    }

    /// @inheritdoc IDomainRegistry
    function domainOf(bytes32 node) external view returns (Domain memory) {
        return _getStorage().domains[node];
    }

    /// @inheritdoc IDomainRegistry
    function nameOf(bytes32 node) external view returns (string memory) {
        return _getStorage().names[node];
    }

    /// @inheritdoc IDomainRegistry
    function ownerOf(bytes32 node) external view returns (address) {
        Domain storage domain = _getStorage().domains[node];
        return _isHeld(domain) ? domain.owner : address(0);
    }

    /// @inheritdoc IDomainRegistry
    function isHeld(bytes32 node) external view returns (bool) {
        return _isHeld(_getStorage().domains[node]);
    }

    /// @inheritdoc IDomainRegistry
    function nodeOf(string calldata name) public pure returns (bytes32) {
        return keccak256(bytes(name));
    }

    /// @inheritdoc IDomainRegistry
    function serviceRegistry() external view returns (address) {
        return address(_getStorage().serviceRegistry);
    }

    /// @dev The node of a normalised name: 1 to 253 bytes, no upper-case ASCII, no spaces or controls.
    /// Other bytes (UTF-8 of normalised ENS names, punycode) pass.
    function _validNode(string calldata name) private pure returns (bytes32) {
        bytes calldata raw = bytes(name);
        if (raw.length == 0 || raw.length > MAX_NAME_LENGTH) revert DomainRegistryInvalidName(name);
        for (uint256 i; i < raw.length; ++i) {
            bytes1 c = raw[i];
            if (c <= 0x20 || c == 0x7f || (c >= 0x41 && c <= 0x5a)) revert DomainRegistryInvalidName(name);
        }
        return nodeOf(name);
    }

    /// @dev The held domain `node`, owned by `caller`, or acted on by the verifier where `verifierMayAct`
    /// and the name is external: only proofs go away, a running purchase is the registrar's record.
    function _heldBy(bytes32 node, address caller, bool verifierMayAct)
        private
        view
        returns (Domain storage domain)
    {
        domain = _getStorage().domains[node];
        if (!_isHeld(domain)) revert DomainRegistryNotHeld(node);
        bool verifierActs =
            verifierMayAct && domain.method != OwnershipMethod.Purchase && hasRole(VERIFIER_ROLE, caller);
        if (caller != domain.owner && !verifierActs) {
            revert DomainRegistryNotOwner(node, caller);
        }
    }

    function _dropLink(bytes32 node, Domain storage domain) private {
        uint256 serviceId = domain.serviceId;
        if (serviceId == 0) return;
        domain.serviceId = 0;
        emit DomainUnlinked(node, serviceId);
    }

    function _isHeld(Domain storage domain) private view returns (bool) {
        OwnershipMethod method = domain.method;
        return method != OwnershipMethod.None
            && (method != OwnershipMethod.Purchase || domain.expiresAt > block.timestamp);
    }

    function _getStorage() private pure returns (DomainRegistryStorage storage $) {
        assembly {
            $.slot := STORAGE_LOCATION
        }
    }
}
