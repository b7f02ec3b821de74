// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccountRegistry} from "../src/AccountRegistry.sol";
import {CreditLedger} from "../src/CreditLedger.sol";
import {DomainRegistry} from "../src/DomainRegistry.sol";
import {ServiceRegistry} from "../src/ServiceRegistry.sol";
import {IAccountRegistry} from "../src/interfaces/IAccountRegistry.sol";
import {ICreditLedger} from "../src/interfaces/ICreditLedger.sol";
import {IDomainRegistry} from "../src/interfaces/IDomainRegistry.sol";
import {IServiceRegistry} from "../src/interfaces/IServiceRegistry.sol";
import {AccountRegistryV2} from "./mocks/AccountRegistryV2.sol";
import {CreditLedgerV2} from "./mocks/CreditLedgerV2.sol";
import {DomainRegistryV2} from "./mocks/DomainRegistryV2.sol";
import {ServiceRegistryV2} from "./mocks/ServiceRegistryV2.sol";
import {PlatformTest} from "./utils/PlatformTest.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IERC1967} from "@openzeppelin/contracts/interfaces/IERC1967.sol";
import {ERC1967Utils} from "@openzeppelin/contracts/proxy/ERC1967/ERC1967Utils.sol";
import {Initializable} from "@openzeppelin/contracts/proxy/utils/Initializable.sol";
import {UUPSUpgradeable} from "@openzeppelin/contracts/proxy/utils/UUPSUpgradeable.sol";

