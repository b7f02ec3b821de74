// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccountRegistry} from "../src/AccountRegistry.sol";
import {CreditLedger} from "../src/CreditLedger.sol";
import {ServiceRegistry} from "../src/ServiceRegistry.sol";
import {IAccountRegistry} from "../src/interfaces/IAccountRegistry.sol";
import {IServiceRegistry} from "../src/interfaces/IServiceRegistry.sol";
import {PlatformTest} from "./utils/PlatformTest.sol";
import {Initializable} from "@openzeppelin/contracts-upgradeable/proxy/utils/Initializable.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {ERC2771Forwarder} from "@openzeppelin/contracts/metatx/ERC2771Forwarder.sol";
import {ERC1967Proxy} from "@openzeppelin/contracts/proxy/ERC1967/ERC1967Proxy.sol";
import {Errors} from "@openzeppelin/contracts/utils/Errors.sol";
import {CommonBase} from "forge-std/Base.sol";
import {StdUtils} from "forge-std/StdUtils.sol";

/// @dev Short names for the enums, shared by the unit tests and the invariant handler.
abstract contract ServiceRegistryNames {
    IServiceRegistry.ServiceKind internal constant STATIC = IServiceRegistry.ServiceKind.StaticHosting;
    IServiceRegistry.ServiceKind internal constant DYNAMIC = IServiceRegistry.ServiceKind.DynamicHosting;
    IServiceRegistry.ServiceKind internal constant STORAGE = IServiceRegistry.ServiceKind.Storage;
    IServiceRegistry.ServiceKind internal constant DOMAIN = IServiceRegistry.ServiceKind.Domain;
    IServiceRegistry.ServiceKind internal constant DATABASE = IServiceRegistry.ServiceKind.Database;

    IServiceRegistry.ServiceState internal constant NONE = IServiceRegistry.ServiceState.None;
    IServiceRegistry.ServiceState internal constant ACTIVE = IServiceRegistry.ServiceState.Active;
    IServiceRegistry.ServiceState internal constant PAUSED = IServiceRegistry.ServiceState.Paused;
    IServiceRegistry.ServiceState internal constant SUSPENDED = IServiceRegistry.ServiceState.Suspended;
    IServiceRegistry.ServiceState internal constant CANCELLED = IServiceRegistry.ServiceState.Cancelled;

    IAccountRegistry.Tier internal constant FREE = IAccountRegistry.Tier.Free;
    IAccountRegistry.Tier internal constant PAID = IAccountRegistry.Tier.Paid;

    uint256 internal constant KIND_COUNT = 5;
}

