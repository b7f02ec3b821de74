// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {DomainRegistry} from "../src/DomainRegistry.sol";
import {IDomainRegistry} from "../src/interfaces/IDomainRegistry.sol";
import {IServiceRegistry} from "../src/interfaces/IServiceRegistry.sol";
import {PlatformTest} from "./utils/PlatformTest.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IERC1967} from "@openzeppelin/contracts/interfaces/IERC1967.sol";
import {ERC2771Forwarder} from "@openzeppelin/contracts/metatx/ERC2771Forwarder.sol";
import {ERC1967Proxy} from "@openzeppelin/contracts/proxy/ERC1967/ERC1967Proxy.sol";
import {Initializable} from "@openzeppelin/contracts/proxy/utils/Initializable.sol";
import {Errors} from "@openzeppelin/contracts/utils/Errors.sol";
import {Vm} from "forge-std/Vm.sol";

/// @dev A ServiceRegistry stand-in that answers `serviceOf` with whatever record it was given. The real
/// registry never returns an owned record in state None, so this is the only way to reach that check.
contract StubServiceRegistry {
    IServiceRegistry.Service private _svc;

    function set(IServiceRegistry.Service memory svc) external {
        _svc = svc;
    }

    function serviceOf(uint256) external view returns (IServiceRegistry.Service memory) {
        return _svc;
    }
}