/// @notice The four UUPS proxies: state survives an upgrade, only the admin upgrades, and neither a proxy nor
/// a bare implementation can be initialised (again).
contract UpgradeTest is PlatformTest {
    bytes32 internal constant ADMIN_ROLE = 0x00;

    /// @dev A V2 implementation for each proxy of `_proxies()`, in the same order.
    address[4] internal v2Impls;

    function setUp() public override {
        super.setUp();
        address fwd = address(forwarder);
        v2Impls = [
            address(new AccountRegistryV2(fwd)),
            address(new CreditLedgerV2(fwd)),
            address(new ServiceRegistryV2(fwd)),
            address(new DomainRegistryV2(fwd))
        ];
    }

    // ------------------------------------------------------------------ helpers

    function _implementation(address proxy) internal view returns (address) {
        return address(uint160(uint256(vm.load(proxy, ERC1967Utils.IMPLEMENTATION_SLOT))));
    }

    function _proxies() internal view returns (address[4] memory) {
        return [address(accounts), address(ledger), address(services), address(domains)];
    }

    /// @dev Upgrades `proxy` to `impl` as the admin, checking the Upgraded event and the implementation slot.
    function _upgrade(address proxy, address impl) internal {
        vm.expectEmit(proxy);
        emit IERC1967.Upgraded(impl);
        vm.prank(admin);
        UUPSUpgradeable(proxy).upgradeToAndCall(impl, "");
        assertEq(_implementation(proxy), impl);
    }

    function _initializeCall(address proxy) internal view returns (bytes memory) {
        if (proxy == address(accounts)) return abi.encodeCall(AccountRegistry.initialize, (stranger));
        if (proxy == address(ledger)) return abi.encodeCall(CreditLedger.initialize, (stranger));
        if (proxy == address(services)) {
            return abi.encodeCall(ServiceRegistry.initialize, (stranger, address(accounts), address(ledger)));
        }
        return abi.encodeCall(DomainRegistry.initialize, (stranger, address(services)));
    }

    /// @dev Calls `initialize` (with the arguments `proxy` takes) on `target` and checks it is refused.
    function _assertInitializeReverts(address target, address proxy) internal {
        (bool ok, bytes memory ret) = target.call(_initializeCall(proxy));
        assertFalse(ok, "initialize accepted");
        assertEq(ret, abi.encodeWithSelector(Initializable.InvalidInitialization.selector));
    }

    function _expectUnauthorized(address caller, bytes32 role) internal {
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, role)
        );
    }

    // ------------------------------------------------------------------ AccountRegistry

    function test_accountRegistry_stateSurvivesUpgrade() public {
        _register(alice);
        _fund(alice, 2 * PAID_TIER_PRICE);
        vm.prank(alice);
        accounts.upgrade(1);
        vm.startPrank(operator);
        accounts.setFreeTierDuration(90 days);
        accounts.setStatus(alice, IAccountRegistry.AccountStatus.Active);
        vm.stopPrank();
        IAccountRegistry.Account memory before = accounts.accountOf(alice);

        AccountRegistryV2 v2 = AccountRegistryV2(v2Impls[0]);
        _upgrade(address(accounts), address(v2));

        assertEq(AccountRegistryV2(address(accounts)).version(), 2);
        IAccountRegistry.Account memory afterUpgrade = accounts.accountOf(alice);
        assertEq(abi.encode(afterUpgrade), abi.encode(before));
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(IAccountRegistry.Tier.Paid));
        assertEq(accounts.freeTierDuration(), 90 days);
        assertEq(accounts.paidTierPrice(), PAID_TIER_PRICE);
        assertEq(accounts.creditLedger(), address(ledger));
        assertTrue(accounts.hasRole(ADMIN_ROLE, admin));
        assertTrue(accounts.hasRole(accounts.OPERATOR_ROLE(), operator));
        assertTrue(accounts.isTrustedForwarder(address(forwarder)));

        // Still works, and the private upgrade nonce carried over: the next reference uses nonce 1.
        vm.prank(alice);
        accounts.upgrade(1);
        assertEq(accounts.accountOf(alice).tierExpiresAt, before.tierExpiresAt + 30 days);
        assertTrue(
            ledger.isUsageRefUsed(keccak256(abi.encode(address(accounts), "upgrade", alice, uint256(1))))
        );
        _register(bob);
        assertTrue(accounts.isActive(bob));
    }

    // ------------------------------------------------------------------ CreditLedger

    function test_creditLedger_stateSurvivesUpgrade() public {
        _fund(alice, 7_000_000);
        bytes32 paymentRef = keccak256("card-payment-1");
        vm.prank(oracle);
        ledger.creditFiat(bob, 1_000_000, paymentRef);
        vm.prank(billing);
        ledger.deduct(alice, 0, 2_000_000, keccak256("usage-1"));
        uint256 credited = ledger.totalCredited();
        uint256 debited = ledger.totalDebited();

        CreditLedgerV2 v2 = CreditLedgerV2(v2Impls[1]);
        _upgrade(address(ledger), address(v2));

        assertEq(CreditLedgerV2(address(ledger)).version(), 2);
        assertEq(ledger.balanceOf(alice), 5_000_000);
        assertEq(ledger.balanceOf(bob), 1_000_000);
        assertEq(ledger.totalCredited(), credited);
        assertEq(ledger.totalDebited(), debited);
        assertEq(ledger.tokenRate(address(token)), TEST_TOKEN_RATE);
        assertEq(ledger.serviceRegistry(), address(services));
        assertTrue(ledger.isPaymentRefUsed(paymentRef));
        assertTrue(ledger.isUsageRefUsed(keccak256("usage-1")));
        assertTrue(ledger.hasRole(ledger.BILLING_ROLE(), address(accounts)));

        // Spent references stay spent across the upgrade.
        vm.expectRevert(abi.encodeWithSelector(ICreditLedger.CreditLedgerPaymentRefUsed.selector, paymentRef));
        vm.prank(oracle);
        ledger.creditFiat(bob, 1_000_000, paymentRef);

        // A new credit lands on top of the old balance.
        bytes32 newRef = keccak256("card-payment-2");
        vm.expectEmit(address(ledger));
        emit ICreditLedger.FiatCredited(alice, newRef, 3_000_000, 8_000_000);
        vm.prank(oracle);
        ledger.creditFiat(alice, 3_000_000, newRef);
        assertEq(ledger.balanceOf(alice), 8_000_000);

        // And a token recharge still works.
        token.mint(bob, 4_000_000);
        vm.startPrank(bob);
        token.approve(address(ledger), 4_000_000);
        ledger.recharge(address(token), 4_000_000);
        vm.stopPrank();
        assertEq(ledger.balanceOf(bob), 5_000_000);
        assertEq(ledger.totalCredited(), credited + 7_000_000);
    }

    // ------------------------------------------------------------------ ServiceRegistry

    function test_serviceRegistry_stateSurvivesUpgrade() public {
        uint256 id = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        IServiceRegistry.Service memory before = services.serviceOf(id);
        vm.prank(admin);
        services.setPrice(IServiceRegistry.ServiceKind.Storage, IAccountRegistry.Tier.Paid, 777);

        ServiceRegistryV2 v2 = ServiceRegistryV2(v2Impls[2]);
        _upgrade(address(services), address(v2));

        assertEq(ServiceRegistryV2(address(services)).version(), 2);
        assertEq(abi.encode(services.serviceOf(id)), abi.encode(before));
        assertEq(services.ownerOf(id), alice);
        assertEq(services.serviceCount(), 1);
        assertEq(services.openServices(alice, IServiceRegistry.ServiceKind.StaticHosting), 1);
        assertEq(services.priceFor(IServiceRegistry.ServiceKind.Storage, IAccountRegistry.Tier.Paid), 777);
        assertEq(
            services.tierLimit(IServiceRegistry.ServiceKind.StaticHosting, IAccountRegistry.Tier.Paid), 20
        );
        assertEq(services.accountRegistry(), address(accounts));
        assertEq(services.creditLedger(), address(ledger));

        // Still works: ids continue, the free limit still counts the old service, owners still act.
        uint256 next = _createService(bob, IServiceRegistry.ServiceKind.StaticHosting);
        assertEq(next, id + 1);
        vm.expectRevert(
            abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryTierLimitExceeded.selector,
                alice,
                IServiceRegistry.ServiceKind.StaticHosting,
                1
            )
        );
        vm.prank(alice);
        services.createService(IServiceRegistry.ServiceKind.StaticHosting, keccak256("second"));
        vm.prank(alice);
        services.pause(id);
        assertEq(uint8(services.serviceOf(id).state), uint8(IServiceRegistry.ServiceState.Paused));
    }

    function test_serviceRegistry_upgradeKeepsDrainedServicesAndChecksNewOpens() public {
        // A Paid owner's site, opened with its first hour and charged down to nothing since: the state a
        // live registry holds for accounts that ran dry.
        _register(alice);
        _makePaid(alice);
        _fund(alice, 1000);
        uint256 id = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        vm.prank(billing);
        ledger.deduct(alice, id, 1000, keccak256("hour 1"));
        IServiceRegistry.Service memory before = services.serviceOf(id);

        _upgrade(address(services), v2Impls[2]);

        // The service is untouched (the check adds no storage and rewrites nothing)...
        assertEq(abi.encode(services.serviceOf(id)), abi.encode(before));
        assertEq(services.openServices(alice, IServiceRegistry.ServiceKind.StaticHosting), 1);
        assertTrue(services.isChargeable(id));
        // ...and the upgraded registry opens no priced service for the drained owner.
        vm.expectRevert(
            abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryInsufficientCreditToOpen.selector,
                alice,
                IServiceRegistry.ServiceKind.StaticHosting,
                0,
                1000
            )
        );
        vm.prank(alice);
        services.createService(IServiceRegistry.ServiceKind.StaticHosting, keccak256("second"));
    }

    // ------------------------------------------------------------------ DomainRegistry

    function test_domainRegistry_stateSurvivesUpgrade() public {
        uint256 id = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        uint64 expiresAt = uint64(block.timestamp + 365 days);
        vm.prank(registrar);
        bytes32 node = domains.recordPurchase("alice.example", alice, expiresAt);
        vm.prank(alice);
        domains.link(node, id);
        IDomainRegistry.Domain memory before = domains.domainOf(node);

        DomainRegistryV2 v2 = DomainRegistryV2(v2Impls[3]);
        _upgrade(address(domains), address(v2));

        assertEq(DomainRegistryV2(address(domains)).version(), 2);
        assertEq(abi.encode(domains.domainOf(node)), abi.encode(before));
        assertEq(domains.domainOf(node).serviceId, id);
        assertEq(domains.nameOf(node), "alice.example");
        assertEq(domains.ownerOf(node), alice);
        assertEq(domains.serviceRegistry(), address(services));
        assertTrue(domains.hasRole(domains.REGISTRAR_ROLE(), registrar));
        assertTrue(domains.hasRole(domains.VERIFIER_ROLE(), verifier));

        // Still works: renew and transfer (which drops the link).
        vm.prank(registrar);
        domains.renew(node, expiresAt + 365 days);
        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainUnlinked(node, id);
        vm.expectEmit(address(domains));
        emit IDomainRegistry.DomainTransferred(node, alice, bob);
        vm.prank(alice);
        domains.transfer(node, bob);
        assertEq(domains.ownerOf(node), bob);
        assertEq(domains.domainOf(node).expiresAt, expiresAt + 365 days);
    }

    // ------------------------------------------------------------------ all four proxies

    function test_upgradeToAndCall_runsReinitializerOnce() public {
        address[4] memory proxies = _proxies();
        address[4] memory impls = v2Impls;
        for (uint256 i; i < 4; ++i) {
            vm.expectEmit(proxies[i]);
            emit IERC1967.Upgraded(impls[i]);
            vm.expectEmit(proxies[i]);
            emit AccountRegistryV2.MigratedToV2();
            vm.expectEmit(proxies[i]);
            emit Initializable.Initialized(2);
            vm.prank(admin);
            UUPSUpgradeable(proxies[i])
                .upgradeToAndCall(impls[i], abi.encodeCall(AccountRegistryV2.initializeV2, ()));

            vm.expectRevert(abi.encodeWithSelector(Initializable.InvalidInitialization.selector));
            AccountRegistryV2(proxies[i]).initializeV2();
            // Nor does the upgrade reopen version 1.
            vm.prank(stranger);
            _assertInitializeReverts(proxies[i], proxies[i]);
        }
    }

    function test_upgrade_refusedForOperatorAndRoleHolders() public {
        address[4] memory proxies = _proxies();
        address[4] memory impls = v2Impls;
        // Each proxy's most powerful non-admin key.
        address[4] memory callers = [operator, oracle, operator, registrar];
        for (uint256 i; i < 4; ++i) {
            _expectUnauthorized(callers[i], ADMIN_ROLE);
            vm.prank(callers[i]);
            UUPSUpgradeable(proxies[i]).upgradeToAndCall(impls[i], "");

            _expectUnauthorized(alice, ADMIN_ROLE);
            vm.prank(alice);
            UUPSUpgradeable(proxies[i]).upgradeToAndCall(impls[i], "");
            assertNotEq(_implementation(proxies[i]), impls[i]);
        }
    }

    function testFuzz_upgrade_refusesCallersWithoutAdminRole(address caller) public {
        vm.assume(caller != admin && caller != address(forwarder));
        address[4] memory proxies = _proxies();
        address[4] memory impls = v2Impls;
        for (uint256 i; i < 4; ++i) {
            address before = _implementation(proxies[i]);
            _expectUnauthorized(caller, ADMIN_ROLE);
            vm.prank(caller);
            UUPSUpgradeable(proxies[i]).upgradeToAndCall(impls[i], "");
            assertEq(_implementation(proxies[i]), before);
        }
    }

    function test_upgrade_newAdminCanUpgradeAfterHandOver() public {
        // The role, not the address, is what upgrades: a new admin can, the renounced one cannot.
        address newAdmin = makeAddr("newAdmin");
        address[4] memory proxies = _proxies();
        address[4] memory impls = v2Impls;
        for (uint256 i; i < 4; ++i) {
            IAccessControl ac = IAccessControl(proxies[i]);
            vm.startPrank(admin);
            ac.grantRole(ADMIN_ROLE, newAdmin);
            ac.renounceRole(ADMIN_ROLE, admin);
            vm.stopPrank();

            _expectUnauthorized(admin, ADMIN_ROLE);
            vm.prank(admin);
            UUPSUpgradeable(proxies[i]).upgradeToAndCall(impls[i], "");

            vm.prank(newAdmin);
            UUPSUpgradeable(proxies[i]).upgradeToAndCall(impls[i], "");
            assertEq(_implementation(proxies[i]), impls[i]);
        }
    }

    function test_upgrade_revertsToNonUupsImplementation() public {
        // An implementation without proxiableUUID would brick the proxy; the upgrade refuses it.
        address[4] memory proxies = _proxies();
        for (uint256 i; i < 4; ++i) {
            vm.expectRevert(
                abi.encodeWithSelector(ERC1967Utils.ERC1967InvalidImplementation.selector, address(token))
            );
            vm.prank(admin);
            UUPSUpgradeable(proxies[i]).upgradeToAndCall(address(token), "");
        }
    }

    function test_initialize_cannotBeCalledTwice() public {
        address[4] memory proxies = _proxies();
        for (uint256 i; i < 4; ++i) {
            vm.prank(stranger);
            _assertInitializeReverts(proxies[i], proxies[i]);
            assertFalse(IAccessControl(proxies[i]).hasRole(ADMIN_ROLE, stranger));
        }
    }

    function test_initialize_cannotBeCalledTwiceAfterUpgrade() public {
        address[4] memory proxies = _proxies();
        address[4] memory impls = v2Impls;
        for (uint256 i; i < 4; ++i) {
            _upgrade(proxies[i], impls[i]);
            vm.prank(stranger);
            _assertInitializeReverts(proxies[i], proxies[i]);
        }
    }

    function test_implementation_cannotBeInitialized() public {
        address[4] memory proxies = _proxies();
        for (uint256 i; i < 4; ++i) {
            address impl = _implementation(proxies[i]);
            assertTrue(impl != address(0) && impl != proxies[i]);
            vm.prank(stranger);
            _assertInitializeReverts(impl, proxies[i]);
            assertFalse(IAccessControl(impl).hasRole(ADMIN_ROLE, stranger));
        }
    }

    function test_implementation_cannotBeInitializedV2() public {
        // The V2 constructor disables initializers too, including the reinitializer.
        address[4] memory impls = v2Impls;
        for (uint256 i; i < 4; ++i) {
            vm.expectRevert(abi.encodeWithSelector(Initializable.InvalidInitialization.selector));
            AccountRegistryV2(impls[i]).initializeV2();
        }
    }

    function test_implementation_refusesDirectUpgrade() public {
        // upgradeToAndCall works only through a proxy.
        address[4] memory proxies = _proxies();
        address[4] memory impls = v2Impls;
        for (uint256 i; i < 4; ++i) {
            address impl = _implementation(proxies[i]);
            vm.expectRevert(abi.encodeWithSelector(UUPSUpgradeable.UUPSUnauthorizedCallContext.selector));
            vm.prank(admin);
            UUPSUpgradeable(impl).upgradeToAndCall(impls[i], "");
        }
    }
}
