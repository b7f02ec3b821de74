// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccountRegistry} from "../src/AccountRegistry.sol";
import {CreditLedger} from "../src/CreditLedger.sol";
import {IAccountRegistry} from "../src/interfaces/IAccountRegistry.sol";
import {ICreditLedger} from "../src/interfaces/ICreditLedger.sol";
import {PlatformTest} from "./utils/PlatformTest.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {ERC2771Forwarder} from "@openzeppelin/contracts/metatx/ERC2771Forwarder.sol";
import {ERC1967Proxy} from "@openzeppelin/contracts/proxy/ERC1967/ERC1967Proxy.sol";
import {Initializable} from "@openzeppelin/contracts/proxy/utils/Initializable.sol";
import {Errors} from "@openzeppelin/contracts/utils/Errors.sol";

contract AccountRegistryTest is PlatformTest {
    IAccountRegistry.Tier internal constant FREE = IAccountRegistry.Tier.Free;
    IAccountRegistry.Tier internal constant PAID = IAccountRegistry.Tier.Paid;
    IAccountRegistry.AccountStatus internal constant UNREGISTERED =
    IAccountRegistry.AccountStatus.Unregistered;
    IAccountRegistry.AccountStatus internal constant ACTIVE = IAccountRegistry.AccountStatus.Active;
    IAccountRegistry.AccountStatus internal constant SUSPENDED = IAccountRegistry.AccountStatus.Suspended;

    uint64 internal constant MONTH = 30 days;

    bytes32 internal operatorRole;
    bytes32 internal adminRole;

    function setUp() public override {
        super.setUp();
        operatorRole = accounts.OPERATOR_ROLE();
        adminRole = accounts.DEFAULT_ADMIN_ROLE();
    }

    // ------------------------------------------------------------------ helpers

    /// @dev The usage reference the registry derives for the `nonce`-th upgrade (the nonce is global).
    function _usageRef(AccountRegistry registry, address account, uint256 nonce)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(address(registry), "upgrade", account, nonce));
    }

    /// @dev A registry behind its own proxy, initialised with `admin` and wired to nothing.
    function _freshRegistry() internal returns (AccountRegistry) {
        AccountRegistry impl = new AccountRegistry(address(forwarder));
        return AccountRegistry(
            address(new ERC1967Proxy(address(impl), abi.encodeCall(AccountRegistry.initialize, (admin))))
        );
    }

    function _assertAccount(
        address account,
        IAccountRegistry.Tier tier,
        IAccountRegistry.AccountStatus status,
        uint64 registeredAt,
        uint64 tierExpiresAt
    ) internal view {
        IAccountRegistry.Account memory a = accounts.accountOf(account);
        assertEq(uint8(a.tier), uint8(tier), "tier");
        assertEq(uint8(a.status), uint8(status), "status");
        assertEq(a.registeredAt, registeredAt, "registeredAt");
        assertEq(a.tierExpiresAt, tierExpiresAt, "tierExpiresAt");
    }

    function _now() internal view returns (uint64) {
        return uint64(block.timestamp);
    }

    function _expectUnauthorized(address caller, bytes32 role) internal {
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, role)
        );
    }

    // ------------------------------------------------------------------ initialize

    function test_initialize_setsDefaults() public view {
        assertEq(accounts.DEFAULT_FREE_TIER_DURATION(), 180 days);
        assertEq(accounts.MONTH(), MONTH);
        assertEq(accounts.MAX_UPGRADE_MONTHS(), 120);
        assertEq(accounts.freeTierDuration(), 180 days);
        assertTrue(accounts.hasRole(adminRole, admin));
        assertTrue(accounts.hasRole(operatorRole, operator));
        assertTrue(accounts.isTrustedForwarder(address(forwarder)));
        // Wired by the deployer.
        assertEq(accounts.creditLedger(), address(ledger));
        assertEq(accounts.paidTierPrice(), PAID_TIER_PRICE);
    }

    function test_initialize_freshProxyHasUpgradesOff() public {
        AccountRegistry fresh = _freshRegistry();
        assertEq(fresh.freeTierDuration(), 180 days);
        assertEq(fresh.paidTierPrice(), 0);
        assertEq(fresh.creditLedger(), address(0));
        assertTrue(fresh.hasRole(adminRole, admin));
        assertFalse(fresh.hasRole(operatorRole, operator));
    }

    function test_initialize_emitsFreeTierDurationChanged() public {
        AccountRegistry impl = new AccountRegistry(address(forwarder));
        address proxy = vm.computeCreateAddress(address(this), vm.getNonce(address(this)));

        vm.expectEmit(proxy);
        emit IAccessControl.RoleGranted(adminRole, admin, address(this));
        vm.expectEmit(proxy);
        emit IAccountRegistry.FreeTierDurationChanged(180 days);
        vm.expectEmit(proxy);
        emit Initializable.Initialized(1);
        new ERC1967Proxy(address(impl), abi.encodeCall(AccountRegistry.initialize, (admin)));
    }

    function test_initialize_revertsOnZeroAdmin() public {
        AccountRegistry impl = new AccountRegistry(address(forwarder));
        vm.expectRevert(abi.encodeWithSelector(IAccountRegistry.AccountRegistryZeroAddress.selector));
        new ERC1967Proxy(address(impl), abi.encodeCall(AccountRegistry.initialize, (address(0))));
    }

    function test_initialize_revertsWhenCalledAgain() public {
        vm.expectRevert(abi.encodeWithSelector(Initializable.InvalidInitialization.selector));
        accounts.initialize(stranger);
    }

    // ------------------------------------------------------------------ register

    function test_register() public {
        vm.expectEmit(address(accounts));
        emit IAccountRegistry.AccountRegistered(alice, _now());
        vm.prank(alice);
        accounts.register();

        _assertAccount(alice, FREE, ACTIVE, _now(), 0);
        assertTrue(accounts.isActive(alice));
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(FREE));
    }

    function test_register_revertsWhenRegistered() public {
        _register(alice);
        vm.expectRevert(
            abi.encodeWithSelector(IAccountRegistry.AccountRegistryAlreadyRegistered.selector, alice)
        );
        vm.prank(alice);
        accounts.register();
    }

    function test_register_revertsWhenSuspended() public {
        // A suspended account cannot re-register itself back to Active.
        _register(alice);
        vm.prank(operator);
        accounts.setStatus(alice, SUSPENDED);
        vm.expectRevert(
            abi.encodeWithSelector(IAccountRegistry.AccountRegistryAlreadyRegistered.selector, alice)
        );
        vm.prank(alice);
        accounts.register();
    }

    function test_register_throughForwarder() public {
        ERC2771Forwarder.ForwardRequestData memory req =
            _forwardRequest(aliceKey, address(accounts), abi.encodeCall(AccountRegistry.register, ()));

        vm.expectEmit(address(accounts));
        emit IAccountRegistry.AccountRegistered(alice, _now());
        vm.expectEmit(address(forwarder));
        emit ERC2771Forwarder.ExecutedForwardRequest(alice, 0, true);
        vm.prank(relayer);
        forwarder.execute(req);

        // The signer is the account; the relayer only paid the gas.
        assertTrue(accounts.isActive(alice));
        assertFalse(accounts.isActive(relayer));
        assertEq(forwarder.nonces(alice), 1);
    }

    // ------------------------------------------------------------------ registerFor

    function test_registerFor() public {
        vm.expectEmit(address(accounts));
        emit IAccountRegistry.AccountRegistered(alice, _now());
        vm.prank(operator);
        accounts.registerFor(alice);

        _assertAccount(alice, FREE, ACTIVE, _now(), 0);
        assertTrue(accounts.isActive(alice));
        assertFalse(accounts.isActive(operator));
    }

    function test_registerFor_revertsOnZeroAddress() public {
        vm.expectRevert(abi.encodeWithSelector(IAccountRegistry.AccountRegistryZeroAddress.selector));
        vm.prank(operator);
        accounts.registerFor(address(0));
    }

    function test_registerFor_revertsWhenRegistered() public {
        _register(alice);
        vm.expectRevert(
            abi.encodeWithSelector(IAccountRegistry.AccountRegistryAlreadyRegistered.selector, alice)
        );
        vm.prank(operator);
        accounts.registerFor(alice);
    }

    function test_registerFor_revertsWithoutOperatorRole() public {
        // Not even the admin: it holds DEFAULT_ADMIN_ROLE, not OPERATOR_ROLE.
        _expectUnauthorized(admin, operatorRole);
        vm.prank(admin);
        accounts.registerFor(alice);

        _expectUnauthorized(alice, operatorRole);
        vm.prank(alice);
        accounts.registerFor(alice);
    }

    // ------------------------------------------------------------------ setTier

    function test_setTier_paidWithExpiry() public {
        _register(alice);
        uint64 expiresAt = _now() + 10 days;

        vm.expectEmit(address(accounts));
        emit IAccountRegistry.TierChanged(alice, PAID, expiresAt);
        vm.prank(operator);
        accounts.setTier(alice, PAID, expiresAt);

        _assertAccount(alice, PAID, ACTIVE, _now(), expiresAt);
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(PAID));

        vm.warp(expiresAt - 1);
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(PAID));
        // The term ends at `expiresAt`: from that second on the account counts as Free.
        vm.warp(expiresAt);
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(FREE));
        // The record keeps the tier as last set.
        assertEq(uint8(accounts.accountOf(alice).tier), uint8(PAID));
    }

    function test_setTier_paidWithoutEnd() public {
        _register(alice);
        vm.expectEmit(address(accounts));
        emit IAccountRegistry.TierChanged(alice, PAID, 0);
        vm.prank(operator);
        accounts.setTier(alice, PAID, 0);

        _assertAccount(alice, PAID, ACTIVE, _now(), 0);
        vm.warp(block.timestamp + 100 * 365 days);
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(PAID));
    }

    function test_setTier_backToFree() public {
        _register(alice);
        _makePaid(alice);

        vm.expectEmit(address(accounts));
        emit IAccountRegistry.TierChanged(alice, FREE, 0);
        vm.prank(operator);
        accounts.setTier(alice, FREE, 0);

        _assertAccount(alice, FREE, ACTIVE, _now(), 0);
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(FREE));
    }

    function test_setTier_onSuspendedAccount() public {
        _register(alice);
        vm.prank(operator);
        accounts.setStatus(alice, SUSPENDED);
        vm.prank(operator);
        accounts.setTier(alice, PAID, 0);
        _assertAccount(alice, PAID, SUSPENDED, _now(), 0);
    }

    function test_setTier_revertsOnFreeWithExpiry() public {
        _register(alice);
        uint64 expiresAt = _now() + 1 days;
        vm.expectRevert(
            abi.encodeWithSelector(IAccountRegistry.AccountRegistryInvalidExpiry.selector, expiresAt)
        );
        vm.prank(operator);
        accounts.setTier(alice, FREE, expiresAt);
    }

    function test_setTier_revertsOnPaidEndingNow() public {
        _register(alice);
        uint64 expiresAt = _now();
        vm.expectRevert(
            abi.encodeWithSelector(IAccountRegistry.AccountRegistryInvalidExpiry.selector, expiresAt)
        );
        vm.prank(operator);
        accounts.setTier(alice, PAID, expiresAt);
    }

    function test_setTier_revertsOnPaidEndingInPast() public {
        _register(alice);
        uint64 expiresAt = _now() - 1;
        vm.expectRevert(
            abi.encodeWithSelector(IAccountRegistry.AccountRegistryInvalidExpiry.selector, expiresAt)
        );
        vm.prank(operator);
        accounts.setTier(alice, PAID, expiresAt);
    }

    function test_setTier_revertsWhenNotRegistered() public {
        vm.expectRevert(abi.encodeWithSelector(IAccountRegistry.AccountRegistryNotRegistered.selector, alice));
        vm.prank(operator);
        accounts.setTier(alice, PAID, 0);
    }

    function test_setTier_revertsWithoutOperatorRole() public {
        _register(alice);
        _expectUnauthorized(alice, operatorRole);
        vm.prank(alice);
        accounts.setTier(alice, PAID, 0);
    }

    function testFuzz_setTier_expiryRules(bool paid, uint64 expiresAt, uint32 warpBy) public {
        vm.warp(block.timestamp + warpBy);
        _register(alice);
        IAccountRegistry.Tier tier = paid ? PAID : FREE;
        bool valid = paid ? (expiresAt == 0 || expiresAt > block.timestamp) : expiresAt == 0;

        if (!valid) {
            vm.expectRevert(
                abi.encodeWithSelector(IAccountRegistry.AccountRegistryInvalidExpiry.selector, expiresAt)
            );
        } else {
            vm.expectEmit(address(accounts));
            emit IAccountRegistry.TierChanged(alice, tier, expiresAt);
        }
        vm.prank(operator);
        accounts.setTier(alice, tier, expiresAt);

        if (valid) {
            _assertAccount(alice, tier, ACTIVE, _now(), expiresAt);
            // Right after a valid setTier the tier in force is the tier set.
            assertEq(uint8(accounts.effectiveTier(alice)), uint8(tier));
        } else {
            _assertAccount(alice, FREE, ACTIVE, _now(), 0);
        }
    }

    // ------------------------------------------------------------------ setStatus

    function test_setStatus_suspendAndReactivate() public {
        _register(alice);

        vm.expectEmit(address(accounts));
        emit IAccountRegistry.AccountStatusChanged(alice, SUSPENDED);
        vm.prank(operator);
        accounts.setStatus(alice, SUSPENDED);
        _assertAccount(alice, FREE, SUSPENDED, _now(), 0);
        assertFalse(accounts.isActive(alice));

        vm.expectEmit(address(accounts));
        emit IAccountRegistry.AccountStatusChanged(alice, ACTIVE);
        vm.prank(operator);
        accounts.setStatus(alice, ACTIVE);
        _assertAccount(alice, FREE, ACTIVE, _now(), 0);
        assertTrue(accounts.isActive(alice));
    }

    function test_setStatus_revertsOnUnregistered() public {
        _register(alice);
        vm.expectRevert(abi.encodeWithSelector(IAccountRegistry.AccountRegistryInvalidStatus.selector));
        vm.prank(operator);
        accounts.setStatus(alice, UNREGISTERED);
    }

    function test_setStatus_revertsWhenNotRegistered() public {
        vm.expectRevert(abi.encodeWithSelector(IAccountRegistry.AccountRegistryNotRegistered.selector, alice));
        vm.prank(operator);
        accounts.setStatus(alice, SUSPENDED);
    }

    function test_setStatus_revertsWithoutOperatorRole() public {
        _register(alice);
        _expectUnauthorized(admin, operatorRole);
        vm.prank(admin);
        accounts.setStatus(alice, SUSPENDED);
    }

    // ------------------------------------------------------------------ setFreeTierDuration

    function test_setFreeTierDuration() public {
        vm.expectEmit(address(accounts));
        emit IAccountRegistry.FreeTierDurationChanged(90 days);
        vm.prank(operator);
        accounts.setFreeTierDuration(90 days);
        assertEq(accounts.freeTierDuration(), 90 days);
    }

    function test_setFreeTierDuration_revertsOnZero() public {
        vm.expectRevert(abi.encodeWithSelector(IAccountRegistry.AccountRegistryInvalidDuration.selector));
        vm.prank(operator);
        accounts.setFreeTierDuration(0);
    }

    function test_setFreeTierDuration_revertsAboveTenYears() public {
        uint64 max = accounts.MAX_FREE_TIER_DURATION();
        vm.expectRevert(IAccountRegistry.AccountRegistryInvalidDuration.selector);
        vm.prank(operator);
        accounts.setFreeTierDuration(max + 1);

        vm.prank(operator);
        accounts.setFreeTierDuration(max);
        assertEq(accounts.freeTierDuration(), max);
    }

    function test_setFreeTierDuration_revertsWithoutOperatorRole() public {
        _expectUnauthorized(stranger, operatorRole);
        vm.prank(stranger);
        accounts.setFreeTierDuration(1 days);
    }

    // ------------------------------------------------------------------ setPaidTierPrice

    function test_setPaidTierPrice() public {
        vm.expectEmit(address(accounts));
        emit IAccountRegistry.PaidTierPriceChanged(7_000_000);
        vm.prank(admin);
        accounts.setPaidTierPrice(7_000_000);
        assertEq(accounts.paidTierPrice(), 7_000_000);
    }

    function test_setPaidTierPrice_zeroDisablesUpgrades() public {
        vm.expectEmit(address(accounts));
        emit IAccountRegistry.PaidTierPriceChanged(0);
        vm.prank(admin);
        accounts.setPaidTierPrice(0);
        assertEq(accounts.paidTierPrice(), 0);

        _register(alice);
        _fund(alice, PAID_TIER_PRICE);
        vm.expectRevert(abi.encodeWithSelector(IAccountRegistry.AccountRegistryUpgradesDisabled.selector));
        vm.prank(alice);
        accounts.upgrade(1);
    }

    function test_setPaidTierPrice_revertsWithoutAdminRole() public {
        // The operator is the platform's hot key: prices are the admin's.
        _expectUnauthorized(operator, adminRole);
        vm.prank(operator);
        accounts.setPaidTierPrice(1);
    }

    // ------------------------------------------------------------------ setCreditLedger

    function test_setCreditLedger() public {
        address newLedger = makeAddr("newLedger");
        vm.expectEmit(address(accounts));
        emit IAccountRegistry.CreditLedgerChanged(newLedger);
        vm.prank(admin);
        accounts.setCreditLedger(newLedger);
        assertEq(accounts.creditLedger(), newLedger);
    }

    function test_setCreditLedger_revertsOnZeroAddress() public {
        vm.expectRevert(abi.encodeWithSelector(IAccountRegistry.AccountRegistryZeroAddress.selector));
        vm.prank(admin);
        accounts.setCreditLedger(address(0));
    }

    function test_setCreditLedger_revertsWithoutAdminRole() public {
        _expectUnauthorized(operator, adminRole);
        vm.prank(operator);
        accounts.setCreditLedger(stranger);
    }

    // ------------------------------------------------------------------ upgrade

    function test_upgrade_chargesLedger() public {
        _register(alice);
        _fund(alice, 3 * PAID_TIER_PRICE);
        uint256 debitedBefore = ledger.totalDebited();
        uint64 expiresAt = _now() + 3 * MONTH;
        bytes32 ref = _usageRef(accounts, alice, 0);

        vm.expectEmit(address(accounts));
        emit IAccountRegistry.TierChanged(alice, PAID, expiresAt);
        vm.expectEmit(address(accounts));
        emit IAccountRegistry.AccountUpgraded(alice, 3, 3 * PAID_TIER_PRICE, ref);
        // The charge is not tied to a service: serviceId 0, with the reference AccountUpgraded announced.
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsDeducted(alice, 0, 3 * PAID_TIER_PRICE, 0, ref);
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditDepleted(alice);
        vm.prank(alice);
        accounts.upgrade(3);

        _assertAccount(alice, PAID, ACTIVE, _now(), expiresAt);
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(PAID));
        assertEq(ledger.balanceOf(alice), 0);
        assertEq(ledger.totalDebited(), debitedBefore + 3 * PAID_TIER_PRICE);
        assertTrue(ledger.isUsageRefUsed(ref));
    }

    function test_upgrade_usageRefsAreUniqueAcrossUpgrades() public {
        _register(alice);
        _register(bob);
        _fund(alice, 2 * PAID_TIER_PRICE);
        _fund(bob, PAID_TIER_PRICE);

        vm.prank(alice);
        accounts.upgrade(1);

        // The nonce is global, so bob's first upgrade is the registry's second.
        bytes32 bobRef = _usageRef(accounts, bob, 1);
        vm.expectEmit(address(accounts));
        emit IAccountRegistry.AccountUpgraded(bob, 1, PAID_TIER_PRICE, bobRef);
        vm.prank(bob);
        accounts.upgrade(1);

        bytes32 aliceRef = _usageRef(accounts, alice, 2);
        vm.expectEmit(address(accounts));
        emit IAccountRegistry.AccountUpgraded(alice, 1, PAID_TIER_PRICE, aliceRef);
        vm.prank(alice);
        accounts.upgrade(1);

        assertTrue(ledger.isUsageRefUsed(_usageRef(accounts, alice, 0)));
        assertTrue(ledger.isUsageRefUsed(bobRef));
        assertTrue(ledger.isUsageRefUsed(aliceRef));
        assertEq(ledger.balanceOf(alice), 0);
        assertEq(ledger.balanceOf(bob), 0);
    }

    function test_upgrade_extendsRunningTerm() public {
        _register(alice);
        _fund(alice, 3 * PAID_TIER_PRICE);
        vm.prank(alice);
        accounts.upgrade(1);
        uint64 firstEnd = _now() + MONTH;

        vm.warp(block.timestamp + 10 days);
        uint64 expiresAt = firstEnd + 2 * MONTH;
        vm.expectEmit(address(accounts));
        emit IAccountRegistry.TierChanged(alice, PAID, expiresAt);
        vm.expectEmit(address(accounts));
        emit IAccountRegistry.AccountUpgraded(alice, 2, 2 * PAID_TIER_PRICE, _usageRef(accounts, alice, 1));
        vm.prank(alice);
        accounts.upgrade(2);

        // The new months start where the running term ends, not now: nothing paid is lost.
        assertEq(accounts.accountOf(alice).tierExpiresAt, expiresAt);
        assertEq(ledger.balanceOf(alice), 0);
    }

    function test_upgrade_extendsOperatorSetTerm() public {
        _register(alice);
        _fund(alice, PAID_TIER_PRICE);
        uint64 termEnd = _now() + 5 days;
        vm.prank(operator);
        accounts.setTier(alice, PAID, termEnd);

        vm.prank(alice);
        accounts.upgrade(1);
        assertEq(accounts.accountOf(alice).tierExpiresAt, termEnd + MONTH);
    }

    function test_upgrade_startsFromNowAfterLapsedTerm() public {
        _register(alice);
        _fund(alice, 2 * PAID_TIER_PRICE);
        vm.prank(alice);
        accounts.upgrade(1);
        uint64 firstEnd = _now() + MONTH;

        vm.warp(firstEnd + 7 days);
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(FREE));

        uint64 expiresAt = _now() + MONTH;
        vm.expectEmit(address(accounts));
        emit IAccountRegistry.TierChanged(alice, PAID, expiresAt);
        vm.prank(alice);
        accounts.upgrade(1);

        // The lapsed week is not paid for.
        assertEq(accounts.accountOf(alice).tierExpiresAt, expiresAt);
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(PAID));
    }

    function test_upgrade_atExactExpiryStartsFromNow() public {
        _register(alice);
        _fund(alice, 2 * PAID_TIER_PRICE);
        vm.prank(alice);
        accounts.upgrade(1);

        vm.warp(block.timestamp + MONTH);
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(FREE));
        vm.prank(alice);
        accounts.upgrade(1);
        assertEq(accounts.accountOf(alice).tierExpiresAt, _now() + MONTH);
    }

    function test_upgrade_maxMonths() public {
        _register(alice);
        _fund(alice, 120 * PAID_TIER_PRICE);
        vm.prank(alice);
        accounts.upgrade(120);
        assertEq(accounts.accountOf(alice).tierExpiresAt, _now() + 120 * MONTH);
        assertEq(ledger.balanceOf(alice), 0);
    }

    function test_upgrade_revertsOnZeroMonths() public {
        _register(alice);
        _fund(alice, PAID_TIER_PRICE);
        vm.expectRevert(abi.encodeWithSelector(IAccountRegistry.AccountRegistryInvalidMonths.selector, 0));
        vm.prank(alice);
        accounts.upgrade(0);
    }

    function test_upgrade_revertsOnTooManyMonths() public {
        _register(alice);
        _fund(alice, 121 * PAID_TIER_PRICE);
        vm.expectRevert(abi.encodeWithSelector(IAccountRegistry.AccountRegistryInvalidMonths.selector, 121));
        vm.prank(alice);
        accounts.upgrade(121);
    }

    function test_upgrade_revertsWithoutLedger() public {
        AccountRegistry fresh = _freshRegistry();
        vm.prank(admin);
        fresh.setPaidTierPrice(PAID_TIER_PRICE);
        vm.prank(alice);
        fresh.register();

        vm.expectRevert(abi.encodeWithSelector(IAccountRegistry.AccountRegistryUpgradesDisabled.selector));
        vm.prank(alice);
        fresh.upgrade(1);
    }

    function test_upgrade_revertsWithoutPriceOnFreshProxy() public {
        AccountRegistry fresh = _freshRegistry();
        vm.prank(admin);
        fresh.setCreditLedger(address(ledger));
        vm.prank(alice);
        fresh.register();

        vm.expectRevert(abi.encodeWithSelector(IAccountRegistry.AccountRegistryUpgradesDisabled.selector));
        vm.prank(alice);
        fresh.upgrade(1);
    }

    function test_upgrade_revertsWhenNotRegistered() public {
        _fund(alice, PAID_TIER_PRICE);
        vm.expectRevert(abi.encodeWithSelector(IAccountRegistry.AccountRegistryNotRegistered.selector, alice));
        vm.prank(alice);
        accounts.upgrade(1);
    }

    function test_upgrade_revertsWhenSuspended() public {
        _register(alice);
        _fund(alice, PAID_TIER_PRICE);
        vm.prank(operator);
        accounts.setStatus(alice, SUSPENDED);

        vm.expectRevert(
            abi.encodeWithSelector(IAccountRegistry.AccountRegistryAccountSuspended.selector, alice)
        );
        vm.prank(alice);
        accounts.upgrade(1);
    }

    function test_upgrade_revertsWhenPermanentlyPaid() public {
        _register(alice);
        _fund(alice, PAID_TIER_PRICE);
        _makePaid(alice);

        vm.expectRevert(
            abi.encodeWithSelector(IAccountRegistry.AccountRegistryPermanentlyPaid.selector, alice)
        );
        vm.prank(alice);
        accounts.upgrade(1);
        assertEq(ledger.balanceOf(alice), PAID_TIER_PRICE);
    }

    function test_upgrade_revertsOnInsufficientCredit() public {
        _register(alice);
        _fund(alice, 2 * PAID_TIER_PRICE - 1);

        vm.expectRevert(
            abi.encodeWithSelector(
                ICreditLedger.CreditLedgerInsufficientBalance.selector,
                alice,
                2 * PAID_TIER_PRICE - 1,
                2 * PAID_TIER_PRICE
            )
        );
        vm.prank(alice);
        accounts.upgrade(2);

        // Nothing happened: tier, balance and the upgrade nonce are as before.
        _assertAccount(alice, FREE, ACTIVE, _now(), 0);
        assertEq(ledger.balanceOf(alice), 2 * PAID_TIER_PRICE - 1);
        vm.expectEmit(address(accounts));
        emit IAccountRegistry.AccountUpgraded(alice, 1, PAID_TIER_PRICE, _usageRef(accounts, alice, 0));
        vm.prank(alice);
        accounts.upgrade(1);
    }

    function test_upgrade_revertsWhenLedgerDeniesBilling() public {
        // A ledger that did not grant the registry BILLING_ROLE refuses the charge, and the upgrade with it.
        CreditLedger other = CreditLedger(
            address(
                new ERC1967Proxy(
                    address(new CreditLedger(address(forwarder))),
                    abi.encodeCall(CreditLedger.initialize, (admin))
                )
            )
        );
        vm.prank(admin);
        accounts.setCreditLedger(address(other));
        _register(alice);

        _expectUnauthorized(address(accounts), other.BILLING_ROLE());
        vm.prank(alice);
        accounts.upgrade(1);
        _assertAccount(alice, FREE, ACTIVE, _now(), 0);
    }

    function test_upgrade_throughForwarder() public {
        _fund(alice, 2 * PAID_TIER_PRICE);

        vm.startPrank(relayer);
        forwarder.execute(
            _forwardRequest(aliceKey, address(accounts), abi.encodeCall(AccountRegistry.register, ()))
        );

        uint64 expiresAt = _now() + 2 * MONTH;
        bytes32 ref = _usageRef(accounts, alice, 0);
        ERC2771Forwarder.ForwardRequestData memory req =
            _forwardRequest(aliceKey, address(accounts), abi.encodeCall(AccountRegistry.upgrade, (2)));
        vm.expectEmit(address(accounts));
        emit IAccountRegistry.TierChanged(alice, PAID, expiresAt);
        vm.expectEmit(address(accounts));
        emit IAccountRegistry.AccountUpgraded(alice, 2, 2 * PAID_TIER_PRICE, ref);
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsDeducted(alice, 0, 2 * PAID_TIER_PRICE, 0, ref);
        vm.expectEmit(address(forwarder));
        emit ERC2771Forwarder.ExecutedForwardRequest(alice, 1, true);
        forwarder.execute(req);
        vm.stopPrank();

        // Alice paid in credits; the relayer is neither registered nor charged.
        _assertAccount(alice, PAID, ACTIVE, _now(), expiresAt);
        assertEq(ledger.balanceOf(alice), 0);
        assertFalse(accounts.isActive(relayer));
    }

    function test_upgrade_throughForwarderFailsWhenCreditShort() public {
        _register(alice);
        ERC2771Forwarder.ForwardRequestData memory req =
            _forwardRequest(aliceKey, address(accounts), abi.encodeCall(AccountRegistry.upgrade, (1)));

        // The forwarder does not bubble the inner reason; the request stays unused and can be retried.
        vm.expectRevert(abi.encodeWithSelector(Errors.FailedCall.selector));
        vm.prank(relayer);
        forwarder.execute(req);
        assertEq(forwarder.nonces(alice), 0);
        _assertAccount(alice, FREE, ACTIVE, _now(), 0);
    }

    function testFuzz_upgrade_arithmetic(uint32 months, uint256 price, bool running, uint32 elapsed) public {
        months = uint32(bound(months, 1, 120));
        price = bound(price, 1, 1e15);
        vm.prank(admin);
        accounts.setPaidTierPrice(price);
        _register(alice);

        uint64 start;
        if (running) {
            // A running term of a random length, part of which has passed.
            uint64 termEnd = _now() + uint64(bound(elapsed, 1, 5 * 365 days));
            vm.prank(operator);
            accounts.setTier(alice, PAID, termEnd);
            vm.warp(block.timestamp + bound(elapsed, 0, termEnd - _now() - 1));
            start = termEnd;
        } else {
            vm.warp(block.timestamp + elapsed);
            start = _now();
        }

        uint256 credits = price * months;
        _fund(alice, credits + 1);
        uint64 expiresAt = start + MONTH * months;

        vm.expectEmit(address(accounts));
        emit IAccountRegistry.AccountUpgraded(alice, months, credits, _usageRef(accounts, alice, 0));
        vm.prank(alice);
        accounts.upgrade(months);

        assertEq(accounts.accountOf(alice).tierExpiresAt, expiresAt);
        assertEq(ledger.balanceOf(alice), 1);
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(PAID));
        vm.warp(expiresAt);
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(FREE));
    }

    function testFuzz_upgrade_revertsOutsideMonthRange(uint32 months) public {
        vm.assume(months == 0 || months > 120);
        _register(alice);
        _fund(alice, PAID_TIER_PRICE);
        vm.expectRevert(
            abi.encodeWithSelector(IAccountRegistry.AccountRegistryInvalidMonths.selector, months)
        );
        vm.prank(alice);
        accounts.upgrade(months);
    }

    // ------------------------------------------------------------------ views

    function test_views_unregisteredAccount() public view {
        _assertAccount(alice, FREE, UNREGISTERED, 0, 0);
        assertFalse(accounts.isActive(alice));
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(FREE));
    }

    function test_effectiveTier_freeAfterExpiry() public {
        _register(alice);
        _fund(alice, PAID_TIER_PRICE);
        vm.prank(alice);
        accounts.upgrade(1);
        uint64 expiresAt = _now() + MONTH;

        vm.warp(expiresAt - 1);
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(PAID));
        vm.warp(expiresAt);
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(FREE));
        vm.warp(expiresAt + 365 days);
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(FREE));
    }

    function test_effectiveTier_suspendedPaidStaysPaid() public {
        // Status and tier are independent: suspension blocks actions, it does not change the tier.
        _register(alice);
        _makePaid(alice);
        vm.prank(operator);
        accounts.setStatus(alice, SUSPENDED);
        assertEq(uint8(accounts.effectiveTier(alice)), uint8(PAID));
        assertFalse(accounts.isActive(alice));
    }

    // ------------------------------------------------------------------ access control (fuzz)

    function testFuzz_operatorFunctions_refuseCallersWithoutRole(address caller) public {
        vm.assume(!accounts.hasRole(operatorRole, caller));
        // The forwarder's own calls would be read as forwarded ones (sender taken from the calldata).
        vm.assume(caller != address(forwarder));
        _register(alice);

        vm.startPrank(caller);
        _expectUnauthorized(caller, operatorRole);
        accounts.registerFor(bob);
        _expectUnauthorized(caller, operatorRole);
        accounts.setTier(alice, PAID, 0);
        _expectUnauthorized(caller, operatorRole);
        accounts.setStatus(alice, SUSPENDED);
        _expectUnauthorized(caller, operatorRole);
        accounts.setFreeTierDuration(1 days);
        vm.stopPrank();
    }

    function testFuzz_adminFunctions_refuseCallersWithoutRole(address caller) public {
        vm.assume(!accounts.hasRole(adminRole, caller));
        vm.assume(caller != address(forwarder));

        vm.startPrank(caller);
        _expectUnauthorized(caller, adminRole);
        accounts.setPaidTierPrice(1);
        _expectUnauthorized(caller, adminRole);
        accounts.setCreditLedger(stranger);
        vm.stopPrank();
    }

    function test_operatorFunctions_forwardedCallIsJudgedBySigner() public {
        // The forwarder appends the signer to the call data; the role check must see alice, not the forwarder.
        vm.prank(address(forwarder));
        (bool ok, bytes memory ret) = address(accounts)
            .call(abi.encodePacked(abi.encodeCall(AccountRegistry.registerFor, (bob)), alice));
        assertFalse(ok);
        assertEq(
            ret,
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, alice, operatorRole
            )
        );

        // The same call signed by the operator passes.
        vm.prank(address(forwarder));
        (ok,) = address(accounts)
            .call(abi.encodePacked(abi.encodeCall(AccountRegistry.registerFor, (bob)), operator));
        assertTrue(ok);
        assertTrue(accounts.isActive(bob));
    }
}