contract DomainRegistryTest is PlatformTest {
    string internal constant DOMAIN = "alice.com";

    bytes32 internal node;
    uint64 internal expiry;
    bytes32 internal registrarRole;
    bytes32 internal verifierRole;

    function setUp() public override {
        super.setUp();
        node = keccak256(bytes(DOMAIN));
        expiry = uint64(block.timestamp + 365 days);
        registrarRole = domains.REGISTRAR_ROLE();
        verifierRole = domains.VERIFIER_ROLE();
    }

    // ---------------------------------------------------------------- helpers

    function _purchase(string memory name, address owner, uint64 expiresAt) internal returns (bytes32) {
        vm.prank(registrar);
        return domains.recordPurchase(name, owner, expiresAt);
    }

    function _verify(string memory name, address owner, IDomainRegistry.OwnershipMethod method)
        internal
        returns (bytes32)
    {
        vm.prank(verifier);
        return domains.recordVerification(name, owner, method);
    }

    function _link(address owner, bytes32 node_, uint256 serviceId) internal {
        vm.prank(owner);
        domains.link(node_, serviceId);
    }

    /// @dev `alice.com` bought by alice and linked to a new static site of hers.
    function _purchasedAndLinked() internal returns (uint256 serviceId) {
        _purchase(DOMAIN, alice, expiry);
        serviceId = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        _link(alice, node, serviceId);
    }

    /// @dev `alice.com` proven (DNS) to alice and linked to a new static site of hers.
    function _verifiedAndLinked() internal returns (uint256 serviceId) {
        _verify(DOMAIN, alice, IDomainRegistry.OwnershipMethod.Dns);
        serviceId = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        _link(alice, node, serviceId);
    }

    function _paid(address user) internal {
        if (!accounts.isActive(user)) _register(user);
        _makePaid(user);
        // Paid services open only with their first hour in the balance.
        _fund(user, 1e12);
    }

    function _repeat(bytes1 c, uint256 n) internal pure returns (string memory) {
        bytes memory out = new bytes(n);
        for (uint256 i; i < n; ++i) {
            out[i] = c;
        }
        return string(out);
    }

    function _assertDomain(
        bytes32 node_,
        address owner,
        IDomainRegistry.OwnershipMethod method,
        uint64 expiresAt,
        uint256 serviceId
    ) internal view {
        IDomainRegistry.Domain memory d = domains.domainOf(node_);
        assertEq(d.owner, owner, "owner");
        assertEq(uint8(d.method), uint8(method), "method");
        assertEq(d.expiresAt, expiresAt, "expiresAt");
        assertEq(d.serviceId, serviceId, "serviceId");
    }

    /// @dev How many recorded logs the registry emitted (vm.expectEmit's own emits are recorded too).
    function _domainLogCount() internal returns (uint256 count) {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter == address(domains)) ++count;
        }
    }

    function _expectUnauthorized(address caller, bytes32 role) internal {
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, role)
        );
    }

    // ---------------------------------------------------------------- initialize

    function test_initialize_setsAdminAndServiceRegistry() public {
        address impl = address(new DomainRegistry(address(forwarder)));
        vm.expectEmit();
        emit IERC1967.Upgraded(impl);
        vm.expectEmit();
        emit IAccessControl.RoleGranted(domains.DEFAULT_ADMIN_ROLE(), admin, address(this));
        vm.expectEmit();
        emit Initializable.Initialized(1);
        DomainRegistry fresh = DomainRegistry(
            address(
                new ERC1967Proxy(impl, abi.encodeCall(DomainRegistry.initialize, (admin, address(services))))
            )
        );
        assertTrue(fresh.hasRole(fresh.DEFAULT_ADMIN_ROLE(), admin));
        assertEq(fresh.serviceRegistry(), address(services));
        assertEq(fresh.trustedForwarder(), address(forwarder));
    }

    function test_initialize_deployedPlatformIsWired() public view {
        assertEq(domains.serviceRegistry(), address(services));
        assertTrue(domains.hasRole(domains.DEFAULT_ADMIN_ROLE(), admin));
        assertTrue(domains.hasRole(registrarRole, registrar));
        assertTrue(domains.hasRole(verifierRole, verifier));
        assertEq(registrarRole, keccak256("REGISTRAR_ROLE"));
        assertEq(verifierRole, keccak256("VERIFIER_ROLE"));
    }

    function test_initialize_revertsOnZeroAdmin() public {
        address impl = address(new DomainRegistry(address(forwarder)));
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryZeroAddress.selector));
        new ERC1967Proxy(impl, abi.encodeCall(DomainRegistry.initialize, (address(0), address(services))));
    }

    function test_initialize_revertsOnZeroServiceRegistry() public {
        address impl = address(new DomainRegistry(address(forwarder)));
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryZeroAddress.selector));
        new ERC1967Proxy(impl, abi.encodeCall(DomainRegistry.initialize, (admin, address(0))));
    }

    function test_initialize_revertsWhenCalledAgain() public {
        vm.expectRevert(abi.encodeWithSelector(Initializable.InvalidInitialization.selector));
        domains.initialize(stranger, stranger);
    }

    function test_initialize_implementationIsLocked() public {
        DomainRegistry impl = new DomainRegistry(address(forwarder));
        vm.expectRevert(abi.encodeWithSelector(Initializable.InvalidInitialization.selector));
        impl.initialize(admin, address(services));
    }

    // ---------------------------------------------------------------- recordPurchase

    function test_recordPurchase_recordsTheName() public {
        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainRegistered(node, alice, DOMAIN, expiry);
        bytes32 returned = _purchase(DOMAIN, alice, expiry);

        assertEq(returned, node);
        assertEq(returned, domains.nodeOf(DOMAIN));
        _assertDomain(node, alice, IDomainRegistry.OwnershipMethod.Purchase, expiry, 0);
        assertEq(domains.nameOf(node), DOMAIN);
        assertEq(domains.ownerOf(node), alice);
        assertTrue(domains.isHeld(node));
    }

    function test_recordPurchase_revertsForNonRegistrar() public {
        _expectUnauthorized(stranger, registrarRole);
        vm.prank(stranger);
        domains.recordPurchase(DOMAIN, alice, expiry);

        // Neither the verifier nor the admin holds the registrar role.
        _expectUnauthorized(verifier, registrarRole);
        vm.prank(verifier);
        domains.recordPurchase(DOMAIN, alice, expiry);

        _expectUnauthorized(admin, registrarRole);
        vm.prank(admin);
        domains.recordPurchase(DOMAIN, alice, expiry);
    }

    function test_recordPurchase_revertsOnZeroOwner() public {
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryZeroAddress.selector));
        _purchase(DOMAIN, address(0), expiry);
    }

    function test_recordPurchase_revertsOnExpiryNow() public {
        uint64 now_ = uint64(block.timestamp);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidExpiry.selector, now_));
        _purchase(DOMAIN, alice, now_);
    }

    function test_recordPurchase_revertsOnExpiryInThePast() public {
        uint64 past = uint64(block.timestamp - 1);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidExpiry.selector, past));
        _purchase(DOMAIN, alice, past);

        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidExpiry.selector, 0));
        _purchase(DOMAIN, alice, 0);
    }

    function test_recordPurchase_acceptsOneSecondAhead() public {
        uint64 soon = uint64(block.timestamp + 1);
        _purchase(DOMAIN, alice, soon);
        assertTrue(domains.isHeld(node));
    }

    function test_recordPurchase_revertsOnEmptyName() public {
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidName.selector, ""));
        _purchase("", alice, expiry);
    }

    function test_recordPurchase_revertsOn254ByteName() public {
        string memory name = _repeat("a", 254);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidName.selector, name));
        _purchase(name, alice, expiry);
    }

    function test_recordPurchase_accepts253ByteName() public {
        string memory name = _repeat("a", 253);
        bytes32 n = _purchase(name, alice, expiry);
        assertEq(n, keccak256(bytes(name)));
        assertEq(domains.nameOf(n), name);
        assertEq(domains.ownerOf(n), alice);
    }

    function test_recordPurchase_acceptsOneByteName() public {
        bytes32 n = _purchase("a", alice, expiry);
        assertEq(domains.nameOf(n), "a");
    }

    function test_recordPurchase_revertsOnUpperCase() public {
        string[3] memory names = ["Alice.com", "alice.coM", "ALICE.COM"];
        for (uint256 i; i < names.length; ++i) {
            vm.expectRevert(
                abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidName.selector, names[i])
            );
            _purchase(names[i], alice, expiry);
        }
    }

    function test_recordPurchase_acceptsBytesAroundUpperCase() public {
        // '@' (0x40) and '[' (0x5b) sit either side of A-Z; the contract only rejects A-Z, spaces and controls.
        _purchase("a@b", alice, expiry);
        _purchase("a[b", alice, expiry);
        _purchase("!", alice, expiry);
        _purchase("~", alice, expiry);
        assertTrue(domains.isHeld(keccak256("a@b")));
        assertTrue(domains.isHeld(keccak256("a[b")));
        assertTrue(domains.isHeld(keccak256("!")));
        assertTrue(domains.isHeld(keccak256("~")));
    }

    function test_recordPurchase_revertsOnSpace() public {
        string memory name = "alice .com";
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidName.selector, name));
        _purchase(name, alice, expiry);
    }

    function test_recordPurchase_revertsOnControlCharacters() public {
        string[4] memory names = ["alice\x00.com", "alice.com\n", "\x01alice.com", "alice\x1f.com"];
        for (uint256 i; i < names.length; ++i) {
            vm.expectRevert(
                abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidName.selector, names[i])
            );
            _purchase(names[i], alice, expiry);
        }
    }

    function test_recordPurchase_revertsOnDel() public {
        string memory name = "alice\x7f.com";
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidName.selector, name));
        _purchase(name, alice, expiry);
    }

    function test_recordPurchase_acceptsPunycode() public {
        string memory name = "xn--mnchen-3ya.de";
        bytes32 n = _purchase(name, alice, expiry);
        assertEq(n, keccak256(bytes(name)));
        assertEq(domains.nameOf(n), name);
    }

    function test_recordPurchase_revertsOnRunningPurchase() public {
        _purchase(DOMAIN, alice, expiry);

        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryUnavailable.selector, node));
        _purchase(DOMAIN, bob, expiry + 1);

        // Not even the owner buys it again while it runs: that is what renew is for.
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryUnavailable.selector, node));
        _purchase(DOMAIN, alice, expiry + 1);

        vm.warp(expiry - 1);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryUnavailable.selector, node));
        _purchase(DOMAIN, bob, expiry + 1);
    }

    function test_recordPurchase_expiredPurchaseGoesToSomeoneElse() public {
        uint256 sid = _purchasedAndLinked();
        vm.warp(expiry);
        uint64 bobExpiry = expiry + 30 days;

        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainUnlinked(node, sid);
        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainRegistered(node, bob, DOMAIN, bobExpiry);
        _purchase(DOMAIN, bob, bobExpiry);

        _assertDomain(node, bob, IDomainRegistry.OwnershipMethod.Purchase, bobExpiry, 0);
        assertEq(domains.ownerOf(node), bob);
    }

    function test_recordPurchase_expiredUnlinkedPurchaseEmitsOnlyRegistered() public {
        _purchase(DOMAIN, alice, expiry);
        vm.warp(expiry + 1);
        uint64 bobExpiry = expiry + 30 days;

        vm.recordLogs();
        _purchase(DOMAIN, bob, bobExpiry);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs.length, 1);
        assertEq(logs[0].emitter, address(domains));
        assertEq(logs[0].topics[0], IDomainRegistry.DomainRegistered.selector);
    }

    function test_recordPurchase_replacesExternalProof() public {
        uint256 sid = _verifiedAndLinked();

        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainUnlinked(node, sid);
        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainRegistered(node, bob, DOMAIN, expiry);
        _purchase(DOMAIN, bob, expiry);

        _assertDomain(node, bob, IDomainRegistry.OwnershipMethod.Purchase, expiry, 0);
        assertEq(domains.ownerOf(node), bob);
    }

    function test_recordPurchase_afterReleaseWorks() public {
        _purchase(DOMAIN, alice, expiry);
        vm.prank(alice);
        domains.release(node);

        _purchase(DOMAIN, bob, expiry);
        assertEq(domains.ownerOf(node), bob);
    }

    // ---------------------------------------------------------------- renew

    function test_renew_extendsThePurchase() public {
        _purchase(DOMAIN, alice, expiry);
        uint64 later = expiry + 365 days;

        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainRenewed(node, later);
        vm.prank(registrar);
        domains.renew(node, later);

        _assertDomain(node, alice, IDomainRegistry.OwnershipMethod.Purchase, later, 0);
        vm.warp(expiry + 1);
        assertEq(domains.ownerOf(node), alice);
    }

    function test_renew_keepsTheLink() public {
        uint256 sid = _purchasedAndLinked();
        vm.prank(registrar);
        domains.renew(node, expiry + 1);
        assertEq(domains.domainOf(node).serviceId, sid);
    }

    function test_renew_revertsForNonRegistrar() public {
        _purchase(DOMAIN, alice, expiry);
        _expectUnauthorized(alice, registrarRole);
        vm.prank(alice);
        domains.renew(node, expiry + 1);

        _expectUnauthorized(verifier, registrarRole);
        vm.prank(verifier);
        domains.renew(node, expiry + 1);
    }

    function test_renew_revertsWhenNeverRecorded() public {
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotPurchased.selector, node));
        vm.prank(registrar);
        domains.renew(node, expiry);
    }

    function test_renew_revertsForExternalNames() public {
        IDomainRegistry.OwnershipMethod[3] memory methods = [
            IDomainRegistry.OwnershipMethod.Dns,
            IDomainRegistry.OwnershipMethod.Ens,
            IDomainRegistry.OwnershipMethod.Handshake
        ];
        for (uint256 i; i < methods.length; ++i) {
            _verify(DOMAIN, alice, methods[i]);
            vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotPurchased.selector, node));
            vm.prank(registrar);
            domains.renew(node, expiry);
        }
    }

    function test_renew_revertsAfterRelease() public {
        _purchase(DOMAIN, alice, expiry);
        vm.prank(alice);
        domains.release(node);

        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotPurchased.selector, node));
        vm.prank(registrar);
        domains.renew(node, expiry + 1);
    }

    function test_renew_revertsWhenNotLater() public {
        _purchase(DOMAIN, alice, expiry);

        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidExpiry.selector, expiry));
        vm.prank(registrar);
        domains.renew(node, expiry);

        uint64 earlier = expiry - 1;
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidExpiry.selector, earlier));
        vm.prank(registrar);
        domains.renew(node, earlier);
    }

    function test_renew_revertsWhenNotInTheFuture() public {
        // After expiry, a later date than the old one can still lie in the past.
        _purchase(DOMAIN, alice, expiry);
        vm.warp(expiry + 10 days);
        uint64 stillPast = expiry + 5 days;
        vm.expectRevert(
            abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidExpiry.selector, stillPast)
        );
        vm.prank(registrar);
        domains.renew(node, stillPast);

        uint64 now_ = uint64(block.timestamp);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidExpiry.selector, now_));
        vm.prank(registrar);
        domains.renew(node, now_);
    }

    function test_renew_expiredPurchaseNobodyReboughtIsHeldAgain() public {
        _purchase(DOMAIN, alice, expiry);
        vm.warp(expiry + 10 days);
        assertFalse(domains.isHeld(node));

        uint64 later = uint64(block.timestamp + 365 days);
        vm.prank(registrar);
        domains.renew(node, later);
        assertEq(domains.ownerOf(node), alice);
    }

    // ---------------------------------------------------------------- recordVerification

    function test_recordVerification_recordsEachExternalMethod() public {
        string[3] memory names = ["alice.com", "alice.eth", "alice"];
        IDomainRegistry.OwnershipMethod[3] memory methods = [
            IDomainRegistry.OwnershipMethod.Dns,
            IDomainRegistry.OwnershipMethod.Ens,
            IDomainRegistry.OwnershipMethod.Handshake
        ];
        for (uint256 i; i < methods.length; ++i) {
            bytes32 n = keccak256(bytes(names[i]));
            vm.expectEmit(address(domains));
            emit IDomainRegistry.DomainVerified(n, alice, names[i], methods[i]);
            assertEq(_verify(names[i], alice, methods[i]), n);

            _assertDomain(n, alice, methods[i], 0, 0);
            assertEq(domains.nameOf(n), names[i]);
            assertEq(domains.ownerOf(n), alice);
            assertTrue(domains.isHeld(n));
        }
    }

    function test_recordVerification_acceptsUtf8EnsName() public {
        string memory name = unicode"🦊.eth";
        bytes32 n = keccak256(bytes(name));
        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainVerified(n, alice, name, IDomainRegistry.OwnershipMethod.Ens);
        assertEq(_verify(name, alice, IDomainRegistry.OwnershipMethod.Ens), n);
        assertEq(domains.nodeOf(name), n);
        assertEq(domains.nameOf(n), name);
        assertEq(domains.ownerOf(n), alice);
    }

    function test_recordVerification_revertsForNonVerifier() public {
        _expectUnauthorized(stranger, verifierRole);
        vm.prank(stranger);
        domains.recordVerification(DOMAIN, alice, IDomainRegistry.OwnershipMethod.Dns);

        _expectUnauthorized(registrar, verifierRole);
        vm.prank(registrar);
        domains.recordVerification(DOMAIN, alice, IDomainRegistry.OwnershipMethod.Dns);
    }

    function test_recordVerification_revertsOnZeroOwner() public {
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryZeroAddress.selector));
        _verify(DOMAIN, address(0), IDomainRegistry.OwnershipMethod.Dns);
    }

    function test_recordVerification_revertsOnMethodNone() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IDomainRegistry.DomainRegistryInvalidMethod.selector, IDomainRegistry.OwnershipMethod.None
            )
        );
        _verify(DOMAIN, alice, IDomainRegistry.OwnershipMethod.None);
    }

    function test_recordVerification_revertsOnMethodPurchase() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IDomainRegistry.DomainRegistryInvalidMethod.selector, IDomainRegistry.OwnershipMethod.Purchase
            )
        );
        _verify(DOMAIN, alice, IDomainRegistry.OwnershipMethod.Purchase);
    }

    function test_recordVerification_revertsOnInvalidName() public {
        string[4] memory names = ["", "Alice.eth", "alice eth", "alice\x7f.eth"];
        for (uint256 i; i < names.length; ++i) {
            vm.expectRevert(
                abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidName.selector, names[i])
            );
            _verify(names[i], alice, IDomainRegistry.OwnershipMethod.Ens);
        }
        string memory long = _repeat("a", 254);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidName.selector, long));
        _verify(long, alice, IDomainRegistry.OwnershipMethod.Dns);
    }

    function test_recordVerification_revertsOverRunningPurchase() public {
        _purchase(DOMAIN, alice, expiry);

        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryUnavailable.selector, node));
        _verify(DOMAIN, bob, IDomainRegistry.OwnershipMethod.Dns);

        // The purchase's own owner cannot turn it into an external name either.
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryUnavailable.selector, node));
        _verify(DOMAIN, alice, IDomainRegistry.OwnershipMethod.Dns);
    }

    function test_recordVerification_newOwnerReplacesOldProofAndLink() public {
        uint256 sid = _verifiedAndLinked();

        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainUnlinked(node, sid);
        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainVerified(node, bob, DOMAIN, IDomainRegistry.OwnershipMethod.Ens);
        _verify(DOMAIN, bob, IDomainRegistry.OwnershipMethod.Ens);

        _assertDomain(node, bob, IDomainRegistry.OwnershipMethod.Ens, 0, 0);
        assertEq(domains.ownerOf(node), bob);
    }

    function test_recordVerification_sameOwnerKeepsLink() public {
        uint256 sid = _verifiedAndLinked();

        vm.recordLogs();
        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainVerified(node, alice, DOMAIN, IDomainRegistry.OwnershipMethod.Handshake);
        _verify(DOMAIN, alice, IDomainRegistry.OwnershipMethod.Handshake);
        // Only DomainVerified: no DomainUnlinked.
        assertEq(_domainLogCount(), 1);

        _assertDomain(node, alice, IDomainRegistry.OwnershipMethod.Handshake, 0, sid);
    }

    function test_recordVerification_overExpiredPurchaseByNewOwner() public {
        uint256 sid = _purchasedAndLinked();
        vm.warp(expiry + 1);

        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainUnlinked(node, sid);
        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainVerified(node, bob, DOMAIN, IDomainRegistry.OwnershipMethod.Dns);
        _verify(DOMAIN, bob, IDomainRegistry.OwnershipMethod.Dns);

        _assertDomain(node, bob, IDomainRegistry.OwnershipMethod.Dns, 0, 0);
        assertEq(domains.ownerOf(node), bob);
    }

    function test_recordVerification_overExpiredPurchaseBySameOwnerDropsLink() public {
        // The expired purchase's link goes even when its former owner proves the name externally.
        uint256 sid = _purchasedAndLinked();
        vm.warp(expiry);

        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainUnlinked(node, sid);
        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainVerified(node, alice, DOMAIN, IDomainRegistry.OwnershipMethod.Dns);
        _verify(DOMAIN, alice, IDomainRegistry.OwnershipMethod.Dns);

        _assertDomain(node, alice, IDomainRegistry.OwnershipMethod.Dns, 0, 0);
        assertTrue(domains.isHeld(node));
    }

    function test_recordVerification_afterReleaseWorks() public {
        _verify(DOMAIN, alice, IDomainRegistry.OwnershipMethod.Dns);
        vm.prank(alice);
        domains.release(node);

        _verify(DOMAIN, bob, IDomainRegistry.OwnershipMethod.Dns);
        assertEq(domains.ownerOf(node), bob);
    }

    // ---------------------------------------------------------------- link

    function test_link_staticHosting() public {
        _purchase(DOMAIN, alice, expiry);
        uint256 sid = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);

        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainLinked(node, sid);
        _link(alice, node, sid);

        _assertDomain(node, alice, IDomainRegistry.OwnershipMethod.Purchase, expiry, sid);
    }

    function test_link_dynamicHosting() public {
        _paid(alice);
        _purchase(DOMAIN, alice, expiry);
        uint256 sid = _createService(alice, IServiceRegistry.ServiceKind.DynamicHosting);

        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainLinked(node, sid);
        _link(alice, node, sid);

        assertEq(domains.domainOf(node).serviceId, sid);
    }

    function test_link_externalName() public {
        _verify(DOMAIN, alice, IDomainRegistry.OwnershipMethod.Dns);
        uint256 sid = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);

        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainLinked(node, sid);
        _link(alice, node, sid);

        _assertDomain(node, alice, IDomainRegistry.OwnershipMethod.Dns, 0, sid);
    }

    function test_link_pausedOrSuspendedServiceIsAllowed() public {
        // Only cancellation is final; a paused or suspended site may come back, so its domain may point at it.
        _purchase(DOMAIN, alice, expiry);
        uint256 sid = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        vm.prank(alice);
        services.pause(sid);
        _link(alice, node, sid);
        assertEq(domains.domainOf(node).serviceId, sid);

        vm.prank(operator);
        services.suspend(sid);
        vm.prank(alice);
        domains.unlink(node);
        _link(alice, node, sid);
        assertEq(domains.domainOf(node).serviceId, sid);
    }

    function test_link_relinkEmitsUnlinkedThenLinked() public {
        _paid(alice);
        uint256 first = _purchasedAndLinked();
        uint256 second = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);

        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainUnlinked(node, first);
        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainLinked(node, second);
        _link(alice, node, second);

        assertEq(domains.domainOf(node).serviceId, second);
    }

    function test_link_oneServiceServesManyDomains() public {
        uint256 sid = _purchasedAndLinked();
        bytes32 other = _purchase("alice.org", alice, expiry);
        _link(alice, other, sid);
        assertEq(domains.domainOf(node).serviceId, sid);
        assertEq(domains.domainOf(other).serviceId, sid);
    }

    function test_link_revertsForNonOwner() public {
        _purchase(DOMAIN, alice, expiry);
        uint256 sid = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);

        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, bob));
        _link(bob, node, sid);

        // The verifier may unlink and release for owners, but never link.
        vm.expectRevert(
            abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, verifier)
        );
        _link(verifier, node, sid);

        vm.expectRevert(
            abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, registrar)
        );
        _link(registrar, node, sid);
    }

    function test_link_revertsWhenNeverRecorded() public {
        uint256 sid = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotHeld.selector, node));
        _link(alice, node, sid);
    }

    function test_link_revertsWhenExpired() public {
        _purchase(DOMAIN, alice, expiry);
        uint256 sid = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        vm.warp(expiry);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotHeld.selector, node));
        _link(alice, node, sid);
    }

    function test_link_revertsWhenReleased() public {
        _verify(DOMAIN, alice, IDomainRegistry.OwnershipMethod.Dns);
        uint256 sid = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        vm.prank(alice);
        domains.release(node);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotHeld.selector, node));
        _link(alice, node, sid);
    }

    function test_link_revertsForAnotherOwnersService() public {
        _purchase(DOMAIN, alice, expiry);
        uint256 bobs = _createService(bob, IServiceRegistry.ServiceKind.StaticHosting);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidService.selector, bobs));
        _link(alice, node, bobs);
    }

    function test_link_revertsForNonHostingServices() public {
        _paid(alice);
        _purchase(DOMAIN, alice, expiry);
        IServiceRegistry.ServiceKind[3] memory kinds = [
            IServiceRegistry.ServiceKind.Storage,
            IServiceRegistry.ServiceKind.Domain,
            IServiceRegistry.ServiceKind.Database
        ];
        for (uint256 i; i < kinds.length; ++i) {
            uint256 sid = _createService(alice, kinds[i]);
            vm.expectRevert(
                abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidService.selector, sid)
            );
            _link(alice, node, sid);
        }
    }

    function test_link_revertsForCancelledService() public {
        _purchase(DOMAIN, alice, expiry);
        uint256 sid = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        vm.prank(alice);
        services.cancel(sid);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidService.selector, sid));
        _link(alice, node, sid);
    }

    function test_link_revertsForMissingService() public {
        _purchase(DOMAIN, alice, expiry);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidService.selector, 0));
        _link(alice, node, 0);

        uint256 missing = services.serviceCount() + 1;
        vm.expectRevert(
            abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidService.selector, missing)
        );
        _link(alice, node, missing);
    }

    function test_link_revertsForOwnedRecordInStateNone() public {
        // Defence in depth: a registry answering an owned record that does not exist must not be trusted.
        StubServiceRegistry stub = new StubServiceRegistry();
        stub.set(
            IServiceRegistry.Service({
                owner: alice,
                kind: IServiceRegistry.ServiceKind.StaticHosting,
                state: IServiceRegistry.ServiceState.None,
                createdAt: 0,
                expiresAt: 0,
                ref: bytes32(0)
            })
        );
        vm.prank(admin);
        domains.setServiceRegistry(address(stub));
        _purchase(DOMAIN, alice, expiry);

        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidService.selector, 7));
        _link(alice, node, 7);
    }

    function test_link_revertsAfterTransferForOldOwnersService() public {
        uint256 sid = _purchasedAndLinked();
        vm.prank(alice);
        domains.transfer(node, bob);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidService.selector, sid));
        _link(bob, node, sid);
    }

    // ---------------------------------------------------------------- unlink

    function test_unlink_byOwner() public {
        uint256 sid = _purchasedAndLinked();

        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainUnlinked(node, sid);
        vm.prank(alice);
        domains.unlink(node);

        _assertDomain(node, alice, IDomainRegistry.OwnershipMethod.Purchase, expiry, 0);
        assertEq(domains.ownerOf(node), alice);
    }

    function test_unlink_byVerifier() public {
        uint256 sid = _verifiedAndLinked();

        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainUnlinked(node, sid);
        vm.prank(verifier);
        domains.unlink(node);

        _assertDomain(node, alice, IDomainRegistry.OwnershipMethod.Dns, 0, 0);
    }

    function test_unlink_revertsWhenNotLinked() public {
        _purchase(DOMAIN, alice, expiry);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotLinked.selector, node));
        vm.prank(alice);
        domains.unlink(node);
    }

    function test_unlink_revertsForVerifierOnPurchasedName() public {
        // A running purchase is the registrar's record: no proof can go away, so the verifier has no say.
        uint256 sid = _purchasedAndLinked();
        vm.expectRevert(
            abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, verifier)
        );
        vm.prank(verifier);
        domains.unlink(node);
        assertEq(domains.domainOf(node).serviceId, sid);
    }

    function test_release_revertsForVerifierOnPurchasedName() public {
        _purchase(DOMAIN, alice, expiry);
        vm.expectRevert(
            abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, verifier)
        );
        vm.prank(verifier);
        domains.release(node);
        assertEq(domains.ownerOf(node), alice);
    }

    function test_release_clearsTheName() public {
        _purchase(DOMAIN, alice, expiry);
        vm.prank(alice);
        domains.release(node);
        assertEq(domains.nameOf(node), "");
    }

    function test_unlink_revertsTwice() public {
        _purchasedAndLinked();
        vm.prank(alice);
        domains.unlink(node);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotLinked.selector, node));
        vm.prank(alice);
        domains.unlink(node);
    }

    function test_unlink_revertsForStranger() public {
        _purchasedAndLinked();
        vm.expectRevert(
            abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, stranger)
        );
        vm.prank(stranger);
        domains.unlink(node);

        vm.expectRevert(
            abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, registrar)
        );
        vm.prank(registrar);
        domains.unlink(node);
    }

    function test_unlink_revertsWhenNotHeld() public {
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotHeld.selector, node));
        vm.prank(alice);
        domains.unlink(node);

        _purchasedAndLinked();
        vm.warp(expiry);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotHeld.selector, node));
        vm.prank(alice);
        domains.unlink(node);
    }

    // ---------------------------------------------------------------- release

    function test_release_byOwnerWhenLinked() public {
        uint256 sid = _purchasedAndLinked();

        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainUnlinked(node, sid);
        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainReleased(node, alice);
        vm.prank(alice);
        domains.release(node);

        _assertDomain(node, address(0), IDomainRegistry.OwnershipMethod.None, 0, 0);
        assertFalse(domains.isHeld(node));
        assertEq(domains.ownerOf(node), address(0));
    }

    function test_release_byOwnerWhenUnlinked() public {
        _purchase(DOMAIN, alice, expiry);

        vm.recordLogs();
        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainReleased(node, alice);
        vm.prank(alice);
        domains.release(node);
        assertEq(_domainLogCount(), 1);

        assertFalse(domains.isHeld(node));
        assertEq(domains.ownerOf(node), address(0));
    }

    function test_release_byVerifier() public {
        uint256 sid = _verifiedAndLinked();

        // The event names the owner who lost the name, not the verifier who acted.
        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainUnlinked(node, sid);
        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainReleased(node, alice);
        vm.prank(verifier);
        domains.release(node);

        _assertDomain(node, address(0), IDomainRegistry.OwnershipMethod.None, 0, 0);
        assertFalse(domains.isHeld(node));
        assertEq(domains.ownerOf(node), address(0));
    }

    function test_release_revertsForStranger() public {
        _purchase(DOMAIN, alice, expiry);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, bob));
        vm.prank(bob);
        domains.release(node);

        vm.expectRevert(
            abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, registrar)
        );
        vm.prank(registrar);
        domains.release(node);
    }

    function test_release_revertsWhenNotHeld() public {
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotHeld.selector, node));
        vm.prank(alice);
        domains.release(node);

        _purchase(DOMAIN, alice, expiry);
        vm.prank(alice);
        domains.release(node);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotHeld.selector, node));
        vm.prank(alice);
        domains.release(node);
    }

    function test_release_revertsWhenExpired() public {
        _purchase(DOMAIN, alice, expiry);
        vm.warp(expiry);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotHeld.selector, node));
        vm.prank(alice);
        domains.release(node);
    }

    // ---------------------------------------------------------------- transfer

    function test_transfer_movesThePurchaseAndDropsTheLink() public {
        uint256 sid = _purchasedAndLinked();

        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainUnlinked(node, sid);
        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainTransferred(node, alice, bob);
        vm.prank(alice);
        domains.transfer(node, bob);

        _assertDomain(node, bob, IDomainRegistry.OwnershipMethod.Purchase, expiry, 0);
        assertEq(domains.ownerOf(node), bob);
        assertEq(domains.nameOf(node), DOMAIN);
    }

    function test_transfer_unlinkedEmitsOnlyTransferred() public {
        _purchase(DOMAIN, alice, expiry);

        vm.recordLogs();
        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainTransferred(node, alice, bob);
        vm.prank(alice);
        domains.transfer(node, bob);
        assertEq(_domainLogCount(), 1);
    }

    function test_transfer_newOwnerTakesOver() public {
        _purchase(DOMAIN, alice, expiry);
        vm.prank(alice);
        domains.transfer(node, bob);

        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, alice));
        vm.prank(alice);
        domains.transfer(node, alice);

        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainTransferred(node, bob, stranger);
        vm.prank(bob);
        domains.transfer(node, stranger);
        assertEq(domains.ownerOf(node), stranger);
    }

    function test_transfer_revertsOnZeroTo() public {
        _purchase(DOMAIN, alice, expiry);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryZeroAddress.selector));
        vm.prank(alice);
        domains.transfer(node, address(0));
    }

    function test_transfer_revertsForNonOwner() public {
        _purchase(DOMAIN, alice, expiry);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, bob));
        vm.prank(bob);
        domains.transfer(node, bob);

        // Unlike unlink and release, the verifier cannot move a name.
        vm.expectRevert(
            abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, verifier)
        );
        vm.prank(verifier);
        domains.transfer(node, bob);

        vm.expectRevert(
            abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, registrar)
        );
        vm.prank(registrar);
        domains.transfer(node, bob);
    }

    function test_transfer_revertsForExternalNames() public {
        IDomainRegistry.OwnershipMethod[3] memory methods = [
            IDomainRegistry.OwnershipMethod.Dns,
            IDomainRegistry.OwnershipMethod.Ens,
            IDomainRegistry.OwnershipMethod.Handshake
        ];
        for (uint256 i; i < methods.length; ++i) {
            _verify(DOMAIN, alice, methods[i]);
            vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotPurchased.selector, node));
            vm.prank(alice);
            domains.transfer(node, bob);
        }
    }

    function test_transfer_revertsWhenNotHeld() public {
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotHeld.selector, node));
        vm.prank(alice);
        domains.transfer(node, bob);

        _purchase(DOMAIN, alice, expiry);
        vm.warp(expiry);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotHeld.selector, node));
        vm.prank(alice);
        domains.transfer(node, bob);
    }

    // ---------------------------------------------------------------- setServiceRegistry

    function test_setServiceRegistry_byAdmin() public {
        address next = makeAddr("nextServiceRegistry");
        vm.expectEmit(address(domains));
        emit IDomainRegistry.ServiceRegistryChanged(next);
        vm.prank(admin);
        domains.setServiceRegistry(next);
        assertEq(domains.serviceRegistry(), next);
    }

    function test_setServiceRegistry_revertsOnZero() public {
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryZeroAddress.selector));
        vm.prank(admin);
        domains.setServiceRegistry(address(0));
    }

    function test_setServiceRegistry_revertsForNonAdmin() public {
        bytes32 adminRole = domains.DEFAULT_ADMIN_ROLE();
        _expectUnauthorized(stranger, adminRole);
        vm.prank(stranger);
        domains.setServiceRegistry(stranger);

        _expectUnauthorized(registrar, adminRole);
        vm.prank(registrar);
        domains.setServiceRegistry(stranger);
    }

    // ---------------------------------------------------------------- views

    function test_views_unknownNode() public view {
        _assertDomain(node, address(0), IDomainRegistry.OwnershipMethod.None, 0, 0);
        assertEq(domains.nameOf(node), "");
        assertEq(domains.ownerOf(node), address(0));
        assertFalse(domains.isHeld(node));
    }

    function test_nodeOf_isKeccakOfTheNameBytes() public view {
        assertEq(domains.nodeOf(DOMAIN), keccak256(bytes(DOMAIN)));
        assertEq(domains.nodeOf(unicode"🦊.eth"), keccak256(bytes(unicode"🦊.eth")));
        // A pure hash: it does not validate.
        assertEq(domains.nodeOf(""), keccak256(""));
    }

    function test_serviceRegistry_isTheDeployedOne() public view {
        assertEq(domains.serviceRegistry(), address(services));
    }

    function test_ownerOfAndIsHeld_endWhenThePurchaseExpires() public {
        _purchase(DOMAIN, alice, expiry);

        vm.warp(expiry - 1);
        assertTrue(domains.isHeld(node));
        assertEq(domains.ownerOf(node), alice);

        // Held strictly before expiresAt.
        vm.warp(expiry);
        assertFalse(domains.isHeld(node));
        assertEq(domains.ownerOf(node), address(0));
        // The record itself stays until someone else takes the name.
        _assertDomain(node, alice, IDomainRegistry.OwnershipMethod.Purchase, expiry, 0);
        assertEq(domains.nameOf(node), DOMAIN);

        vm.warp(expiry + 365 days);
        assertFalse(domains.isHeld(node));
        assertEq(domains.ownerOf(node), address(0));
    }

    function test_ownerOfAndIsHeld_externalNamesDoNotExpire() public {
        _verify(DOMAIN, alice, IDomainRegistry.OwnershipMethod.Dns);
        vm.warp(block.timestamp + 100 * 365 days);
        assertTrue(domains.isHeld(node));
        assertEq(domains.ownerOf(node), alice);
    }

    // ---------------------------------------------------------------- gasless (ERC-2771)

    function test_link_throughForwarder() public {
        _purchase(DOMAIN, alice, expiry);
        uint256 sid = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);

        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainLinked(node, sid);
        vm.prank(relayer);
        forwarder.execute(
            _forwardRequest(aliceKey, address(domains), abi.encodeCall(domains.link, (node, sid)))
        );

        assertEq(domains.domainOf(node).serviceId, sid);
    }

    function test_unlink_throughForwarder() public {
        uint256 sid = _purchasedAndLinked();

        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainUnlinked(node, sid);
        vm.prank(relayer);
        forwarder.execute(_forwardRequest(aliceKey, address(domains), abi.encodeCall(domains.unlink, (node))));

        assertEq(domains.domainOf(node).serviceId, 0);
    }

    function test_link_throughForwarder_signerMustOwn() public {
        // The signer, not the relayer, is the caller: bob's signature cannot link alice's domain.
        _purchase(DOMAIN, alice, expiry);
        uint256 sid = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        ERC2771Forwarder.ForwardRequestData memory req =
            _forwardRequest(bobKey, address(domains), abi.encodeCall(domains.link, (node, sid)));

        // The forwarder drops the inner revert data (DomainRegistryNotOwner(node, bob)) and reports FailedCall.
        vm.expectRevert(abi.encodeWithSelector(Errors.FailedCall.selector));
        vm.prank(relayer);
        forwarder.execute(req);
        assertEq(domains.domainOf(node).serviceId, 0);
    }

    // ---------------------------------------------------------------- fuzz

    function testFuzz_recordPurchase_revertsForNonRegistrar(address caller) public {
        vm.assume(!domains.hasRole(registrarRole, caller) && caller != address(forwarder));
        _expectUnauthorized(caller, registrarRole);
        vm.prank(caller);
        domains.recordPurchase(DOMAIN, alice, expiry);
    }

    function testFuzz_renew_revertsForNonRegistrar(address caller) public {
        vm.assume(!domains.hasRole(registrarRole, caller) && caller != address(forwarder));
        _purchase(DOMAIN, alice, expiry);
        _expectUnauthorized(caller, registrarRole);
        vm.prank(caller);
        domains.renew(node, expiry + 1);
    }

    function testFuzz_recordVerification_revertsForNonVerifier(address caller, uint8 methodSeed) public {
        vm.assume(!domains.hasRole(verifierRole, caller) && caller != address(forwarder));
        IDomainRegistry.OwnershipMethod method = IDomainRegistry.OwnershipMethod(bound(methodSeed, 2, 4));
        _expectUnauthorized(caller, verifierRole);
        vm.prank(caller);
        domains.recordVerification(DOMAIN, alice, method);
    }

    function testFuzz_setServiceRegistry_revertsForNonAdmin(address caller) public {
        bytes32 adminRole = domains.DEFAULT_ADMIN_ROLE();
        vm.assume(!domains.hasRole(adminRole, caller) && caller != address(forwarder));
        _expectUnauthorized(caller, adminRole);
        vm.prank(caller);
        domains.setServiceRegistry(stranger);
    }

    function testFuzz_ownerFunctions_revertForNonOwner(address caller) public {
        vm.assume(caller != alice && caller != address(forwarder));
        uint256 sid = _purchasedAndLinked();

        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, caller));
        vm.prank(caller);
        domains.link(node, sid);

        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, caller));
        vm.prank(caller);
        domains.transfer(node, caller == address(0) ? bob : caller);

        if (!domains.hasRole(verifierRole, caller)) {
            vm.expectRevert(
                abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, caller)
            );
            vm.prank(caller);
            domains.unlink(node);

            vm.expectRevert(
                abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, caller)
            );
            vm.prank(caller);
            domains.release(node);
        }
        assertEq(domains.ownerOf(node), alice);
        assertEq(domains.domainOf(node).serviceId, sid);
    }

    function testFuzz_recordPurchase_expiry(uint64 expiresAt) public {
        if (expiresAt <= block.timestamp) {
            vm.expectRevert(
                abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidExpiry.selector, expiresAt)
            );
            _purchase(DOMAIN, alice, expiresAt);
        } else {
            _purchase(DOMAIN, alice, expiresAt);
            assertEq(domains.domainOf(node).expiresAt, expiresAt);
            assertTrue(domains.isHeld(node));
        }
    }

    function testFuzz_validName_roundTrips(uint256 seed, uint256 length) public {
        bytes memory charset = "abcdefghijklmnopqrstuvwxyz0123456789-.";
        length = bound(length, 1, 253);
        bytes memory raw = new bytes(length);
        for (uint256 i; i < length; ++i) {
            raw[i] = charset[uint256(keccak256(abi.encode(seed, i))) % charset.length];
        }
        string memory name = string(raw);

        bytes32 n = _purchase(name, alice, expiry);
        assertEq(n, keccak256(raw));
        assertEq(domains.nodeOf(name), n);
        assertEq(domains.nameOf(n), name);
        assertEq(domains.ownerOf(n), alice);
    }

    function testFuzz_invalidByte_reverts(uint256 position, uint8 badSeed) public {
        // Each forbidden byte: controls and space (0x00-0x20), DEL (0x7f), upper-case ASCII (0x41-0x5a).
        uint256 pick = bound(badSeed, 0, 33 + 1 + 26 - 1);
        bytes1 bad;
        // `pick` is bounded below 60, so the casts cannot truncate.
        if (pick <= 0x20) {
            // forge-lint: disable-next-line(unsafe-typecast)
            bad = bytes1(uint8(pick));
        } else if (pick == 0x21) {
            bad = 0x7f;
        } else {
            // forge-lint: disable-next-line(unsafe-typecast)
            bad = bytes1(uint8(0x41 + pick - 0x22));
        }

        bytes memory raw = bytes("valid-name.example");
        raw[bound(position, 0, raw.length - 1)] = bad;
        string memory name = string(raw);

        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidName.selector, name));
        _purchase(name, alice, expiry);
        vm.expectRevert(abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidName.selector, name));
        _verify(name, alice, IDomainRegistry.OwnershipMethod.Dns);
    }
}