contract ServiceRegistryTest is PlatformTest, ServiceRegistryNames {
    uint64 internal constant FREE_TIER_DURATION = 180 days;

    bytes32 internal operatorRole;
    bytes32 internal adminRole;

    function setUp() public override {
        super.setUp();
        // Read once: a view call between vm.prank and the call under test would consume the prank.
        operatorRole = services.OPERATOR_ROLE();
        adminRole = services.DEFAULT_ADMIN_ROLE();
    }

    // ---------------------------------------------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------------------------------------------

    /// @dev The launch policy of PlatformDeployer: (price per hour, limit) for a kind and a tier.
    function _defaultPolicy(IServiceRegistry.ServiceKind kind, IAccountRegistry.Tier tier)
        internal
        pure
        returns (uint256 price, uint32 limit)
    {
        if (tier == FREE) {
            uint32[5] memory freeLimits = [uint32(1), 0, 1, 1, 0];
            return (0, freeLimits[uint8(kind)]);
        }
        uint256[5] memory paidPrices = [uint256(1000), 10_000, 500, 0, 5000];
        uint32[5] memory paidLimits = [uint32(20), 5, 1, 10, 3];
        return (paidPrices[uint8(kind)], paidLimits[uint8(kind)]);
    }

    function _registerPaid(address user) internal {
        _register(user);
        _makePaid(user);
    }

    function _stateOf(uint256 id) internal view returns (IServiceRegistry.ServiceState) {
        return services.serviceOf(id).state;
    }

    function _assertState(uint256 id, IServiceRegistry.ServiceState expected) internal view {
        assertEq(uint8(_stateOf(id)), uint8(expected), "service state");
    }

    function _pauseAs(address caller, uint256 id) internal {
        vm.prank(caller);
        services.pause(id);
    }

    function _suspend(uint256 id) internal {
        vm.prank(operator);
        services.suspend(id);
    }

    function _cancelAs(address caller, uint256 id) internal {
        vm.prank(caller);
        services.cancel(id);
    }

    /// @dev Creates a service of `kind` for `user` and moves it to `state` through the public API.
    function _serviceIn(address user, IServiceRegistry.ServiceKind kind, IServiceRegistry.ServiceState state)
        internal
        returns (uint256 id)
    {
        id = _createService(user, kind);
        if (state == PAUSED) _pauseAs(user, id);
        else if (state == SUSPENDED) _suspend(id);
        else if (state == CANCELLED) _cancelAs(user, id);
        _assertState(id, state);
    }

    function _expectUnauthorized(address caller, bytes32 role) internal {
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, role)
        );
    }

    function _expectInvalidState(uint256 id, IServiceRegistry.ServiceState state) internal {
        vm.expectRevert(
            abi.encodeWithSelector(IServiceRegistry.ServiceRegistryInvalidState.selector, id, state)
        );
    }

    function _expectNotOwner(uint256 id, address caller) internal {
        vm.expectRevert(abi.encodeWithSelector(IServiceRegistry.ServiceRegistryNotOwner.selector, id, caller));
    }

    function _expectUnknown(uint256 id) internal {
        vm.expectRevert(abi.encodeWithSelector(IServiceRegistry.ServiceRegistryUnknownService.selector, id));
    }

    function _expectEmitFromServices() internal {
        vm.expectEmit(true, true, true, true, address(services));
    }

    function _freshProxy(address admin_, address accounts_, address ledger_)
        internal
        returns (ServiceRegistry)
    {
        ServiceRegistry impl = new ServiceRegistry(address(forwarder));
        return ServiceRegistry(
            address(
                new ERC1967Proxy(
                    address(impl), abi.encodeCall(ServiceRegistry.initialize, (admin_, accounts_, ledger_))
                )
            )
        );
    }

    // ---------------------------------------------------------------------------------------------------
    // initialize and upgrades
    // ---------------------------------------------------------------------------------------------------

    function test_initialize_setsAdminAndDependencies() public {
        ServiceRegistry fresh = _freshProxy(admin, address(accounts), address(ledger));
        assertTrue(fresh.hasRole(adminRole, admin));
        assertFalse(fresh.hasRole(operatorRole, operator));
        assertEq(fresh.accountRegistry(), address(accounts));
        assertEq(fresh.creditLedger(), address(ledger));
        assertEq(fresh.serviceCount(), 0);
        assertTrue(fresh.isTrustedForwarder(address(forwarder)));
        for (uint256 k; k < KIND_COUNT; ++k) {
            IServiceRegistry.ServiceKind kind = IServiceRegistry.ServiceKind(k);
            assertEq(fresh.tierLimit(kind, FREE), 0);
            assertEq(fresh.tierLimit(kind, PAID), 0);
            assertEq(fresh.priceFor(kind, FREE), 0);
            assertEq(fresh.priceFor(kind, PAID), 0);
        }
        // All limits start at zero, so nothing can be created before the admin sets them.
        _register(alice);
        vm.expectRevert(
            abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryTierLimitExceeded.selector, alice, STATIC, 0
            )
        );
        vm.prank(alice);
        fresh.createService(STATIC, keccak256("site"));
    }

    function test_initialize_revertsOnZeroAdmin() public {
        ServiceRegistry impl = new ServiceRegistry(address(forwarder));
        bytes memory init =
            abi.encodeCall(ServiceRegistry.initialize, (address(0), address(accounts), address(ledger)));
        vm.expectRevert(IServiceRegistry.ServiceRegistryZeroAddress.selector);
        new ERC1967Proxy(address(impl), init);
    }

    function test_initialize_revertsOnZeroAccounts() public {
        ServiceRegistry impl = new ServiceRegistry(address(forwarder));
        bytes memory init = abi.encodeCall(ServiceRegistry.initialize, (admin, address(0), address(ledger)));
        vm.expectRevert(IServiceRegistry.ServiceRegistryZeroAddress.selector);
        new ERC1967Proxy(address(impl), init);
    }

    function test_initialize_revertsOnZeroLedger() public {
        ServiceRegistry impl = new ServiceRegistry(address(forwarder));
        bytes memory init = abi.encodeCall(ServiceRegistry.initialize, (admin, address(accounts), address(0)));
        vm.expectRevert(IServiceRegistry.ServiceRegistryZeroAddress.selector);
        new ERC1967Proxy(address(impl), init);
    }

    function test_initialize_revertsWhenCalledAgain() public {
        vm.expectRevert(Initializable.InvalidInitialization.selector);
        vm.prank(admin);
        services.initialize(stranger, stranger, stranger);
    }

    function test_initialize_revertsOnImplementation() public {
        // The constructor disables initializers so nobody can take over the bare implementation.
        ServiceRegistry impl = new ServiceRegistry(address(forwarder));
        vm.expectRevert(Initializable.InvalidInitialization.selector);
        impl.initialize(admin, address(accounts), address(ledger));
    }

    function test_upgradeToAndCall_byAdminKeepsState() public {
        uint256 id = _createService(alice, STATIC);
        ServiceRegistry next = new ServiceRegistry(address(forwarder));
        vm.prank(admin);
        services.upgradeToAndCall(address(next), "");
        assertEq(services.ownerOf(id), alice);
        assertEq(services.serviceCount(), 1);
        assertEq(services.accountRegistry(), address(accounts));
        assertEq(services.tierLimit(DYNAMIC, PAID), 5);
    }

    function test_upgradeToAndCall_revertsForNonAdmin() public {
        ServiceRegistry next = new ServiceRegistry(address(forwarder));
        _expectUnauthorized(operator, adminRole);
        vm.prank(operator);
        services.upgradeToAndCall(address(next), "");
    }

    // ---------------------------------------------------------------------------------------------------
    // Default policy, setPrice, setTierLimit, priceFor, tierLimit
    // ---------------------------------------------------------------------------------------------------

    function test_defaultPolicy_matchesDeployer() public view {
        for (uint256 k; k < KIND_COUNT; ++k) {
            IServiceRegistry.ServiceKind kind = IServiceRegistry.ServiceKind(k);
            for (uint256 t; t < 2; ++t) {
                IAccountRegistry.Tier tier = IAccountRegistry.Tier(t);
                (uint256 price, uint32 limit) = _defaultPolicy(kind, tier);
                assertEq(services.priceFor(kind, tier), price, "price");
                assertEq(services.tierLimit(kind, tier), limit, "limit");
            }
        }
        assertEq(services.accountRegistry(), address(accounts));
        assertEq(services.creditLedger(), address(ledger));
        assertEq(accounts.freeTierDuration(), FREE_TIER_DURATION);
    }

    function test_setPrice_setsAndEmits() public {
        _expectEmitFromServices();
        emit IServiceRegistry.PriceSet(DATABASE, PAID, 7777);
        vm.prank(admin);
        services.setPrice(DATABASE, PAID, 7777);
        assertEq(services.priceFor(DATABASE, PAID), 7777);
        assertEq(services.priceFor(DATABASE, FREE), 0, "other tier untouched");
    }

    function test_setPrice_appliesToExistingServices() public {
        _registerPaid(alice);
        _fund(alice, 1e12);
        uint256 id = _createService(alice, STATIC);
        assertEq(services.priceOf(id), 1000);
        vm.prank(admin);
        services.setPrice(STATIC, PAID, 1234);
        assertEq(services.priceOf(id), 1234);
    }

    function test_setPrice_revertsForOperator() public {
        _expectUnauthorized(operator, adminRole);
        vm.prank(operator);
        services.setPrice(STATIC, PAID, 1);
    }

    function testFuzz_setPrice(uint8 kindSeed, bool paid, uint256 price) public {
        IServiceRegistry.ServiceKind kind = IServiceRegistry.ServiceKind(kindSeed % KIND_COUNT);
        IAccountRegistry.Tier tier = paid ? PAID : FREE;
        _expectEmitFromServices();
        emit IServiceRegistry.PriceSet(kind, tier, price);
        vm.prank(admin);
        services.setPrice(kind, tier, price);
        assertEq(services.priceFor(kind, tier), price);
    }

    function test_setTierLimit_setsAndEmits() public {
        _expectEmitFromServices();
        emit IServiceRegistry.TierLimitSet(DYNAMIC, FREE, 2);
        vm.prank(admin);
        services.setTierLimit(DYNAMIC, FREE, 2);
        assertEq(services.tierLimit(DYNAMIC, FREE), 2);
        assertEq(services.tierLimit(DYNAMIC, PAID), 5, "other tier untouched");

        // The new limit is enforced from the next creation on.
        _createService(alice, DYNAMIC);
        _createService(alice, DYNAMIC);
        vm.expectRevert(
            abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryTierLimitExceeded.selector, alice, DYNAMIC, 2
            )
        );
        vm.prank(alice);
        services.createService(DYNAMIC, keccak256("third"));
    }

    function test_setTierLimit_loweredBelowOpenBlocksCreation() public {
        _registerPaid(alice);
        _fund(alice, 1e12);
        _createService(alice, STATIC);
        _createService(alice, STATIC);
        vm.prank(admin);
        services.setTierLimit(STATIC, PAID, 1);
        // Existing services stay; only new ones are refused.
        assertEq(services.openServices(alice, STATIC), 2);
        vm.expectRevert(
            abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryTierLimitExceeded.selector, alice, STATIC, 1
            )
        );
        vm.prank(alice);
        services.createService(STATIC, keccak256("x"));
    }

    function test_setTierLimit_revertsForOperator() public {
        _expectUnauthorized(operator, adminRole);
        vm.prank(operator);
        services.setTierLimit(STATIC, FREE, 100);
    }

    function testFuzz_setTierLimit(uint8 kindSeed, bool paid, uint32 limit) public {
        IServiceRegistry.ServiceKind kind = IServiceRegistry.ServiceKind(kindSeed % KIND_COUNT);
        IAccountRegistry.Tier tier = paid ? PAID : FREE;
        _expectEmitFromServices();
        emit IServiceRegistry.TierLimitSet(kind, tier, limit);
        vm.prank(admin);
        services.setTierLimit(kind, tier, limit);
        assertEq(services.tierLimit(kind, tier), limit);
    }

    // ---------------------------------------------------------------------------------------------------
    // createService
    // ---------------------------------------------------------------------------------------------------

    function test_createService_freeServiceExpiresAfterFreeTierDuration() public {
        _register(alice);
        bytes32 ref = keccak256("alice.decentraspace.site");
        uint64 expiresAt = uint64(block.timestamp) + FREE_TIER_DURATION;

        _expectEmitFromServices();
        emit IServiceRegistry.ServiceCreated(1, alice, STATIC, ref, expiresAt);
        vm.prank(alice);
        uint256 id = services.createService(STATIC, ref);

        assertEq(id, 1, "ids start at 1");
        IServiceRegistry.Service memory svc = services.serviceOf(id);
        assertEq(svc.owner, alice);
        assertEq(uint8(svc.kind), uint8(STATIC));
        assertEq(uint8(svc.state), uint8(ACTIVE));
        assertEq(svc.createdAt, uint64(block.timestamp));
        assertEq(svc.expiresAt, expiresAt);
        assertEq(svc.ref, ref);
        assertEq(services.ownerOf(id), alice);
        assertEq(services.serviceCount(), 1);
        assertEq(services.openServices(alice, STATIC), 1);
        assertEq(services.openServices(alice, STORAGE), 0);
        assertTrue(services.isChargeable(id));
        assertFalse(services.isExpired(id));
    }

    function test_createService_paidServiceNeverExpires() public {
        _registerPaid(alice);
        _fund(alice, 1e12);
        bytes32 ref = keccak256("app");
        _expectEmitFromServices();
        emit IServiceRegistry.ServiceCreated(1, alice, DYNAMIC, ref, 0);
        vm.prank(alice);
        uint256 id = services.createService(DYNAMIC, ref);
        assertEq(services.serviceOf(id).expiresAt, 0);
        vm.warp(block.timestamp + 10 * 365 days);
        assertFalse(services.isExpired(id));
        assertTrue(services.isChargeable(id));
    }

    function test_createService_paidTermCountsAsPaid() public {
        // A Paid tier with an end still runs now, so the service gets no expiry.
        _register(alice);
        vm.prank(operator);
        accounts.setTier(alice, PAID, uint64(block.timestamp + 30 days));
        _fund(alice, 1e12);
        uint256 id = _createService(alice, DATABASE);
        assertEq(services.serviceOf(id).expiresAt, 0);
    }

    function test_createService_revertsWithoutOneHourOfCredit() public {
        _registerPaid(alice);
        vm.expectRevert(
            abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryInsufficientCreditToOpen.selector, alice, DATABASE, 0, 5000
            )
        );
        vm.prank(alice);
        services.createService(DATABASE, keccak256("db"));

        _fund(alice, 4999);
        vm.expectRevert(
            abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryInsufficientCreditToOpen.selector, alice, DATABASE, 4999, 5000
            )
        );
        vm.prank(alice);
        services.createService(DATABASE, keccak256("db"));
        assertEq(services.serviceCount(), 0, "nothing opened");
        assertEq(services.openServices(alice, DATABASE), 0);

        // Exactly one hour is enough, and opening charges nothing.
        _fund(alice, 1);
        vm.prank(alice);
        uint256 id = services.createService(DATABASE, keccak256("db"));
        _assertState(id, ACTIVE);
        assertEq(ledger.balanceOf(alice), 5000);
    }

    function test_createService_freeServiceNeedsNoCredit() public {
        // Free prices are zero: an empty balance opens a free site.
        _register(alice);
        assertEq(ledger.balanceOf(alice), 0);
        uint256 id = _createService(alice, STATIC);
        _assertState(id, ACTIVE);
    }

    function test_createService_freePriceOnPaidTierNeedsNoCredit() public {
        // Domains are free on the Paid tier too (their price is charged at purchase, off this registry).
        _registerPaid(alice);
        uint256 id = _createService(alice, DOMAIN);
        _assertState(id, ACTIVE);
    }

    function test_createService_relayedRequestIsCheckedToo() public {
        // The forwarder is not a way around the check: the owner is the request's signer.
        (address signer, uint256 key) = makeAddrAndKey("relayed-owner");
        _registerPaid(signer);
        bytes memory data = abi.encodeCall(IServiceRegistry.createService, (DATABASE, keccak256("db")));
        ERC2771Forwarder.ForwardRequestData memory request = _forwardRequest(key, address(services), data);
        // The forwarder reports a failed call without its reason; the call itself is what refused.
        vm.expectRevert(Errors.FailedCall.selector);
        forwarder.execute(request);
        assertEq(services.serviceCount(), 0, "nothing opened");
        vm.expectRevert(
            abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryInsufficientCreditToOpen.selector, signer, DATABASE, 0, 5000
            )
        );
        vm.prank(address(forwarder));
        (bool ok,) = address(services).call(abi.encodePacked(data, signer));
        ok; // the expected revert is checked by expectRevert

        _fund(signer, 5000);
        forwarder.execute(_forwardRequest(key, address(services), data));
        assertEq(services.ownerOf(1), signer);
    }

    function testFuzz_createService_opensOnlyWithOneHourOfCredit(uint8 kindSeed, uint256 balance) public {
        IServiceRegistry.ServiceKind kind = IServiceRegistry.ServiceKind(kindSeed % KIND_COUNT);
        (uint256 price,) = _defaultPolicy(kind, PAID);
        balance = bound(balance, 0, 3 * price + 1);
        _registerPaid(alice);
        if (balance > 0) _fund(alice, balance);
        if (balance < price) {
            vm.expectRevert(
                abi.encodeWithSelector(
                    IServiceRegistry.ServiceRegistryInsufficientCreditToOpen.selector,
                    alice,
                    kind,
                    balance,
                    price
                )
            );
        }
        vm.prank(alice);
        services.createService(kind, keccak256("s"));
        assertEq(services.openServices(alice, kind), balance < price ? 0 : 1);
        assertEq(ledger.balanceOf(alice), balance, "opening never charges");
    }

    function test_createService_idsIncrease() public {
        uint256 a = _createService(alice, STATIC);
        uint256 b = _createService(bob, STATIC);
        uint256 c = _createService(alice, STORAGE);
        assertEq(a, 1);
        assertEq(b, 2);
        assertEq(c, 3);
        assertEq(services.serviceCount(), 3);
        assertEq(services.ownerOf(b), bob);
    }

    function testFuzz_createService_expiryFollowsFreeTierDuration(uint64 duration, bytes32 ref) public {
        duration = uint64(bound(duration, 1, accounts.MAX_FREE_TIER_DURATION()));
        vm.prank(operator);
        accounts.setFreeTierDuration(duration);
        _register(alice);
        vm.prank(alice);
        uint256 id = services.createService(DOMAIN, ref);
        assertEq(services.serviceOf(id).expiresAt, uint64(block.timestamp) + duration);
        assertEq(services.serviceOf(id).ref, ref);
        vm.warp(block.timestamp + duration - 1);
        assertFalse(services.isExpired(id));
        vm.warp(block.timestamp + 1);
        assertTrue(services.isExpired(id));
    }

    function test_createService_revertsForUnregistered() public {
        vm.expectRevert(
            abi.encodeWithSelector(IServiceRegistry.ServiceRegistryAccountNotActive.selector, stranger)
        );
        vm.prank(stranger);
        services.createService(STATIC, keccak256("x"));
    }

    function test_createService_revertsForSuspendedAccount() public {
        _register(alice);
        vm.prank(operator);
        accounts.setStatus(alice, IAccountRegistry.AccountStatus.Suspended);
        vm.expectRevert(
            abi.encodeWithSelector(IServiceRegistry.ServiceRegistryAccountNotActive.selector, alice)
        );
        vm.prank(alice);
        services.createService(STATIC, keccak256("x"));

        // Reactivated, the account may create again.
        vm.prank(operator);
        accounts.setStatus(alice, IAccountRegistry.AccountStatus.Active);
        vm.prank(alice);
        services.createService(STATIC, keccak256("x"));
    }

    // ---------------------------------------------------------------------------------------------------
    // Tier limits
    // ---------------------------------------------------------------------------------------------------

    /// @dev Fills every kind up to its limit for `user`'s tier, then checks the next creation is refused.
    function _assertLimitsEnforced(address user, IAccountRegistry.Tier tier) internal {
        assertEq(uint8(accounts.effectiveTier(user)), uint8(tier));
        for (uint256 k; k < KIND_COUNT; ++k) {
            IServiceRegistry.ServiceKind kind = IServiceRegistry.ServiceKind(k);
            (, uint32 limit) = _defaultPolicy(kind, tier);
            for (uint32 i; i < limit; ++i) {
                vm.prank(user);
                services.createService(kind, bytes32(uint256(i)));
            }
            assertEq(services.openServices(user, kind), limit);
            vm.expectRevert(
                abi.encodeWithSelector(
                    IServiceRegistry.ServiceRegistryTierLimitExceeded.selector, user, kind, limit
                )
            );
            vm.prank(user);
            services.createService(kind, keccak256("one too many"));
        }
    }

    function test_tierLimits_freeDefaults() public {
        // Free: 1 static site, 0 dynamic, 1 storage, 1 domain, 0 database.
        _register(alice);
        _assertLimitsEnforced(alice, FREE);
        assertEq(services.serviceCount(), 3);
    }

    function test_tierLimits_paidDefaults() public {
        // Paid: 20 static, 5 dynamic, 1 storage, 10 domains, 3 databases.
        _registerPaid(alice);
        _fund(alice, 1e12);
        _assertLimitsEnforced(alice, PAID);
        assertEq(services.serviceCount(), 39);
    }

    function test_tierLimits_arePerAccount() public {
        _createService(alice, STATIC);
        uint256 id = _createService(bob, STATIC);
        assertEq(services.ownerOf(id), bob);
        assertEq(services.openServices(alice, STATIC), 1);
        assertEq(services.openServices(bob, STATIC), 1);
    }

    function test_tierLimits_cancelledServiceFreesItsSlot() public {
        uint256 first = _createService(alice, STATIC);
        vm.expectRevert(
            abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryTierLimitExceeded.selector, alice, STATIC, 1
            )
        );
        vm.prank(alice);
        services.createService(STATIC, keccak256("second"));

        _cancelAs(alice, first);
        assertEq(services.openServices(alice, STATIC), 0);
        uint256 second = _createService(alice, STATIC);
        assertEq(second, 2);
        assertEq(services.openServices(alice, STATIC), 1);
    }

    function test_tierLimits_pausedAndSuspendedServicesStillCount() public {
        uint256 id = _createService(alice, STATIC);
        _pauseAs(alice, id);
        vm.expectRevert(
            abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryTierLimitExceeded.selector, alice, STATIC, 1
            )
        );
        vm.prank(alice);
        services.createService(STATIC, keccak256("x"));
        _suspend(id);
        vm.expectRevert(
            abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryTierLimitExceeded.selector, alice, STATIC, 1
            )
        );
        vm.prank(alice);
        services.createService(STATIC, keccak256("x"));
    }

    function test_tierLimits_upgradeToPaidRaisesTheLimit() public {
        _createService(alice, STATIC);
        vm.expectRevert(
            abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryTierLimitExceeded.selector, alice, STATIC, 1
            )
        );
        vm.prank(alice);
        services.createService(STATIC, keccak256("second"));
        vm.expectRevert(
            abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryTierLimitExceeded.selector, alice, DATABASE, 0
            )
        );
        vm.prank(alice);
        services.createService(DATABASE, keccak256("db"));

        // Alice buys a month of Paid with credits.
        _fund(alice, PAID_TIER_PRICE);
        vm.prank(alice);
        accounts.upgrade(1);
        // Paid services are priced: each opens only with its first hour in the balance.
        _fund(alice, 1000 + 5000);

        vm.prank(alice);
        uint256 second = services.createService(STATIC, keccak256("second"));
        vm.prank(alice);
        uint256 db = services.createService(DATABASE, keccak256("db"));
        assertEq(services.openServices(alice, STATIC), 2);
        assertEq(services.serviceOf(second).expiresAt, 0);
        assertEq(services.serviceOf(db).expiresAt, 0);
    }

    function test_tierLimits_lapsedPaidFallsBackToFreeLimit() public {
        _register(alice);
        vm.prank(operator);
        accounts.setTier(alice, PAID, uint64(block.timestamp + 30 days));
        _fund(alice, 1e12);
        _createService(alice, STATIC);
        _createService(alice, STATIC);
        vm.warp(block.timestamp + 30 days);
        // Two open static sites against a Free limit of 1: creation is refused, not underflowed.
        vm.expectRevert(
            abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryTierLimitExceeded.selector, alice, STATIC, 1
            )
        );
        vm.prank(alice);
        services.createService(STATIC, keccak256("x"));
    }

    // ---------------------------------------------------------------------------------------------------
    // createServiceFor
    // ---------------------------------------------------------------------------------------------------

    function test_createServiceFor_byOperator() public {
        _register(alice);
        bytes32 ref = keccak256("first upload");
        uint64 expiresAt = uint64(block.timestamp) + FREE_TIER_DURATION;
        _expectEmitFromServices();
        emit IServiceRegistry.ServiceCreated(1, alice, STORAGE, ref, expiresAt);
        vm.prank(operator);
        uint256 id = services.createServiceFor(alice, STORAGE, ref);
        assertEq(services.ownerOf(id), alice, "owned by the user, not the operator");
        assertEq(services.openServices(alice, STORAGE), 1);
        assertEq(services.openServices(operator, STORAGE), 0);
        assertEq(services.serviceOf(id).expiresAt, expiresAt);
    }

    function test_createServiceFor_paidOwnerGetsNoExpiry() public {
        _registerPaid(alice);
        _fund(alice, 1e12);
        _expectEmitFromServices();
        emit IServiceRegistry.ServiceCreated(1, alice, DATABASE, keccak256("db"), 0);
        vm.prank(operator);
        services.createServiceFor(alice, DATABASE, keccak256("db"));
    }

    function test_createServiceFor_operatorCannotSkipTheCreditCheck() public {
        _registerPaid(alice);
        _fund(alice, 999);
        vm.expectRevert(
            abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryInsufficientCreditToOpen.selector, alice, STATIC, 999, 1000
            )
        );
        vm.prank(operator);
        services.createServiceFor(alice, STATIC, keccak256("site"));
    }

    function test_createServiceFor_enforcesOwnersLimit() public {
        _createService(alice, STORAGE);
        vm.expectRevert(
            abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryTierLimitExceeded.selector, alice, STORAGE, 1
            )
        );
        vm.prank(operator);
        services.createServiceFor(alice, STORAGE, keccak256("x"));
    }

    function test_createServiceFor_revertsOnZeroOwner() public {
        vm.expectRevert(IServiceRegistry.ServiceRegistryZeroAddress.selector);
        vm.prank(operator);
        services.createServiceFor(address(0), STORAGE, keccak256("x"));
    }

    function test_createServiceFor_revertsForUnregisteredOwner() public {
        vm.expectRevert(
            abi.encodeWithSelector(IServiceRegistry.ServiceRegistryAccountNotActive.selector, alice)
        );
        vm.prank(operator);
        services.createServiceFor(alice, STORAGE, keccak256("x"));
    }

    function test_createServiceFor_revertsForSuspendedOwner() public {
        _register(alice);
        vm.prank(operator);
        accounts.setStatus(alice, IAccountRegistry.AccountStatus.Suspended);
        vm.expectRevert(
            abi.encodeWithSelector(IServiceRegistry.ServiceRegistryAccountNotActive.selector, alice)
        );
        vm.prank(operator);
        services.createServiceFor(alice, STORAGE, keccak256("x"));
    }

    function test_createServiceFor_revertsForNonOperator() public {
        _register(alice);
        _expectUnauthorized(alice, operatorRole);
        vm.prank(alice);
        services.createServiceFor(alice, STORAGE, keccak256("x"));
    }

    // ---------------------------------------------------------------------------------------------------
    // pause
    // ---------------------------------------------------------------------------------------------------

    function test_pause_byOwner() public {
        uint256 id = _createService(alice, STATIC);
        _expectEmitFromServices();
        emit IServiceRegistry.ServicePaused(id, alice);
        _pauseAs(alice, id);
        _assertState(id, PAUSED);
        assertFalse(services.isChargeable(id));
        assertEq(services.openServices(alice, STATIC), 1, "a paused service keeps its slot");
    }

    function test_pause_byOperator() public {
        uint256 id = _createService(alice, STATIC);
        _expectEmitFromServices();
        emit IServiceRegistry.ServicePaused(id, operator);
        _pauseAs(operator, id);
        _assertState(id, PAUSED);
    }

    function test_pause_revertsForStranger() public {
        uint256 id = _createService(alice, STATIC);
        _expectNotOwner(id, stranger);
        _pauseAs(stranger, id);
        _assertState(id, ACTIVE);
    }

    function test_pause_revertsForAdmin() public {
        // The admin role does not imply the operator role.
        uint256 id = _createService(alice, STATIC);
        _expectNotOwner(id, admin);
        _pauseAs(admin, id);
    }

    function test_pause_revertsUnlessActive() public {
        uint256 paused = _serviceIn(alice, STATIC, PAUSED);
        _expectInvalidState(paused, PAUSED);
        _pauseAs(alice, paused);

        uint256 suspended = _serviceIn(alice, STORAGE, SUSPENDED);
        _expectInvalidState(suspended, SUSPENDED);
        _pauseAs(alice, suspended);

        uint256 cancelled = _serviceIn(alice, DOMAIN, CANCELLED);
        _expectInvalidState(cancelled, CANCELLED);
        _pauseAs(operator, cancelled);
    }

    function test_pause_revertsForUnknownService() public {
        _expectUnknown(0);
        _pauseAs(operator, 0);
        _expectUnknown(1);
        _pauseAs(alice, 1);
    }

    // ---------------------------------------------------------------------------------------------------
    // resume
    // ---------------------------------------------------------------------------------------------------

    function test_resume_pausedByOwner() public {
        uint256 id = _serviceIn(alice, STATIC, PAUSED);
        _expectEmitFromServices();
        emit IServiceRegistry.ServiceResumed(id, alice);
        vm.prank(alice);
        services.resume(id);
        _assertState(id, ACTIVE);
        assertTrue(services.isChargeable(id));
    }

    function test_resume_byOperator() public {
        uint256 id = _serviceIn(alice, STATIC, PAUSED);
        _expectEmitFromServices();
        emit IServiceRegistry.ServiceResumed(id, operator);
        vm.prank(operator);
        services.resume(id);
        _assertState(id, ACTIVE);
    }

    function test_resume_revertsForStranger() public {
        uint256 id = _serviceIn(alice, STATIC, PAUSED);
        _expectNotOwner(id, stranger);
        vm.prank(stranger);
        services.resume(id);
        _assertState(id, PAUSED);
    }

    function test_resume_revertsUnlessPausedOrSuspended() public {
        uint256 active = _createService(alice, STATIC);
        _expectInvalidState(active, ACTIVE);
        vm.prank(alice);
        services.resume(active);

        uint256 cancelled = _serviceIn(alice, STORAGE, CANCELLED);
        _expectInvalidState(cancelled, CANCELLED);
        vm.prank(operator);
        services.resume(cancelled);
    }

    function test_resume_revertsForUnknownService() public {
        _expectUnknown(42);
        vm.prank(operator);
        services.resume(42);
    }

    function test_resume_revertsForSuspendedAccount() public {
        uint256 id = _serviceIn(alice, STATIC, PAUSED);
        vm.prank(operator);
        accounts.setStatus(alice, IAccountRegistry.AccountStatus.Suspended);
        vm.expectRevert(
            abi.encodeWithSelector(IServiceRegistry.ServiceRegistryAccountNotActive.selector, alice)
        );
        vm.prank(alice);
        services.resume(id);
        // The operator cannot bypass it either: the error names the owner, not the caller.
        vm.expectRevert(
            abi.encodeWithSelector(IServiceRegistry.ServiceRegistryAccountNotActive.selector, alice)
        );
        vm.prank(operator);
        services.resume(id);
    }

    function test_resume_revertsWhenExpired() public {
        uint256 id = _serviceIn(alice, STATIC, PAUSED);
        uint64 expiresAt = services.serviceOf(id).expiresAt;
        vm.warp(expiresAt);
        vm.expectRevert(
            abi.encodeWithSelector(IServiceRegistry.ServiceRegistryServiceExpired.selector, id, expiresAt)
        );
        vm.prank(alice);
        services.resume(id);
        vm.expectRevert(
            abi.encodeWithSelector(IServiceRegistry.ServiceRegistryServiceExpired.selector, id, expiresAt)
        );
        vm.prank(operator);
        services.resume(id);
    }

    function test_resume_expiredServiceWorksOnceOwnerIsPaid() public {
        uint256 id = _serviceIn(alice, STATIC, PAUSED);
        vm.warp(services.serviceOf(id).expiresAt);
        _makePaid(alice);
        _fund(alice, 1000);
        vm.prank(alice);
        services.resume(id);
        _assertState(id, ACTIVE);
    }

    function test_resume_revertsOnInsufficientCredit() public {
        _registerPaid(alice);
        _fund(alice, 10_000);
        uint256 id = _createService(alice, DYNAMIC);
        // Its first hour is charged, emptying the balance, and its owner pauses it.
        vm.prank(billing);
        ledger.deduct(alice, id, 10_000, keccak256("hour 1"));
        vm.prank(alice);
        services.pause(id);
        vm.expectRevert(
            abi.encodeWithSelector(IServiceRegistry.ServiceRegistryInsufficientCredit.selector, id, 0, 10_000)
        );
        vm.prank(alice);
        services.resume(id);

        _fund(alice, 9999);
        vm.expectRevert(
            abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryInsufficientCredit.selector, id, 9999, 10_000
            )
        );
        vm.prank(operator);
        services.resume(id);

        // Exactly one hour of credit is enough.
        _fund(alice, 1);
        vm.prank(alice);
        services.resume(id);
        _assertState(id, ACTIVE);
        assertEq(ledger.balanceOf(alice), 10_000, "resuming charges nothing");
    }

    function test_resume_freeServiceNeedsNoCredit() public {
        // Free prices are zero, so an empty balance covers one hour.
        uint256 id = _serviceIn(alice, STATIC, PAUSED);
        assertEq(ledger.balanceOf(alice), 0);
        vm.prank(alice);
        services.resume(id);
        _assertState(id, ACTIVE);
    }

    function test_resume_afterDepletionOnceCredited() public {
        _registerPaid(alice);
        _fund(alice, 1000);
        uint256 id = _createService(alice, STATIC);

        // Billing charges the last hour, the balance hits zero, and the operator suspends the service.
        vm.prank(billing);
        ledger.deduct(alice, id, 1000, keccak256("hour 1"));
        assertEq(ledger.balanceOf(alice), 0);
        _expectEmitFromServices();
        emit IServiceRegistry.ServiceSuspended(id, operator);
        _suspend(id);
        assertFalse(services.isChargeable(id));

        vm.expectRevert(
            abi.encodeWithSelector(IServiceRegistry.ServiceRegistryInsufficientCredit.selector, id, 0, 1000)
        );
        vm.prank(alice);
        services.resume(id);

        _fund(alice, 5000);
        _expectEmitFromServices();
        emit IServiceRegistry.ServiceResumed(id, alice);
        vm.prank(alice);
        services.resume(id);
        _assertState(id, ACTIVE);
        assertTrue(services.isChargeable(id));
    }

    function test_resume_checksInOrder() public {
        // State first, then the account, then the expiry, then the credit.
        _register(alice);
        vm.prank(operator);
        accounts.setTier(alice, PAID, uint64(block.timestamp + 30 days));
        _fund(alice, 1e12);
        uint256 id = _serviceIn(alice, DYNAMIC, PAUSED);
        vm.prank(operator);
        services.setExpiry(id, uint64(block.timestamp + 1 days));
        vm.prank(operator);
        accounts.setStatus(alice, IAccountRegistry.AccountStatus.Suspended);
        vm.warp(block.timestamp + 30 days);

        vm.expectRevert(
            abi.encodeWithSelector(IServiceRegistry.ServiceRegistryAccountNotActive.selector, alice)
        );
        vm.prank(alice);
        services.resume(id);

        vm.prank(operator);
        accounts.setStatus(alice, IAccountRegistry.AccountStatus.Active);
        uint64 expiresAt = services.serviceOf(id).expiresAt;
        vm.expectRevert(
            abi.encodeWithSelector(IServiceRegistry.ServiceRegistryServiceExpired.selector, id, expiresAt)
        );
        vm.prank(alice);
        services.resume(id);
    }

    // ---------------------------------------------------------------------------------------------------
    // suspend
    // ---------------------------------------------------------------------------------------------------

    function test_suspend_activeService() public {
        uint256 id = _createService(alice, STATIC);
        _expectEmitFromServices();
        emit IServiceRegistry.ServiceSuspended(id, operator);
        _suspend(id);
        _assertState(id, SUSPENDED);
        assertFalse(services.isChargeable(id));
    }

    function test_suspend_pausedService() public {
        uint256 id = _serviceIn(alice, STATIC, PAUSED);
        _expectEmitFromServices();
        emit IServiceRegistry.ServiceSuspended(id, operator);
        _suspend(id);
        _assertState(id, SUSPENDED);
    }

    function test_suspend_revertsWhenSuspendedOrCancelled() public {
        uint256 suspended = _serviceIn(alice, STATIC, SUSPENDED);
        _expectInvalidState(suspended, SUSPENDED);
        _suspend(suspended);

        uint256 cancelled = _serviceIn(alice, STORAGE, CANCELLED);
        _expectInvalidState(cancelled, CANCELLED);
        _suspend(cancelled);
    }

    function test_suspend_revertsForUnknownService() public {
        _expectUnknown(7);
        _suspend(7);
    }

    function test_suspend_revertsForOwner() public {
        uint256 id = _createService(alice, STATIC);
        _expectUnauthorized(alice, operatorRole);
        vm.prank(alice);
        services.suspend(id);
    }

    // ---------------------------------------------------------------------------------------------------
    // cancel
    // ---------------------------------------------------------------------------------------------------

    function test_cancel_byOwner() public {
        uint256 id = _createService(alice, STATIC);
        _expectEmitFromServices();
        emit IServiceRegistry.ServiceCancelled(id, alice);
        _cancelAs(alice, id);
        _assertState(id, CANCELLED);
        assertEq(services.openServices(alice, STATIC), 0);
        assertFalse(services.isChargeable(id));
        assertEq(services.ownerOf(id), alice, "a cancelled service keeps its record");
        assertEq(services.serviceCount(), 1);
    }

    function test_cancel_byOperator() public {
        uint256 id = _createService(alice, STORAGE);
        _expectEmitFromServices();
        emit IServiceRegistry.ServiceCancelled(id, operator);
        _cancelAs(operator, id);
        _assertState(id, CANCELLED);
        assertEq(services.openServices(alice, STORAGE), 0);
    }

    function test_cancel_fromPausedAndSuspended() public {
        uint256 paused = _serviceIn(alice, STATIC, PAUSED);
        uint256 suspended = _serviceIn(alice, STORAGE, SUSPENDED);
        _cancelAs(alice, paused);
        _cancelAs(alice, suspended);
        _assertState(paused, CANCELLED);
        _assertState(suspended, CANCELLED);
        assertEq(services.openServices(alice, STATIC), 0);
        assertEq(services.openServices(alice, STORAGE), 0);
    }

    function test_cancel_bySuspendedAccount() public {
        // A suspended owner may still walk away from a service.
        uint256 id = _createService(alice, STATIC);
        vm.prank(operator);
        accounts.setStatus(alice, IAccountRegistry.AccountStatus.Suspended);
        _cancelAs(alice, id);
        _assertState(id, CANCELLED);
    }

    function test_cancel_revertsForStranger() public {
        uint256 id = _createService(alice, STATIC);
        _expectNotOwner(id, stranger);
        _cancelAs(stranger, id);
        _assertState(id, ACTIVE);
    }

    function test_cancel_revertsTwice() public {
        uint256 id = _serviceIn(alice, STATIC, CANCELLED);
        _expectInvalidState(id, CANCELLED);
        _cancelAs(alice, id);
        _expectInvalidState(id, CANCELLED);
        _cancelAs(operator, id);
        assertEq(services.openServices(alice, STATIC), 0, "no double decrement");
    }

    function test_cancel_revertsForUnknownService() public {
        _expectUnknown(3);
        _cancelAs(alice, 3);
    }

    // ---------------------------------------------------------------------------------------------------
    // setExpiry
    // ---------------------------------------------------------------------------------------------------

    function test_setExpiry_setsAndEmits() public {
        uint256 id = _createService(alice, STATIC);
        uint64 expiresAt = uint64(block.timestamp + 1 days);
        _expectEmitFromServices();
        emit IServiceRegistry.ServiceExpirySet(id, expiresAt);
        vm.prank(operator);
        services.setExpiry(id, expiresAt);
        assertEq(services.serviceOf(id).expiresAt, expiresAt);
        vm.warp(expiresAt);
        assertTrue(services.isExpired(id));
        assertFalse(services.isChargeable(id));
    }

    function test_setExpiry_zeroMeansNever() public {
        uint256 id = _serviceIn(alice, STATIC, PAUSED);
        vm.warp(services.serviceOf(id).expiresAt + 1);
        assertTrue(services.isExpired(id));
        _expectEmitFromServices();
        emit IServiceRegistry.ServiceExpirySet(id, 0);
        vm.prank(operator);
        services.setExpiry(id, 0);
        assertFalse(services.isExpired(id));
        vm.prank(alice);
        services.resume(id);
        assertTrue(services.isChargeable(id));
    }

    function test_setExpiry_onPaidServiceAppliesAfterLapse() public {
        _register(alice);
        vm.prank(operator);
        accounts.setTier(alice, PAID, uint64(block.timestamp + 30 days));
        _fund(alice, 1e12);
        uint256 id = _createService(alice, STATIC);
        vm.prank(operator);
        services.setExpiry(id, uint64(block.timestamp + 1 days));
        vm.warp(block.timestamp + 1 days);
        assertFalse(services.isExpired(id), "Paid owners' services do not expire");
        vm.warp(block.timestamp + 29 days);
        assertTrue(services.isExpired(id));
    }

    function test_setExpiry_revertsForUnknownService() public {
        _expectUnknown(5);
        vm.prank(operator);
        services.setExpiry(5, 1);
    }

    function test_setExpiry_revertsForOwner() public {
        uint256 id = _createService(alice, STATIC);
        _expectUnauthorized(alice, operatorRole);
        vm.prank(alice);
        services.setExpiry(id, 0);
    }

    // ---------------------------------------------------------------------------------------------------
    // Views: isExpired, isChargeable, priceOf, serviceOf, ownerOf
    // ---------------------------------------------------------------------------------------------------

    function test_isExpired_freeServiceAtItsExpiry() public {
        uint256 id = _createService(alice, STATIC);
        uint64 expiresAt = services.serviceOf(id).expiresAt;
        vm.warp(expiresAt - 1);
        assertFalse(services.isExpired(id));
        assertTrue(services.isChargeable(id));
        vm.warp(expiresAt);
        assertTrue(services.isExpired(id));
        assertFalse(services.isChargeable(id), "expired services are not chargeable");
        _assertState(id, ACTIVE);
    }

    function test_isExpired_followsOwnersTier() public {
        uint256 id = _createService(alice, STATIC);
        uint64 expiresAt = services.serviceOf(id).expiresAt;
        vm.warp(expiresAt);
        assertTrue(services.isExpired(id));

        // Upgrading keeps the site alive...
        _fund(alice, PAID_TIER_PRICE);
        vm.prank(alice);
        accounts.upgrade(1);
        assertFalse(services.isExpired(id));
        assertTrue(services.isChargeable(id));

        // ...until the paid month lapses.
        vm.warp(block.timestamp + 30 days - 1);
        assertFalse(services.isExpired(id));
        vm.warp(block.timestamp + 1);
        assertTrue(services.isExpired(id));
        assertFalse(services.isChargeable(id));
    }

    function test_isExpired_falseForServiceWithoutExpiry() public {
        // A service created while Paid has no expiry, even after its owner falls back to Free.
        _register(alice);
        vm.prank(operator);
        accounts.setTier(alice, PAID, uint64(block.timestamp + 30 days));
        _fund(alice, 1e12);
        uint256 id = _createService(alice, STATIC);
        vm.warp(block.timestamp + 365 days);
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(FREE));
        assertFalse(services.isExpired(id));
    }

    function test_isExpired_falseForUnknownService() public view {
        assertFalse(services.isExpired(99));
    }

    function test_isChargeable_onlyActiveAndUnexpired() public {
        uint256 active = _createService(alice, STATIC);
        uint256 paused = _serviceIn(alice, STORAGE, PAUSED);
        uint256 suspended = _serviceIn(alice, DOMAIN, SUSPENDED);
        uint256 cancelled = _serviceIn(bob, STATIC, CANCELLED);
        assertTrue(services.isChargeable(active));
        assertFalse(services.isChargeable(paused));
        assertFalse(services.isChargeable(suspended));
        assertFalse(services.isChargeable(cancelled));
        assertFalse(services.isChargeable(0));
        assertFalse(services.isChargeable(99));

        vm.warp(services.serviceOf(active).expiresAt);
        assertFalse(services.isChargeable(active));
    }

    function test_priceOf_followsOwnersTier() public {
        _register(alice);
        vm.prank(operator);
        accounts.setTier(alice, PAID, uint64(block.timestamp + 30 days));
        _fund(alice, 1e12);
        uint256 stat = _createService(alice, STATIC);
        uint256 db = _createService(alice, DATABASE);
        assertEq(services.priceOf(stat), 1000);
        assertEq(services.priceOf(db), 5000);
        vm.warp(block.timestamp + 30 days);
        assertEq(services.priceOf(stat), 0);
        assertEq(services.priceOf(db), 0);
    }

    function test_priceOf_revertsForUnknownService() public {
        _expectUnknown(1);
        services.priceOf(1);
    }

    function test_serviceOf_unknownIsEmpty() public view {
        IServiceRegistry.Service memory svc = services.serviceOf(12);
        assertEq(svc.owner, address(0));
        assertEq(uint8(svc.state), uint8(NONE));
        assertEq(svc.createdAt, 0);
        assertEq(svc.expiresAt, 0);
        assertEq(svc.ref, bytes32(0));
        assertEq(services.ownerOf(12), address(0));
        assertEq(services.openServices(stranger, STATIC), 0);
    }

    // ---------------------------------------------------------------------------------------------------
    // Gasless: the relayer submits, the signer acts
    // ---------------------------------------------------------------------------------------------------

    function _relay(uint256 signerKey, bytes memory data) internal {
        ERC2771Forwarder.ForwardRequestData memory req = _forwardRequest(signerKey, address(services), data);
        vm.prank(relayer);
        forwarder.execute(req);
    }

    function test_gasless_createPauseResume() public {
        _register(alice);
        bytes32 ref = keccak256("gasless.site");
        uint64 expiresAt = uint64(block.timestamp) + FREE_TIER_DURATION;

        _expectEmitFromServices();
        emit IServiceRegistry.ServiceCreated(1, alice, STATIC, ref, expiresAt);
        _relay(aliceKey, abi.encodeCall(services.createService, (STATIC, ref)));
        assertEq(services.ownerOf(1), alice);
        assertEq(services.openServices(alice, STATIC), 1);
        assertEq(services.openServices(relayer, STATIC), 0);

        _expectEmitFromServices();
        emit IServiceRegistry.ServicePaused(1, alice);
        _relay(aliceKey, abi.encodeCall(services.pause, (1)));
        _assertState(1, PAUSED);

        _expectEmitFromServices();
        emit IServiceRegistry.ServiceResumed(1, alice);
        _relay(aliceKey, abi.encodeCall(services.resume, (1)));
        _assertState(1, ACTIVE);

        _expectEmitFromServices();
        emit IServiceRegistry.ServiceCancelled(1, alice);
        _relay(aliceKey, abi.encodeCall(services.cancel, (1)));
        _assertState(1, CANCELLED);
        assertEq(forwarder.nonces(alice), 4);
    }

    function test_gasless_othersSignatureCannotPause() public {
        uint256 id = _createService(alice, STATIC);
        _register(bob);
        ERC2771Forwarder.ForwardRequestData memory req =
            _forwardRequest(bobKey, address(services), abi.encodeCall(services.pause, (id)));
        // The forwarder turns the inner ServiceRegistryNotOwner(id, bob) into FailedCall.
        vm.expectRevert(Errors.FailedCall.selector);
        vm.prank(relayer);
        forwarder.execute(req);
        _assertState(id, ACTIVE);

        // The inner error names the signer, as the registry sees it through the forwarder.
        vm.prank(address(forwarder));
        (bool ok, bytes memory ret) =
            address(services).call(abi.encodePacked(abi.encodeCall(services.pause, (id)), bob));
        assertFalse(ok);
        assertEq(ret, abi.encodeWithSelector(IServiceRegistry.ServiceRegistryNotOwner.selector, id, bob));
    }

    function test_gasless_onlyTrustedForwarderMaySpoofSender() public {
        // Appending the owner's address to a direct call does not make the caller the owner.
        uint256 id = _createService(alice, STATIC);
        vm.prank(stranger);
        (bool ok, bytes memory ret) =
            address(services).call(abi.encodePacked(abi.encodeCall(services.pause, (id)), alice));
        assertFalse(ok);
        assertEq(ret, abi.encodeWithSelector(IServiceRegistry.ServiceRegistryNotOwner.selector, id, stranger));
    }

    function test_gasless_unregisteredSignerCannotCreate() public {
        ERC2771Forwarder.ForwardRequestData memory req = _forwardRequest(
            bobKey, address(services), abi.encodeCall(services.createService, (STATIC, bytes32(0)))
        );
        vm.expectRevert(Errors.FailedCall.selector);
        vm.prank(relayer);
        forwarder.execute(req);
        assertEq(services.serviceCount(), 0);
    }

    // ---------------------------------------------------------------------------------------------------
    // Fuzz: access control
    // ---------------------------------------------------------------------------------------------------

    /// @dev A caller that holds `role` nowhere, and is not the forwarder (whose calls carry a signer).
    function _assumeOutsider(address caller, bytes32 role) internal view {
        vm.assume(!services.hasRole(role, caller));
        vm.assume(caller != address(forwarder));
    }

    function testFuzz_createServiceFor_onlyOperator(address caller) public {
        _assumeOutsider(caller, operatorRole);
        _register(alice);
        _expectUnauthorized(caller, operatorRole);
        vm.prank(caller);
        services.createServiceFor(alice, STATIC, keccak256("x"));
        assertEq(services.serviceCount(), 0);
    }

    function testFuzz_suspend_onlyOperator(address caller) public {
        _assumeOutsider(caller, operatorRole);
        uint256 id = _createService(alice, STATIC);
        _expectUnauthorized(caller, operatorRole);
        vm.prank(caller);
        services.suspend(id);
        _assertState(id, ACTIVE);
    }

    function testFuzz_setExpiry_onlyOperator(address caller, uint64 expiresAt) public {
        _assumeOutsider(caller, operatorRole);
        uint256 id = _createService(alice, STATIC);
        uint64 before = services.serviceOf(id).expiresAt;
        _expectUnauthorized(caller, operatorRole);
        vm.prank(caller);
        services.setExpiry(id, expiresAt);
        assertEq(services.serviceOf(id).expiresAt, before);
    }

    function testFuzz_setPrice_onlyAdmin(address caller, uint256 price) public {
        _assumeOutsider(caller, adminRole);
        _expectUnauthorized(caller, adminRole);
        vm.prank(caller);
        services.setPrice(STATIC, PAID, price);
        assertEq(services.priceFor(STATIC, PAID), 1000);
    }

    function testFuzz_setTierLimit_onlyAdmin(address caller, uint32 limit) public {
        _assumeOutsider(caller, adminRole);
        _expectUnauthorized(caller, adminRole);
        vm.prank(caller);
        services.setTierLimit(STATIC, FREE, limit);
        assertEq(services.tierLimit(STATIC, FREE), 1);
    }

    function testFuzz_ownerActions_refusedForOthers(address caller) public {
        _assumeOutsider(caller, operatorRole);
        vm.assume(caller != alice);
        uint256 active = _createService(alice, STATIC);
        uint256 paused = _serviceIn(alice, STORAGE, PAUSED);

        _expectNotOwner(active, caller);
        _pauseAs(caller, active);
        _expectNotOwner(paused, caller);
        vm.prank(caller);
        services.resume(paused);
        _expectNotOwner(active, caller);
        _cancelAs(caller, active);

        _assertState(active, ACTIVE);
        _assertState(paused, PAUSED);
    }

    // ---------------------------------------------------------------------------------------------------
    // Fuzz: random state transitions against a model
    // ---------------------------------------------------------------------------------------------------

    /// @dev Applies up to 32 random actions (pause, resume, suspend, cancel) by random actors (owner,
    /// operator, stranger) to three services, predicting each outcome, and checks the state and the open
    /// counts after every step. Cancelled is final; no service ever goes back to None.
    function testFuzz_stateMachine_followsTheModel(uint8[] calldata ops) public {
        _registerPaid(alice);
        _fund(alice, 1e12); // resumes never fail for credit here; the credit rule has its own tests
        uint256[3] memory ids =
            [_createService(alice, STATIC), _createService(alice, STATIC), _createService(alice, DYNAMIC)];
        IServiceRegistry.ServiceState[3] memory model = [ACTIVE, ACTIVE, ACTIVE];
        address[3] memory actors = [alice, operator, stranger];

        uint256 steps = ops.length < 32 ? ops.length : 32;
        for (uint256 i; i < steps; ++i) {
            uint8 action = ops[i] & 3;
            address actor = actors[((ops[i] >> 2) & 3) % 3];
            uint256 s = (ops[i] >> 4) % 3;
            uint256 id = ids[s];
            IServiceRegistry.ServiceState current = model[s];

            bool allowed;
            IServiceRegistry.ServiceState next;
            if (action == 0) {
                (allowed, next) = (current == ACTIVE, PAUSED);
            } else if (action == 1) {
                (allowed, next) = (current == PAUSED || current == SUSPENDED, ACTIVE);
            } else if (action == 2) {
                (allowed, next) = (current == ACTIVE || current == PAUSED, SUSPENDED);
            } else {
                (allowed, next) = (current != CANCELLED, CANCELLED);
            }

            if (action == 2 && actor != operator) {
                _expectUnauthorized(actor, operatorRole);
            } else if (actor == stranger) {
                _expectNotOwner(id, stranger);
            } else if (!allowed) {
                _expectInvalidState(id, current);
            } else {
                model[s] = next;
            }

            vm.prank(actor);
            if (action == 0) services.pause(id);
            else if (action == 1) services.resume(id);
            else if (action == 2) services.suspend(id);
            else services.cancel(id);

            _assertState(id, model[s]);
            if (current == CANCELLED) _assertState(id, CANCELLED);
            uint32 openStatic = (model[0] != CANCELLED ? 1 : 0) + (model[1] != CANCELLED ? 1 : 0);
            uint32 openDynamic = model[2] != CANCELLED ? 1 : 0;
            assertEq(services.openServices(alice, STATIC), openStatic, "open static");
            assertEq(services.openServices(alice, DYNAMIC), openDynamic, "open dynamic");
        }
    }
}

