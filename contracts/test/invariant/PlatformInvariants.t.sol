// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAccountRegistry} from "../../src/interfaces/IAccountRegistry.sol";
import {IDomainRegistry} from "../../src/interfaces/IDomainRegistry.sol";
import {IServiceRegistry} from "../../src/interfaces/IServiceRegistry.sol";
import {PlatformTest} from "../utils/PlatformTest.sol";
import {PlatformHandler} from "./handlers/PlatformHandler.sol";

/// @notice Invariants of the whole platform under random sequences of users', roles' and strangers' calls
/// (see `PlatformHandler`): credit is conserved, references are single-use, unchargeable services are never
/// charged, tier limits hold, only owners and operator roles change services and domains, and cancellation
/// is final.
contract PlatformInvariantsTest is PlatformTest {
    PlatformHandler internal handler;

    function setUp() public override {
        super.setUp();
        handler = new PlatformHandler(
            accounts,
            ledger,
            services,
            domains,
            token,
            PlatformHandler.Roles({
                operator: operator,
                oracle: oracle,
                billing: billing,
                registrar: registrar,
                verifier: verifier,
                stranger: stranger
            })
        );
        // Three of the five users start registered, funded and hosting a site, and two own a domain, so a
        // 50-call run reaches billing, links and expiries; the other two start from nothing. All through the
        // handler, so its model knows the state.
        for (uint256 i; i < 3; ++i) {
            handler.register(i);
            handler.recharge(i, 20e6);
            handler.createService(i, uint256(IServiceRegistry.ServiceKind.StaticHosting), false);
        }
        handler.purchaseDomain({nameSeed: 0, ownerSeed: 0, expirySeed: 365 days << 3 | 1});
        handler.verifyDomain({nameSeed: 1, ownerSeed: 1, methodSeed: 0});

        bytes4[] memory selectors = new bytes4[](20);
        selectors[0] = PlatformHandler.register.selector;
        selectors[1] = PlatformHandler.recharge.selector;
        selectors[2] = PlatformHandler.creditFiat.selector;
        selectors[3] = PlatformHandler.upgrade.selector;
        selectors[4] = PlatformHandler.setTier.selector;
        selectors[5] = PlatformHandler.warp.selector;
        selectors[6] = PlatformHandler.createService.selector;
        selectors[7] = PlatformHandler.pause.selector;
        selectors[8] = PlatformHandler.resume.selector;
        selectors[9] = PlatformHandler.suspend.selector;
        selectors[10] = PlatformHandler.cancel.selector;
        selectors[11] = PlatformHandler.deduct.selector;
        selectors[12] = PlatformHandler.deductBatch.selector;
        selectors[13] = PlatformHandler.purchaseDomain.selector;
        selectors[14] = PlatformHandler.verifyDomain.selector;
        selectors[15] = PlatformHandler.link.selector;
        selectors[16] = PlatformHandler.unlink.selector;
        selectors[17] = PlatformHandler.release.selector;
        selectors[18] = PlatformHandler.transferDomain.selector;
        selectors[19] = PlatformHandler.strangerAct.selector;
        targetContract(address(handler));
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
    }

    /// @notice Credit is conserved: only actors are ever credited, so their balances sum to everything
    /// credited minus everything charged; the handler's own sums equal the ledger's totals; and every
    /// balance is the one the model predicts.
    function invariant_balancesSumToLedgerTotals() public view {
        uint256 sum;
        for (uint256 i; i < handler.ACTORS(); ++i) {
            address a = handler.actor(i);
            uint256 balance = ledger.balanceOf(a);
            assertEq(balance, handler.ghostBalance(a), "balance differs from the model");
            sum += balance;
        }
        assertEq(sum, ledger.totalCredited() - ledger.totalDebited(), "balances != credited - debited");
        assertEq(handler.ghostCredited(), ledger.totalCredited(), "ghost credited != totalCredited");
        assertEq(handler.ghostDebited(), ledger.totalDebited(), "ghost debited != totalDebited");
    }

    /// @notice No paused, suspended, cancelled or expired service (nor another account's) was ever charged.
    function invariant_unchargeableServicesNeverCharged() public view {
        assertEq(handler.ghostUnchargeableCharges(), 0, "an unchargeable service was charged");
    }

    /// @notice A payment reference credits at most once and a usage reference charges at most once: no call
    /// with a reused reference moved credit, and every reference the handler saw used is marked used.
    function invariant_referencesAreSingleUse() public view {
        assertEq(handler.ghostReusedRefEffects(), 0, "a reused reference moved credit");
        (bytes32[] memory payments, bytes32[] memory usages) = handler.usedRefs();
        for (uint256 i; i < payments.length; ++i) {
            assertTrue(ledger.isPaymentRefUsed(payments[i]), "credited payment reference not marked used");
        }
        for (uint256 i; i < usages.length; ++i) {
            assertTrue(ledger.isUsageRefUsed(usages[i]), "charged usage reference not marked used");
        }
    }

    /// @notice No account holds more open services of a kind than any tier allows, the registry's count is
    /// the number of the owner's non-cancelled services of that kind, and no creation passed the limit of
    /// the owner's tier at that moment, nor opened a priced service without an hour of credit.
    function invariant_tierLimitsHold() public view {
        assertEq(handler.ghostLimitViolations(), 0, "a service was created past its tier's limit");
        assertEq(handler.ghostUnfundedOpens(), 0, "a priced service was opened without an hour of credit");
        for (uint256 k; k < 5; ++k) {
            IServiceRegistry.ServiceKind kind = IServiceRegistry.ServiceKind(k);
            uint32 free = services.tierLimit(kind, IAccountRegistry.Tier.Free);
            uint32 paid = services.tierLimit(kind, IAccountRegistry.Tier.Paid);
            uint32 most = free > paid ? free : paid;
            for (uint256 i; i < handler.ACTORS(); ++i) {
                address a = handler.actor(i);
                uint32 open = services.openServices(a, kind);
                assertLe(open, most, "more open services than any tier allows");
                assertEq(open, handler.ghostOpenServices(a, kind), "openServices != non-cancelled services");
            }
        }
    }

    /// @notice Only owners and operator roles changed services and domains: every stranger's (and every
    /// non-owner's) attempt reverted, and every service's state and every domain's record is the one the
    /// model built from the authorised calls alone.
    function invariant_onlyOwnersOrOperatorsChangeState() public view {
        assertEq(handler.ghostUnauthorizedChanges(), 0, "an unauthorised caller changed state");
        uint256 count = services.serviceCount();
        assertEq(count, handler.ghostServiceCount(), "services created outside the model");
        for (uint256 id = 1; id <= count; ++id) {
            assertEq(
                uint8(services.serviceOf(id).state), uint8(handler.ghostState(id)), "service state differs"
            );
        }
        for (uint256 i; i < handler.NAMES(); ++i) {
            bytes32 node = handler.nodeAt(i);
            IDomainRegistry.Domain memory actual = domains.domainOf(node);
            IDomainRegistry.Domain memory expected = handler.ghostDomain(node);
            assertEq(actual.owner, expected.owner, "domain owner differs");
            assertEq(uint8(actual.method), uint8(expected.method), "domain method differs");
            assertEq(actual.expiresAt, expected.expiresAt, "domain expiry differs");
            assertEq(actual.serviceId, expected.serviceId, "domain link differs");
        }
    }

    /// @notice A linked domain always serves a hosting service of its own owner.
    function invariant_linksServeOwnersHosting() public view {
        for (uint256 i; i < handler.NAMES(); ++i) {
            IDomainRegistry.Domain memory d = domains.domainOf(handler.nodeAt(i));
            if (d.serviceId == 0) continue;
            IServiceRegistry.Service memory svc = services.serviceOf(d.serviceId);
            assertEq(svc.owner, d.owner, "domain linked to another account's service");
            assertTrue(
                svc.kind == IServiceRegistry.ServiceKind.StaticHosting
                    || svc.kind == IServiceRegistry.ServiceKind.DynamicHosting,
                "domain linked to a non-hosting service"
            );
        }
    }

    /// @notice A cancelled service stays cancelled.
    function invariant_cancelledStaysCancelled() public view {
        for (uint256 id = 1; id <= services.serviceCount(); ++id) {
            if (handler.ghostCancelled(id)) {
                assertEq(
                    uint8(services.serviceOf(id).state),
                    uint8(IServiceRegistry.ServiceState.Cancelled),
                    "a cancelled service came back"
                );
            }
        }
    }

    /// @notice Every call ended as the model predicted: success, or the exact revert.
    function invariant_callsMatchTheModel() public view {
        assertEq(
            handler.ghostMismatches(),
            0,
            string.concat("outcome differs from the model: ", handler.lastMismatch())
        );
    }
}