/// @notice Drives the ServiceRegistry with random users and operator actions for the invariant tests,
/// keeping the ids it created and the ids it saw cancelled.
contract ServiceRegistryHandler is CommonBase, StdUtils, ServiceRegistryNames {
    ServiceRegistry internal immutable services;
    AccountRegistry internal immutable accounts;
    CreditLedger internal immutable ledger;
    address internal immutable operator;
    address internal immutable oracle;

    address[3] internal actors;
    uint256[] internal ids;
    mapping(uint256 id => bool) public cancelledSeen;
    uint256 internal fundNonce;

    constructor(
        ServiceRegistry services_,
        AccountRegistry accounts_,
        CreditLedger ledger_,
        address operator_,
        address oracle_,
        address[3] memory actors_
    ) {
        services = services_;
        accounts = accounts_;
        ledger = ledger_;
        operator = operator_;
        oracle = oracle_;
        actors = actors_;
    }

    function actorCount() external pure returns (uint256) {
        return 3;
    }

    function actorAt(uint256 i) external view returns (address) {
        return actors[i];
    }

    function idCount() external view returns (uint256) {
        return ids.length;
    }

    function create(uint256 actorSeed, uint256 kindSeed, bool viaOperator) external {
        address owner = actors[actorSeed % 3];
        IServiceRegistry.ServiceKind kind = IServiceRegistry.ServiceKind(kindSeed % KIND_COUNT);
        if (viaOperator) {
            vm.prank(operator);
            try services.createServiceFor(owner, kind, bytes32(kindSeed)) returns (uint256 id) {
                ids.push(id);
            } catch {}
        } else {
            vm.prank(owner);
            try services.createService(kind, bytes32(kindSeed)) returns (uint256 id) {
                ids.push(id);
            } catch {}
        }
    }

    function pause(uint256 idSeed, bool viaOperator) external {
        (uint256 id, address caller) = _pick(idSeed, viaOperator);
        if (id == 0) return;
        vm.prank(caller);
        try services.pause(id) {} catch {}
    }

    function resume(uint256 idSeed, bool viaOperator) external {
        (uint256 id, address caller) = _pick(idSeed, viaOperator);
        if (id == 0) return;
        vm.prank(caller);
        try services.resume(id) {} catch {}
    }

    function suspend(uint256 idSeed) external {
        (uint256 id,) = _pick(idSeed, true);
        if (id == 0) return;
        vm.prank(operator);
        try services.suspend(id) {} catch {}
    }

    function cancel(uint256 idSeed, bool viaOperator) external {
        (uint256 id, address caller) = _pick(idSeed, viaOperator);
        if (id == 0) return;
        vm.prank(caller);
        try services.cancel(id) {
            cancelledSeen[id] = true;
        } catch {}
    }

    function setTier(uint256 actorSeed, bool paid) external {
        vm.prank(operator);
        accounts.setTier(actors[actorSeed % 3], paid ? PAID : FREE, 0);
    }

    function fund(uint256 actorSeed, uint256 credits) external {
        credits = bound(credits, 1, 100_000);
        vm.prank(oracle);
        ledger.creditFiat(
            actors[actorSeed % 3], credits, keccak256(abi.encode("invariant fund", ++fundNonce))
        );
    }

    function warp(uint256 secondsAhead) external {
        vm.warp(block.timestamp + bound(secondsAhead, 0, 90 days));
    }

    function _pick(uint256 idSeed, bool viaOperator) internal view returns (uint256 id, address caller) {
        if (ids.length == 0) return (0, address(0));
        id = ids[idSeed % ids.length];
        caller = viaOperator ? operator : services.ownerOf(id);
    }
}

contract ServiceRegistryInvariantTest is PlatformTest, ServiceRegistryNames {
    ServiceRegistryHandler internal handler;

    function setUp() public override {
        super.setUp();
        address carol = makeAddr("carol");
        _register(alice);
        _register(bob);
        _register(carol);
        handler =
            new ServiceRegistryHandler(services, accounts, ledger, operator, oracle, [alice, bob, carol]);

        bytes4[] memory selectors = new bytes4[](8);
        selectors[0] = ServiceRegistryHandler.create.selector;
        selectors[1] = ServiceRegistryHandler.pause.selector;
        selectors[2] = ServiceRegistryHandler.resume.selector;
        selectors[3] = ServiceRegistryHandler.suspend.selector;
        selectors[4] = ServiceRegistryHandler.cancel.selector;
        selectors[5] = ServiceRegistryHandler.setTier.selector;
        selectors[6] = ServiceRegistryHandler.fund.selector;
        selectors[7] = ServiceRegistryHandler.warp.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
        targetContract(address(handler));
    }

    /// @dev openServices(owner, kind) is the number of that owner's services of that kind not cancelled.
    function invariant_openServicesMatchesNonCancelled() public view {
        uint256 count = services.serviceCount();
        for (uint256 a; a < handler.actorCount(); ++a) {
            address owner = handler.actorAt(a);
            for (uint256 k; k < KIND_COUNT; ++k) {
                IServiceRegistry.ServiceKind kind = IServiceRegistry.ServiceKind(k);
                uint32 open;
                for (uint256 id = 1; id <= count; ++id) {
                    IServiceRegistry.Service memory svc = services.serviceOf(id);
                    if (svc.owner == owner && svc.kind == kind && svc.state != CANCELLED) ++open;
                }
                assertEq(services.openServices(owner, kind), open, "openServices");
            }
        }
    }

    /// @dev Every created service is in a real state, ids are dense, and a cancelled one stays cancelled.
    function invariant_statesValidAndCancelledIsFinal() public view {
        uint256 count = services.serviceCount();
        assertEq(count, handler.idCount(), "every service came through the handler");
        for (uint256 id = 1; id <= count; ++id) {
            IServiceRegistry.ServiceState state = services.serviceOf(id).state;
            assertTrue(state != NONE, "created services are never None");
            if (handler.cancelledSeen(id)) assertEq(uint8(state), uint8(CANCELLED), "cancelled is final");
            assertEq(services.isChargeable(id), state == ACTIVE && !services.isExpired(id), "chargeable");
        }
        assertEq(uint8(services.serviceOf(count + 1).state), uint8(NONE));
    }
}
