// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {CreditLedger} from "../src/CreditLedger.sol";
import {IAccountRegistry} from "../src/interfaces/IAccountRegistry.sol";
import {ICreditLedger} from "../src/interfaces/ICreditLedger.sol";
import {IServiceRegistry} from "../src/interfaces/IServiceRegistry.sol";
import {TestToken} from "../src/testing/TestToken.sol";
import {FeeOnTransferToken} from "./mocks/FeeOnTransferToken.sol";
import {ReentrantToken} from "./mocks/ReentrantToken.sol";
import {PlatformTest} from "./utils/PlatformTest.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {ERC2771Forwarder} from "@openzeppelin/contracts/metatx/ERC2771Forwarder.sol";
import {ERC1967Proxy} from "@openzeppelin/contracts/proxy/ERC1967/ERC1967Proxy.sol";
import {Initializable} from "@openzeppelin/contracts/proxy/utils/Initializable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {CommonBase} from "forge-std/Base.sol";
import {StdCheats} from "forge-std/StdCheats.sol";
import {StdUtils} from "forge-std/StdUtils.sol";
import {Vm} from "forge-std/Vm.sol";

/// @notice Unit and fuzz tests of CreditLedger, one section per external function, against the platform as
/// the deploy script wires it.
contract CreditLedgerTest is PlatformTest {
    bytes32 internal constant DEFAULT_ADMIN_ROLE = 0x00;
    bytes32 internal constant PAYMENT_ORACLE_ROLE = keccak256("PAYMENT_ORACLE_ROLE");
    bytes32 internal constant BILLING_ROLE = keccak256("BILLING_ROLE");

    address internal treasury = makeAddr("treasury");

    // ------------------------------------------------------------------------------------------------
    // helpers
    // ------------------------------------------------------------------------------------------------

    function _ref(string memory tag) internal pure returns (bytes32) {
        return keccak256(bytes(tag));
    }

    /// @dev Mints `amount` test tokens to `user`, who approves and recharges them.
    function _recharge(address user, uint256 amount) internal returns (uint256 credits) {
        token.mint(user, amount);
        vm.startPrank(user);
        token.approve(address(ledger), amount);
        credits = ledger.recharge(address(token), amount);
        vm.stopPrank();
    }

    function _deduct(address account, uint256 serviceId, uint256 credits, bytes32 usageRef) internal {
        vm.prank(billing);
        ledger.deduct(account, serviceId, credits, usageRef);
    }

    function _batch(address[] memory a, uint256[] memory s, uint256[] memory c, bytes32[] memory r) internal {
        vm.prank(billing);
        ledger.deductBatch(a, s, c, r);
    }

    function _setRate(address token_, uint256 rate) internal {
        vm.prank(admin);
        ledger.setTokenRate(token_, rate);
    }

    /// @dev A second ledger behind its own proxy, initialised but never wired: no service registry, no rates.
    function _freshLedger() internal returns (CreditLedger fresh) {
        CreditLedger impl = new CreditLedger(address(forwarder));
        fresh = CreditLedger(
            address(new ERC1967Proxy(address(impl), abi.encodeCall(CreditLedger.initialize, (admin))))
        );
        vm.startPrank(admin);
        fresh.grantRole(PAYMENT_ORACLE_ROLE, oracle);
        fresh.grantRole(BILLING_ROLE, billing);
        vm.stopPrank();
    }

    function _expectUnauthorized(address caller, bytes32 role) internal {
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, role)
        );
    }

    /// @dev Random callers for access-control fuzzing: anyone without `role`, except the trusted forwarder
    /// (calls from it are attributed to the address in the calldata's last 20 bytes).
    function _assumeOutsider(address caller, bytes32 role) internal view {
        vm.assume(caller != address(forwarder) && !ledger.hasRole(role, caller));
    }

    function _assertSupply(address[] memory holders) internal view {
        uint256 sum;
        for (uint256 i; i < holders.length; ++i) {
            sum += ledger.balanceOf(holders[i]);
        }
        assertEq(sum, ledger.totalCredited() - ledger.totalDebited(), "sum(balances) != credited - debited");
    }

    function _countLogs(Vm.Log[] memory logs, bytes32 topic0) internal view returns (uint256 n) {
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter == address(ledger) && logs[i].topics[0] == topic0) ++n;
        }
    }

    function _addrs(address a) internal pure returns (address[] memory r) {
        r = new address[](1);
        r[0] = a;
    }

    function _addrs(address a, address b) internal pure returns (address[] memory r) {
        r = new address[](2);
        (r[0], r[1]) = (a, b);
    }

    function _addrs(address a, address b, address c) internal pure returns (address[] memory r) {
        r = new address[](3);
        (r[0], r[1], r[2]) = (a, b, c);
    }

    function _uints(uint256 a) internal pure returns (uint256[] memory r) {
        r = new uint256[](1);
        r[0] = a;
    }

    function _uints(uint256 a, uint256 b) internal pure returns (uint256[] memory r) {
        r = new uint256[](2);
        (r[0], r[1]) = (a, b);
    }

    function _uints(uint256 a, uint256 b, uint256 c) internal pure returns (uint256[] memory r) {
        r = new uint256[](3);
        (r[0], r[1], r[2]) = (a, b, c);
    }

    function _refs(bytes32 a) internal pure returns (bytes32[] memory r) {
        r = new bytes32[](1);
        r[0] = a;
    }

    function _refs(bytes32 a, bytes32 b) internal pure returns (bytes32[] memory r) {
        r = new bytes32[](2);
        (r[0], r[1]) = (a, b);
    }

    function _refs(bytes32 a, bytes32 b, bytes32 c) internal pure returns (bytes32[] memory r) {
        r = new bytes32[](3);
        (r[0], r[1], r[2]) = (a, b, c);
    }

    // ------------------------------------------------------------------------------------------------
    // deployment, initialisation and views
    // ------------------------------------------------------------------------------------------------

    function test_deployment_wiredAsTheDeployScriptDoes() public view {
        assertEq(ledger.PAYMENT_ORACLE_ROLE(), PAYMENT_ORACLE_ROLE);
        assertEq(ledger.BILLING_ROLE(), BILLING_ROLE);
        assertTrue(ledger.hasRole(DEFAULT_ADMIN_ROLE, admin));
        assertTrue(ledger.hasRole(PAYMENT_ORACLE_ROLE, oracle));
        assertTrue(ledger.hasRole(BILLING_ROLE, billing));
        assertTrue(ledger.hasRole(BILLING_ROLE, address(accounts)));
        assertTrue(ledger.isTrustedForwarder(address(forwarder)));
        assertEq(ledger.serviceRegistry(), address(services));
        assertEq(ledger.tokenRate(address(token)), TEST_TOKEN_RATE);
        assertEq(ledger.tokenRate(address(0xBEEF)), 0);
        assertEq(ledger.creditsFor(address(token), 1e6), 1e6);
        assertEq(ledger.creditsFor(address(0xBEEF), 1e6), 0);
        assertEq(ledger.balanceOf(alice), 0);
        assertEq(ledger.totalCredited(), 0);
        assertEq(ledger.totalDebited(), 0);
        assertFalse(ledger.isPaymentRefUsed(_ref("p")));
        assertFalse(ledger.isUsageRefUsed(_ref("u")));
    }

    function test_initialize_revertsOnZeroAdmin() public {
        CreditLedger impl = new CreditLedger(address(forwarder));
        vm.expectRevert(ICreditLedger.CreditLedgerZeroAddress.selector);
        new ERC1967Proxy(address(impl), abi.encodeCall(CreditLedger.initialize, (address(0))));
    }

    function test_initialize_revertsWhenCalledAgain() public {
        vm.expectRevert(Initializable.InvalidInitialization.selector);
        ledger.initialize(stranger);
    }

    function test_initialize_disabledOnImplementation() public {
        CreditLedger impl = new CreditLedger(address(forwarder));
        vm.expectRevert(Initializable.InvalidInitialization.selector);
        impl.initialize(admin);
    }

    function test_freshLedger_startsEmptyAndUnwired() public {
        CreditLedger fresh = _freshLedger();
        assertEq(fresh.serviceRegistry(), address(0));
        assertEq(fresh.tokenRate(address(token)), 0);
        assertTrue(fresh.hasRole(DEFAULT_ADMIN_ROLE, admin));
    }

    function test_upgrade_keepsBalancesAndRefs() public {
        _fund(alice, 1234);
        _deduct(alice, 0, 34, _ref("u1"));
        CreditLedger next = new CreditLedger(address(forwarder));
        vm.prank(admin);
        ledger.upgradeToAndCall(address(next), "");
        assertEq(ledger.balanceOf(alice), 1200);
        assertEq(ledger.totalCredited(), 1234);
        assertEq(ledger.totalDebited(), 34);
        assertTrue(ledger.isUsageRefUsed(_ref("u1")));
        assertEq(ledger.serviceRegistry(), address(services));
        assertEq(ledger.tokenRate(address(token)), TEST_TOKEN_RATE);
    }

    // ------------------------------------------------------------------------------------------------
    // recharge
    // ------------------------------------------------------------------------------------------------

    function test_recharge_creditsAtTheRate() public {
        token.mint(alice, 25e6);
        vm.startPrank(alice);
        token.approve(address(ledger), 25e6);
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsRecharged(alice, address(token), 25e6, 25e6, 25e6);
        uint256 credits = ledger.recharge(address(token), 25e6);
        vm.stopPrank();

        assertEq(credits, 25e6);
        assertEq(ledger.balanceOf(alice), 25e6);
        assertEq(ledger.totalCredited(), 25e6);
        assertEq(ledger.totalDebited(), 0);
        assertEq(token.balanceOf(alice), 0);
        assertEq(token.balanceOf(address(ledger)), 25e6);
        assertEq(token.allowance(alice, address(ledger)), 0);
    }

    function test_recharge_balanceAfterIncludesEarlierCredit() public {
        _fund(alice, 7);
        token.mint(alice, 3e6);
        vm.startPrank(alice);
        token.approve(address(ledger), 3e6);
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsRecharged(alice, address(token), 3e6, 3e6, 3e6 + 7);
        ledger.recharge(address(token), 3e6);
        vm.stopPrank();
        assertEq(ledger.balanceOf(alice), 3e6 + 7);
        assertEq(ledger.totalCredited(), 3e6 + 7);
    }

    function test_recharge_roundsCreditsDown() public {
        _setRate(address(token), 0.5e18);
        token.mint(alice, 3);
        vm.startPrank(alice);
        token.approve(address(ledger), 3);
        // 3 * 0.5 = 1.5 credit units: the fraction stays with the platform, never minted.
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsRecharged(alice, address(token), 3, 1, 1);
        assertEq(ledger.recharge(address(token), 3), 1);
        vm.stopPrank();
        assertEq(token.balanceOf(address(ledger)), 3);
    }

    function test_recharge_revertsOnZeroAmount() public {
        vm.prank(alice);
        vm.expectRevert(ICreditLedger.CreditLedgerZeroAmount.selector);
        ledger.recharge(address(token), 0);
    }

    function test_recharge_revertsOnUnsupportedToken() public {
        FeeOnTransferToken other = new FeeOnTransferToken(0);
        other.mint(alice, 1e18);
        vm.startPrank(alice);
        other.approve(address(ledger), 1e18);
        vm.expectRevert(
            abi.encodeWithSelector(ICreditLedger.CreditLedgerUnsupportedToken.selector, address(other))
        );
        ledger.recharge(address(other), 1e18);
        vm.stopPrank();
        assertEq(other.balanceOf(alice), 1e18);
    }

    function test_recharge_revertsOnTokenWhoseRateWasRemoved() public {
        _setRate(address(token), 0);
        token.mint(alice, 1e6);
        vm.startPrank(alice);
        token.approve(address(ledger), 1e6);
        vm.expectRevert(
            abi.encodeWithSelector(ICreditLedger.CreditLedgerUnsupportedToken.selector, address(token))
        );
        ledger.recharge(address(token), 1e6);
        vm.stopPrank();
    }

    function test_recharge_revertsWhenAmountBuysNoCredit() public {
        _setRate(address(token), 0.1e18); // ten base units per credit unit
        token.mint(alice, 9);
        vm.startPrank(alice);
        token.approve(address(ledger), 9);
        vm.expectRevert(abi.encodeWithSelector(ICreditLedger.CreditLedgerAmountTooSmall.selector, 9));
        ledger.recharge(address(token), 9);
        vm.stopPrank();
        assertEq(token.balanceOf(alice), 9);
        assertEq(ledger.balanceOf(alice), 0);
    }

    function test_recharge_revertsWithoutApproval() public {
        token.mint(alice, 5e6);
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(ledger), 0, 5e6)
        );
        ledger.recharge(address(token), 5e6);
    }

    function test_recharge_revertsWithoutTokens() public {
        vm.startPrank(alice);
        token.approve(address(ledger), 5e6);
        vm.expectRevert(abi.encodeWithSelector(IERC20Errors.ERC20InsufficientBalance.selector, alice, 0, 5e6));
        ledger.recharge(address(token), 5e6);
        vm.stopPrank();
    }

    function test_recharge_feeOnTransferTokenCreditsOnlyWhatArrived() public {
        FeeOnTransferToken fot = new FeeOnTransferToken(100); // 1 % fee
        _setRate(address(fot), 1e6); // 18 decimals: 1e18 base units buy 1e6 credit units (1 USD)
        fot.mint(alice, 100e18);
        vm.startPrank(alice);
        fot.approve(address(ledger), 100e18);
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsRecharged(alice, address(fot), 99e18, 99e6, 99e6);
        uint256 credits = ledger.recharge(address(fot), 100e18);
        vm.stopPrank();

        assertEq(credits, 99e6);
        assertEq(ledger.balanceOf(alice), 99e6);
        assertEq(ledger.totalCredited(), 99e6);
        assertEq(fot.balanceOf(address(ledger)), 99e18);
    }

    function test_recharge_revertsWhenTheFeeTakesEverything() public {
        FeeOnTransferToken fot = new FeeOnTransferToken(10_000);
        _setRate(address(fot), 1e6);
        fot.mint(alice, 100e18);
        vm.startPrank(alice);
        fot.approve(address(ledger), 100e18);
        // Nothing arrives: the error names the amount asked for, and nothing is credited.
        vm.expectRevert(abi.encodeWithSelector(ICreditLedger.CreditLedgerAmountTooSmall.selector, 100e18));
        ledger.recharge(address(fot), 100e18);
        vm.stopPrank();
        assertEq(fot.balanceOf(alice), 100e18);
    }

    function test_recharge_revertsOnReentrancy() public {
        ReentrantToken evil = new ReentrantToken();
        _setRate(address(evil), 1e18);
        evil.mint(alice, 2e6);
        evil.mint(address(evil), 1e6);
        vm.prank(address(evil));
        evil.approve(address(ledger), 1e6);
        evil.arm(address(ledger), abi.encodeCall(CreditLedger.recharge, (address(evil), 1e6)));
        vm.startPrank(alice);
        evil.approve(address(ledger), 2e6);
        vm.expectRevert(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector);
        ledger.recharge(address(evil), 2e6);
        vm.stopPrank();
        assertEq(ledger.totalCredited(), 0);
    }

    function test_recharge_gaslessThroughForwarder() public {
        token.mint(alice, 4e6);
        vm.prank(alice);
        token.approve(address(ledger), 4e6);
        ERC2771Forwarder.ForwardRequestData memory req = _forwardRequest(
            aliceKey, address(ledger), abi.encodeCall(CreditLedger.recharge, (address(token), 4e6))
        );
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsRecharged(alice, address(token), 4e6, 4e6, 4e6);
        vm.prank(relayer, relayer);
        forwarder.execute(req);
        assertEq(ledger.balanceOf(alice), 4e6);
        assertEq(ledger.balanceOf(relayer), 0);
    }

    function testFuzz_recharge_creditsAmountAtUnitRate(uint256 amount) public {
        amount = _bound(amount, 1, 1e36);
        uint256 credits = _recharge(alice, amount);
        assertEq(credits, amount);
        assertEq(ledger.balanceOf(alice), amount);
        assertEq(ledger.totalCredited(), amount);
        assertEq(token.balanceOf(address(ledger)), amount);
    }

    // ------------------------------------------------------------------------------------------------
    // rechargeWithPermit
    // ------------------------------------------------------------------------------------------------

    function test_rechargeWithPermit_worksWithAValidPermit() public {
        token.mint(alice, 10e6);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(aliceKey, address(ledger), 10e6, deadline);
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsRecharged(alice, address(token), 10e6, 10e6, 10e6);
        vm.prank(alice);
        uint256 credits = ledger.rechargeWithPermit(address(token), 10e6, deadline, v, r, s);

        assertEq(credits, 10e6);
        assertEq(ledger.balanceOf(alice), 10e6);
        assertEq(token.nonces(alice), 1);
        assertEq(token.allowance(alice, address(ledger)), 0);
        assertEq(token.balanceOf(address(ledger)), 10e6);
    }

    function test_rechargeWithPermit_worksWhenThePermitWasFrontRun() public {
        token.mint(alice, 10e6);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(aliceKey, address(ledger), 10e6, deadline);
        // Someone copies the permit from the mempool and submits it first: the nonce is spent, the
        // allowance is set, and the ledger's own permit call now fails inside its try.
        vm.prank(stranger);
        token.permit(alice, address(ledger), 10e6, deadline, v, r, s);
        assertEq(token.allowance(alice, address(ledger)), 10e6);

        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsRecharged(alice, address(token), 10e6, 10e6, 10e6);
        vm.prank(alice);
        ledger.rechargeWithPermit(address(token), 10e6, deadline, v, r, s);
        assertEq(ledger.balanceOf(alice), 10e6);
        assertEq(token.nonces(alice), 1);
    }

    function test_rechargeWithPermit_revertsWithBadPermitAndNoAllowance() public {
        token.mint(alice, 10e6);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(bobKey, address(ledger), 10e6, deadline); // wrong signer
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(ledger), 0, 10e6)
        );
        ledger.rechargeWithPermit(address(token), 10e6, deadline, v, r, s);
        assertEq(token.nonces(alice), 0);
    }

    function test_rechargeWithPermit_revertsWithExpiredPermitAndNoAllowance() public {
        token.mint(alice, 10e6);
        uint256 deadline = block.timestamp - 1;
        (uint8 v, bytes32 r, bytes32 s) = _permit(aliceKey, address(ledger), 10e6, deadline);
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(ledger), 0, 10e6)
        );
        ledger.rechargeWithPermit(address(token), 10e6, deadline, v, r, s);
    }

    function test_rechargeWithPermit_tokenWithoutPermitFallsBackToAllowance() public {
        FeeOnTransferToken plain = new FeeOnTransferToken(0); // no permit() at all
        _setRate(address(plain), 1e6);
        plain.mint(alice, 2e18);
        vm.startPrank(alice);
        plain.approve(address(ledger), 2e18);
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsRecharged(alice, address(plain), 2e18, 2e6, 2e6);
        ledger.rechargeWithPermit(address(plain), 2e18, block.timestamp, 0, bytes32(0), bytes32(0));
        vm.stopPrank();
        assertEq(ledger.balanceOf(alice), 2e6);
    }

    function test_rechargeWithPermit_revertsOnZeroAmount() public {
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(aliceKey, address(ledger), 0, deadline);
        vm.prank(alice);
        vm.expectRevert(ICreditLedger.CreditLedgerZeroAmount.selector);
        ledger.rechargeWithPermit(address(token), 0, deadline, v, r, s);
    }

    function test_rechargeWithPermit_revertsOnUnsupportedToken() public {
        _setRate(address(token), 0);
        token.mint(alice, 1e6);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(aliceKey, address(ledger), 1e6, deadline);
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(ICreditLedger.CreditLedgerUnsupportedToken.selector, address(token))
        );
        ledger.rechargeWithPermit(address(token), 1e6, deadline, v, r, s);
    }

    function test_rechargeWithPermit_gaslessThroughForwarder() public {
        vm.deal(alice, 0); // alice holds no native token: she could not pay for gas if she had to
        vm.deal(relayer, 1 ether);
        token.mint(alice, 20e6);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(aliceKey, address(ledger), 20e6, deadline);
        ERC2771Forwarder.ForwardRequestData memory req = _forwardRequest(
            aliceKey,
            address(ledger),
            abi.encodeCall(CreditLedger.rechargeWithPermit, (address(token), 20e6, deadline, v, r, s))
        );

        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsRecharged(alice, address(token), 20e6, 20e6, 20e6);
        vm.expectEmit(address(forwarder));
        emit ERC2771Forwarder.ExecutedForwardRequest(alice, 0, true);
        // The relayer sends the transaction (msg.sender and tx.origin): alice only signed.
        vm.prank(relayer, relayer);
        forwarder.execute(req);

        assertEq(ledger.balanceOf(alice), 20e6);
        assertEq(ledger.balanceOf(relayer), 0);
        assertEq(ledger.balanceOf(address(forwarder)), 0);
        assertEq(token.balanceOf(alice), 0);
        assertEq(token.balanceOf(address(ledger)), 20e6);
        assertEq(token.nonces(alice), 1);
        assertEq(forwarder.nonces(alice), 1);
        assertEq(alice.balance, 0);
    }

    // ------------------------------------------------------------------------------------------------
    // creditFiat
    // ------------------------------------------------------------------------------------------------

    function test_creditFiat_creditsOncePerPaymentRef() public {
        bytes32 ref = _ref("stripe:pi_1");
        vm.expectEmit(address(ledger));
        emit ICreditLedger.FiatCredited(alice, ref, 5_000_000, 5_000_000);
        vm.prank(oracle);
        ledger.creditFiat(alice, 5_000_000, ref);

        assertEq(ledger.balanceOf(alice), 5_000_000);
        assertEq(ledger.totalCredited(), 5_000_000);
        assertTrue(ledger.isPaymentRefUsed(ref));
        assertFalse(ledger.isUsageRefUsed(ref));

        vm.expectEmit(address(ledger));
        emit ICreditLedger.FiatCredited(alice, _ref("stripe:pi_2"), 1, 5_000_001);
        vm.prank(oracle);
        ledger.creditFiat(alice, 1, _ref("stripe:pi_2"));
        assertEq(ledger.totalCredited(), 5_000_001);
    }

    function test_creditFiat_revertsOnZeroAccount() public {
        vm.prank(oracle);
        vm.expectRevert(ICreditLedger.CreditLedgerZeroAddress.selector);
        ledger.creditFiat(address(0), 1, _ref("p"));
    }

    function test_creditFiat_revertsOnZeroCredits() public {
        vm.prank(oracle);
        vm.expectRevert(ICreditLedger.CreditLedgerZeroAmount.selector);
        ledger.creditFiat(alice, 0, _ref("p"));
    }

    function test_creditFiat_revertsOnZeroRef() public {
        vm.prank(oracle);
        vm.expectRevert(ICreditLedger.CreditLedgerZeroRef.selector);
        ledger.creditFiat(alice, 1, bytes32(0));
    }

    function test_creditFiat_revertsOnReusedPaymentRef() public {
        bytes32 ref = _ref("stripe:pi_1");
        vm.prank(oracle);
        ledger.creditFiat(alice, 100, ref);
        // A retried webhook, even one claiming another account or amount, credits nothing.
        vm.prank(oracle);
        vm.expectRevert(abi.encodeWithSelector(ICreditLedger.CreditLedgerPaymentRefUsed.selector, ref));
        ledger.creditFiat(bob, 200, ref);
        assertEq(ledger.balanceOf(alice), 100);
        assertEq(ledger.balanceOf(bob), 0);
        assertEq(ledger.totalCredited(), 100);
    }

    function test_creditFiat_onlyPaymentOracle() public {
        address[3] memory callers = [admin, billing, alice];
        for (uint256 i; i < callers.length; ++i) {
            vm.prank(callers[i]);
            _expectUnauthorized(callers[i], PAYMENT_ORACLE_ROLE);
            ledger.creditFiat(alice, 1, _ref("p"));
        }
    }

    // ------------------------------------------------------------------------------------------------
    // deduct
    // ------------------------------------------------------------------------------------------------

    function test_deduct_chargesUsageOutsideAnyService() public {
        _fund(alice, 1000);
        bytes32 ref = _ref("u1");
        vm.recordLogs();
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsDeducted(alice, 0, 400, 600, ref);
        _deduct(alice, 0, 400, ref);

        assertEq(_countLogs(vm.getRecordedLogs(), ICreditLedger.CreditDepleted.selector), 0);
        assertEq(ledger.balanceOf(alice), 600);
        assertEq(ledger.totalCredited(), 1000);
        assertEq(ledger.totalDebited(), 400);
        assertTrue(ledger.isUsageRefUsed(ref));
        assertFalse(ledger.isPaymentRefUsed(ref));
    }

    function test_deduct_chargesAnActiveServiceOfTheAccount() public {
        uint256 id = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        _fund(alice, 1000);
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsDeducted(alice, id, 250, 750, _ref("u1"));
        _deduct(alice, id, 250, _ref("u1"));
        assertEq(ledger.balanceOf(alice), 750);
        assertEq(ledger.totalDebited(), 250);
    }

    function test_deduct_emitsCreditDepletedAtExactlyZero() public {
        _fund(alice, 300);
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsDeducted(alice, 0, 300, 0, _ref("u1"));
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditDepleted(alice);
        _deduct(alice, 0, 300, _ref("u1"));
        assertEq(ledger.balanceOf(alice), 0);
        assertEq(ledger.totalCredited(), ledger.totalDebited());
    }

    function test_deduct_revertsOnZeroAccount() public {
        vm.prank(billing);
        vm.expectRevert(ICreditLedger.CreditLedgerZeroAddress.selector);
        ledger.deduct(address(0), 0, 1, _ref("u"));
    }

    function test_deduct_revertsOnZeroCredits() public {
        _fund(alice, 10);
        vm.prank(billing);
        vm.expectRevert(ICreditLedger.CreditLedgerZeroAmount.selector);
        ledger.deduct(alice, 0, 0, _ref("u"));
    }

    function test_deduct_revertsOnZeroRef() public {
        _fund(alice, 10);
        vm.prank(billing);
        vm.expectRevert(ICreditLedger.CreditLedgerZeroRef.selector);
        ledger.deduct(alice, 0, 1, bytes32(0));
    }

    function test_deduct_revertsOnReusedUsageRef() public {
        _fund(alice, 100);
        _fund(bob, 100);
        _deduct(alice, 0, 10, _ref("u1"));
        vm.prank(billing);
        vm.expectRevert(abi.encodeWithSelector(ICreditLedger.CreditLedgerUsageRefUsed.selector, _ref("u1")));
        ledger.deduct(bob, 0, 20, _ref("u1"));
        assertEq(ledger.balanceOf(alice), 90);
        assertEq(ledger.balanceOf(bob), 100);
        assertEq(ledger.totalDebited(), 10);
    }

    function test_deduct_revertsOnInsufficientBalance() public {
        _fund(alice, 99);
        vm.prank(billing);
        vm.expectRevert(
            abi.encodeWithSelector(ICreditLedger.CreditLedgerInsufficientBalance.selector, alice, 99, 100)
        );
        ledger.deduct(alice, 0, 100, _ref("u1"));
        assertEq(ledger.balanceOf(alice), 99);
        // The revert released the reference: the usage can be charged once the account tops up.
        assertFalse(ledger.isUsageRefUsed(_ref("u1")));
        _fund(alice, 1);
        _deduct(alice, 0, 100, _ref("u1"));
        assertEq(ledger.balanceOf(alice), 0);
    }

    function _expectNotChargeable(uint256 id, address account) internal {
        vm.prank(billing);
        vm.expectRevert(
            abi.encodeWithSelector(ICreditLedger.CreditLedgerServiceNotChargeable.selector, id, account)
        );
        ledger.deduct(account, id, 1, _ref("u1"));
        assertFalse(ledger.isUsageRefUsed(_ref("u1")));
    }

    function test_deduct_revertsWhenServicePaused() public {
        uint256 id = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        _fund(alice, 100);
        vm.prank(alice);
        services.pause(id);
        _expectNotChargeable(id, alice);
    }

    function test_deduct_revertsWhenServiceSuspended() public {
        uint256 id = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        _fund(alice, 100);
        vm.prank(operator);
        services.suspend(id);
        _expectNotChargeable(id, alice);
    }

    function test_deduct_revertsWhenServiceCancelled() public {
        uint256 id = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        _fund(alice, 100);
        vm.prank(alice);
        services.cancel(id);
        _expectNotChargeable(id, alice);
    }

    function test_deduct_revertsWhenFreeServiceExpired() public {
        uint256 id = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        _fund(alice, 100);
        uint64 expiresAt = services.serviceOf(id).expiresAt;
        assertGt(expiresAt, 0);

        vm.warp(expiresAt - 1);
        _deduct(alice, id, 1, _ref("before"));
        vm.warp(expiresAt);
        _expectNotChargeable(id, alice);

        // The expiry binds only Free owners: once Paid, the same service is chargeable again.
        _makePaid(alice);
        _deduct(alice, id, 1, _ref("u1"));
        assertEq(ledger.balanceOf(alice), 98);
    }

    function test_deduct_revertsWhenServiceOwnedBySomeoneElse() public {
        uint256 id = _createService(bob, IServiceRegistry.ServiceKind.StaticHosting);
        _fund(alice, 100);
        _fund(bob, 100);
        _expectNotChargeable(id, alice);
        assertEq(ledger.balanceOf(bob), 100);
    }

    function test_deduct_revertsOnUnknownService() public {
        _fund(alice, 100);
        _expectNotChargeable(999, alice);
    }

    function test_deduct_serviceZeroNeedsNoRegistry() public {
        CreditLedger fresh = _freshLedger();
        vm.prank(oracle);
        fresh.creditFiat(alice, 100, _ref("p"));
        vm.expectEmit(address(fresh));
        emit ICreditLedger.CreditsDeducted(alice, 0, 40, 60, _ref("u1"));
        vm.prank(billing);
        fresh.deduct(alice, 0, 40, _ref("u1"));
        assertEq(fresh.balanceOf(alice), 60);
    }

    function test_deduct_refusesServiceWithoutRegistry() public {
        CreditLedger fresh = _freshLedger();
        // Service 1 exists and is alice's in the platform registry, but this ledger knows no registry.
        uint256 id = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        vm.prank(oracle);
        fresh.creditFiat(alice, 100, _ref("p"));
        vm.prank(billing);
        vm.expectRevert(
            abi.encodeWithSelector(ICreditLedger.CreditLedgerServiceNotChargeable.selector, id, alice)
        );
        fresh.deduct(alice, id, 1, _ref("u1"));
    }

    function test_deduct_onlyBilling() public {
        _fund(alice, 100);
        address[3] memory callers = [admin, oracle, alice];
        for (uint256 i; i < callers.length; ++i) {
            vm.prank(callers[i]);
            _expectUnauthorized(callers[i], BILLING_ROLE);
            ledger.deduct(alice, 0, 1, _ref("u"));
        }
    }

    // ------------------------------------------------------------------------------------------------
    // deductBatch
    // ------------------------------------------------------------------------------------------------

    function test_deductBatch_revertsOnEmptyBatch() public {
        vm.prank(billing);
        vm.expectRevert(ICreditLedger.CreditLedgerInvalidBatch.selector);
        ledger.deductBatch(new address[](0), new uint256[](0), new uint256[](0), new bytes32[](0));
    }

    function test_deductBatch_revertsOnMismatchedLengths() public {
        _fund(alice, 100);
        address[] memory a = _addrs(alice, alice);
        uint256[] memory s = _uints(0, 0);
        uint256[] memory c = _uints(1, 1);
        bytes32[] memory r = _refs(_ref("a"), _ref("b"));

        vm.startPrank(billing);
        vm.expectRevert(ICreditLedger.CreditLedgerInvalidBatch.selector);
        ledger.deductBatch(a, _uints(0), c, r);
        vm.expectRevert(ICreditLedger.CreditLedgerInvalidBatch.selector);
        ledger.deductBatch(a, s, _uints(1, 1, 1), r);
        vm.expectRevert(ICreditLedger.CreditLedgerInvalidBatch.selector);
        ledger.deductBatch(a, s, c, _refs(_ref("a")));
        vm.expectRevert(ICreditLedger.CreditLedgerInvalidBatch.selector);
        ledger.deductBatch(_addrs(alice), s, c, r);
        vm.stopPrank();
        assertEq(ledger.totalDebited(), 0);
    }

    function test_deductBatch_chargesMixedAccounts() public {
        uint256 sa = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        uint256 sb = _createService(bob, IServiceRegistry.ServiceKind.Storage);
        _fund(alice, 1000);
        _fund(bob, 500);

        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsDeducted(alice, sa, 100, 900, _ref("a1"));
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsDeducted(bob, sb, 200, 300, _ref("b1"));
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsDeducted(alice, 0, 50, 850, _ref("a2"));
        _batch(
            _addrs(alice, bob, alice),
            _uints(sa, sb, 0),
            _uints(100, 200, 50),
            _refs(_ref("a1"), _ref("b1"), _ref("a2"))
        );

        assertEq(ledger.balanceOf(alice), 850);
        assertEq(ledger.balanceOf(bob), 300);
        assertEq(ledger.totalCredited(), 1500);
        assertEq(ledger.totalDebited(), 350);
        assertTrue(ledger.isUsageRefUsed(_ref("a1")));
        assertTrue(ledger.isUsageRefUsed(_ref("b1")));
        assertTrue(ledger.isUsageRefUsed(_ref("a2")));
        _assertSupply(_addrs(alice, bob));
    }

    function test_deductBatch_revertsWholeBatchOnAReusedRef() public {
        _fund(alice, 1000);
        _fund(bob, 1000);
        _deduct(alice, 0, 10, _ref("old"));

        vm.prank(billing);
        vm.expectRevert(abi.encodeWithSelector(ICreditLedger.CreditLedgerUsageRefUsed.selector, _ref("old")));
        ledger.deductBatch(
            _addrs(alice, bob, bob),
            _uints(0, 0, 0),
            _uints(100, 100, 100),
            _refs(_ref("n1"), _ref("n2"), _ref("old"))
        );

        // The items before the reused reference were rolled back too.
        assertEq(ledger.balanceOf(alice), 990);
        assertEq(ledger.balanceOf(bob), 1000);
        assertEq(ledger.totalDebited(), 10);
        assertFalse(ledger.isUsageRefUsed(_ref("n1")));
        assertFalse(ledger.isUsageRefUsed(_ref("n2")));
    }

    function test_deductBatch_revertsOnARefRepeatedInsideTheBatch() public {
        _fund(alice, 1000);
        vm.prank(billing);
        vm.expectRevert(abi.encodeWithSelector(ICreditLedger.CreditLedgerUsageRefUsed.selector, _ref("dup")));
        ledger.deductBatch(_addrs(alice, alice), _uints(0, 0), _uints(1, 2), _refs(_ref("dup"), _ref("dup")));
        assertEq(ledger.balanceOf(alice), 1000);
        assertFalse(ledger.isUsageRefUsed(_ref("dup")));
    }

    function test_deductBatch_revertsOnZeroAccountCreditsOrRef() public {
        _fund(alice, 1000);
        vm.startPrank(billing);
        vm.expectRevert(ICreditLedger.CreditLedgerZeroAddress.selector);
        ledger.deductBatch(_addrs(alice, address(0)), _uints(0, 0), _uints(1, 1), _refs(_ref("a"), _ref("b")));
        vm.expectRevert(ICreditLedger.CreditLedgerZeroAmount.selector);
        ledger.deductBatch(_addrs(alice, alice), _uints(0, 0), _uints(1, 0), _refs(_ref("a"), _ref("b")));
        vm.expectRevert(ICreditLedger.CreditLedgerZeroRef.selector);
        ledger.deductBatch(_addrs(alice, alice), _uints(0, 0), _uints(1, 1), _refs(_ref("a"), bytes32(0)));
        vm.stopPrank();
        assertEq(ledger.balanceOf(alice), 1000);
        assertFalse(ledger.isUsageRefUsed(_ref("a")));
    }

    function test_deductBatch_skipsNonChargeableItemAndLeavesItsRefUnused() public {
        uint256 id = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        _fund(alice, 1000);
        vm.prank(alice);
        services.pause(id);

        vm.expectEmit(address(ledger));
        emit ICreditLedger.DeductionSkipped(alice, id, _ref("svc"));
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsDeducted(alice, 0, 30, 970, _ref("plain"));
        _batch(_addrs(alice, alice), _uints(id, 0), _uints(100, 30), _refs(_ref("svc"), _ref("plain")));

        assertFalse(ledger.isUsageRefUsed(_ref("svc")));
        assertTrue(ledger.isUsageRefUsed(_ref("plain")));
        assertEq(ledger.balanceOf(alice), 970);
        assertEq(ledger.totalDebited(), 30);

        // Once the service runs again, a later batch charges the skipped usage.
        vm.prank(alice);
        services.resume(id);
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsDeducted(alice, id, 100, 870, _ref("svc"));
        _batch(_addrs(alice), _uints(id), _uints(100), _refs(_ref("svc")));
        assertTrue(ledger.isUsageRefUsed(_ref("svc")));
        assertEq(ledger.totalDebited(), 130);
    }

    function test_deductBatch_skipsEveryKindOfNonChargeableService() public {
        _register(alice);
        _fund(alice, 1000);
        uint256 cancelled = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        vm.prank(alice);
        services.cancel(cancelled);
        uint256 paused = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        vm.prank(alice);
        services.pause(paused);
        uint256 suspended = _createService(alice, IServiceRegistry.ServiceKind.Storage);
        vm.prank(operator);
        services.suspend(suspended);
        uint256 expired = _createService(alice, IServiceRegistry.ServiceKind.Domain);
        vm.prank(operator);
        services.setExpiry(expired, uint64(block.timestamp));
        uint256 bobs = _createService(bob, IServiceRegistry.ServiceKind.StaticHosting);

        uint256[6] memory ids = [cancelled, paused, suspended, expired, bobs, 999];
        address[] memory a = new address[](6);
        uint256[] memory s = new uint256[](6);
        uint256[] memory c = new uint256[](6);
        bytes32[] memory r = new bytes32[](6);
        for (uint256 i; i < 6; ++i) {
            (a[i], s[i], c[i], r[i]) = (alice, ids[i], 10, keccak256(abi.encode("skip", i)));
            vm.expectEmit(address(ledger));
            emit ICreditLedger.DeductionSkipped(alice, ids[i], r[i]);
        }
        _batch(a, s, c, r);

        assertEq(ledger.balanceOf(alice), 1000);
        assertEq(ledger.totalDebited(), 0);
        for (uint256 i; i < 6; ++i) {
            assertFalse(ledger.isUsageRefUsed(r[i]));
        }
    }

    function test_deductBatch_chargesWhatIsLeftAndEmitsCreditDepleted() public {
        _fund(alice, 100);
        _fund(bob, 1000);
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsDeducted(alice, 0, 100, 0, _ref("a1"));
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditDepleted(alice);
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsDeducted(bob, 0, 150, 850, _ref("b1"));
        _batch(_addrs(alice, bob), _uints(0, 0), _uints(150, 150), _refs(_ref("a1"), _ref("b1")));

        assertEq(ledger.balanceOf(alice), 0);
        assertEq(ledger.balanceOf(bob), 850);
        assertEq(ledger.totalDebited(), 250);
        assertTrue(ledger.isUsageRefUsed(_ref("a1")));
        _assertSupply(_addrs(alice, bob));
    }

    function test_deductBatch_itemOnAnEmptyBalanceChargesNothing() public {
        _fund(alice, 100);
        // The second item finds nothing left: it charges 0 (its reference is spent) and reports depletion.
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsDeducted(alice, 0, 100, 0, _ref("a1"));
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditDepleted(alice);
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditsDeducted(alice, 0, 0, 0, _ref("a2"));
        vm.expectEmit(address(ledger));
        emit ICreditLedger.CreditDepleted(alice);
        _batch(_addrs(alice, alice), _uints(0, 0), _uints(100, 5), _refs(_ref("a1"), _ref("a2")));
        assertEq(ledger.totalDebited(), 100);
        assertTrue(ledger.isUsageRefUsed(_ref("a2")));
    }

    function test_deductBatch_skipsServiceItemsWithoutRegistry() public {
        CreditLedger fresh = _freshLedger();
        uint256 id = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        vm.prank(oracle);
        fresh.creditFiat(alice, 100, _ref("p"));
        vm.expectEmit(address(fresh));
        emit ICreditLedger.DeductionSkipped(alice, id, _ref("u1"));
        vm.expectEmit(address(fresh));
        emit ICreditLedger.CreditsDeducted(alice, 0, 7, 93, _ref("u2"));
        vm.prank(billing);
        fresh.deductBatch(_addrs(alice, alice), _uints(id, 0), _uints(5, 7), _refs(_ref("u1"), _ref("u2")));
        assertFalse(fresh.isUsageRefUsed(_ref("u1")));
        assertEq(fresh.balanceOf(alice), 93);
    }

    function test_deductBatch_onlyBilling() public {
        _fund(alice, 100);
        address[3] memory callers = [admin, oracle, alice];
        for (uint256 i; i < callers.length; ++i) {
            vm.prank(callers[i]);
            _expectUnauthorized(callers[i], BILLING_ROLE);
            ledger.deductBatch(_addrs(alice), _uints(0), _uints(1), _refs(_ref("u")));
        }
    }

    // ------------------------------------------------------------------------------------------------
    // setTokenRate
    // ------------------------------------------------------------------------------------------------

    function test_setTokenRate_setsTheRate() public {
        FeeOnTransferToken other = new FeeOnTransferToken(0);
        vm.expectEmit(address(ledger));
        emit ICreditLedger.TokenRateSet(address(other), 1e6);
        vm.prank(admin);
        ledger.setTokenRate(address(other), 1e6);
        assertEq(ledger.tokenRate(address(other)), 1e6);
        assertEq(ledger.creditsFor(address(other), 3e18), 3e6);
    }

    function test_setTokenRate_zeroStopsAcceptingTheToken() public {
        vm.expectEmit(address(ledger));
        emit ICreditLedger.TokenRateSet(address(token), 0);
        _setRate(address(token), 0);
        assertEq(ledger.tokenRate(address(token)), 0);
        assertEq(ledger.creditsFor(address(token), 1e6), 0);
    }

    function test_setTokenRate_revertsOnZeroToken() public {
        vm.prank(admin);
        vm.expectRevert(ICreditLedger.CreditLedgerZeroAddress.selector);
        ledger.setTokenRate(address(0), 1e18);
    }

    function test_setTokenRate_onlyAdmin() public {
        address[3] memory callers = [oracle, billing, alice];
        for (uint256 i; i < callers.length; ++i) {
            vm.prank(callers[i]);
            _expectUnauthorized(callers[i], DEFAULT_ADMIN_ROLE);
            ledger.setTokenRate(address(token), 2e18);
        }
        assertEq(ledger.tokenRate(address(token)), TEST_TOKEN_RATE);
    }

    // ------------------------------------------------------------------------------------------------
    // withdraw
    // ------------------------------------------------------------------------------------------------

    function test_withdraw_movesTokensAndLeavesCreditsAlone() public {
        _recharge(alice, 100e6);
        vm.expectEmit(address(ledger));
        emit ICreditLedger.TreasuryWithdrawn(address(token), treasury, 40e6);
        vm.prank(admin);
        ledger.withdraw(address(token), treasury, 40e6);

        assertEq(token.balanceOf(treasury), 40e6);
        assertEq(token.balanceOf(address(ledger)), 60e6);
        assertEq(ledger.balanceOf(alice), 100e6);
        assertEq(ledger.totalCredited(), 100e6);
        assertEq(ledger.totalDebited(), 0);
    }

    function test_withdraw_revertsOnZeroToken() public {
        vm.prank(admin);
        vm.expectRevert(ICreditLedger.CreditLedgerZeroAddress.selector);
        ledger.withdraw(address(0), treasury, 1);
    }

    function test_withdraw_revertsOnZeroReceiver() public {
        _recharge(alice, 1e6);
        vm.prank(admin);
        vm.expectRevert(ICreditLedger.CreditLedgerZeroAddress.selector);
        ledger.withdraw(address(token), address(0), 1);
    }

    function test_withdraw_revertsOnZeroAmount() public {
        vm.prank(admin);
        vm.expectRevert(ICreditLedger.CreditLedgerZeroAmount.selector);
        ledger.withdraw(address(token), treasury, 0);
    }

    function test_withdraw_revertsWhenTreasuryIsShort() public {
        _recharge(alice, 1e6);
        vm.prank(admin);
        vm.expectRevert(
            abi.encodeWithSelector(
                IERC20Errors.ERC20InsufficientBalance.selector, address(ledger), 1e6, 1e6 + 1
            )
        );
        ledger.withdraw(address(token), treasury, 1e6 + 1);
    }

    function test_withdraw_revertsOnReentrancy() public {
        ReentrantToken evil = new ReentrantToken();
        _setRate(address(evil), 1e18);
        evil.mint(address(ledger), 5e6);
        evil.mint(address(evil), 1e6);
        vm.prank(address(evil));
        evil.approve(address(ledger), 1e6);
        evil.arm(address(ledger), abi.encodeCall(CreditLedger.recharge, (address(evil), 1e6)));
        vm.prank(admin);
        vm.expectRevert(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector);
        ledger.withdraw(address(evil), treasury, 5e6);
    }

    function test_withdraw_onlyAdmin() public {
        _recharge(alice, 1e6);
        address[3] memory callers = [oracle, billing, alice];
        for (uint256 i; i < callers.length; ++i) {
            vm.prank(callers[i]);
            _expectUnauthorized(callers[i], DEFAULT_ADMIN_ROLE);
            ledger.withdraw(address(token), callers[i], 1e6);
        }
        assertEq(token.balanceOf(address(ledger)), 1e6);
    }

    // ------------------------------------------------------------------------------------------------
    // setServiceRegistry
    // ------------------------------------------------------------------------------------------------

    function test_setServiceRegistry_wiresServiceChecks() public {
        CreditLedger fresh = _freshLedger();
        uint256 id = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        vm.expectEmit(address(fresh));
        emit ICreditLedger.ServiceRegistryChanged(address(services));
        vm.prank(admin);
        fresh.setServiceRegistry(address(services));
        assertEq(fresh.serviceRegistry(), address(services));

        vm.prank(oracle);
        fresh.creditFiat(alice, 100, _ref("p"));
        vm.prank(billing);
        fresh.deduct(alice, id, 60, _ref("u1"));
        assertEq(fresh.balanceOf(alice), 40);
    }

    function test_setServiceRegistry_revertsOnZeroAddress() public {
        vm.prank(admin);
        vm.expectRevert(ICreditLedger.CreditLedgerZeroAddress.selector);
        ledger.setServiceRegistry(address(0));
    }

    function test_setServiceRegistry_onlyAdmin() public {
        address[3] memory callers = [oracle, billing, alice];
        for (uint256 i; i < callers.length; ++i) {
            vm.prank(callers[i]);
            _expectUnauthorized(callers[i], DEFAULT_ADMIN_ROLE);
            ledger.setServiceRegistry(address(0xBEEF));
        }
        assertEq(ledger.serviceRegistry(), address(services));
    }

    // ------------------------------------------------------------------------------------------------
    // fuzz: creditsFor arithmetic
    // ------------------------------------------------------------------------------------------------

    function testFuzz_creditsFor_isTheFlooredProduct(uint128 amount, uint128 rate) public {
        address t = address(0x7070);
        _setRate(t, rate);
        uint256 credits = ledger.creditsFor(t, amount);
        // Both factors fit 128 bits, so the exact product fits 256: compare against it directly.
        uint256 product = uint256(amount) * rate;
        assertEq(credits, product / 1e18);
        assertLe(credits * 1e18, product);
        assertGt((credits + 1) * 1e18, product);
    }

    function testFuzz_creditsFor_noIntermediateOverflow(uint256 amount, uint256 k) public {
        // A rate of k whole credits per base unit and an amount so large that amount * rate overflows 256
        // bits, while the result (amount * k) does not: mulDiv must still give it exactly.
        k = _bound(k, 1, 1e9);
        amount = _bound(amount, type(uint256).max / 1e18 + 1, type(uint256).max / k);
        address t = address(0x7070);
        _setRate(t, k * 1e18);
        assertEq(ledger.creditsFor(t, amount), amount * k);
    }

    function testFuzz_creditsFor_neverMoreThanTheAmountAtUnitRateOrBelow(uint256 amount, uint256 rate)
        public
    {
        rate = _bound(rate, 0, 1e18);
        address t = address(0x7070);
        _setRate(t, rate);
        uint256 credits = ledger.creditsFor(t, amount);
        assertLe(credits, amount);
        if (rate == 1e18) assertEq(credits, amount);
    }

    // ------------------------------------------------------------------------------------------------
    // fuzz: supply accounting
    // ------------------------------------------------------------------------------------------------

    function testFuzz_rechargeAndDeduct_keepSupply(
        uint64 rechargeA,
        uint64 rechargeB,
        uint64 fiatB,
        uint64 deductA,
        uint64 batchA,
        uint64 batchB
    ) public {
        address[] memory holders = _addrs(alice, bob, stranger);
        if (rechargeA > 0) _recharge(alice, rechargeA);
        if (rechargeB > 0) _recharge(bob, rechargeB);
        if (fiatB > 0) _fund(bob, fiatB);
        _assertSupply(holders);

        uint256 toDeduct = _bound(deductA, 0, ledger.balanceOf(alice));
        if (toDeduct > 0) _deduct(alice, 0, toDeduct, _ref("d"));
        _assertSupply(holders);

        // Batch items may exceed the balance (they charge what is left); zero-credit items are not allowed.
        uint256 a = _bound(batchA, 1, type(uint64).max);
        uint256 b = _bound(batchB, 1, type(uint64).max);
        uint256 beforeA = ledger.balanceOf(alice);
        uint256 beforeB = ledger.balanceOf(bob);
        _batch(_addrs(alice, bob), _uints(0, 0), _uints(a, b), _refs(_ref("ba"), _ref("bb")));
        _assertSupply(holders);
        assertEq(ledger.balanceOf(alice), beforeA - (a < beforeA ? a : beforeA));
        assertEq(ledger.balanceOf(bob), beforeB - (b < beforeB ? b : beforeB));
        assertEq(ledger.totalCredited(), uint256(rechargeA) + rechargeB + fiatB);
    }

    // ------------------------------------------------------------------------------------------------
    // fuzz: access control with random callers
    // ------------------------------------------------------------------------------------------------

    function testFuzz_creditFiat_rejectsCallersWithoutOracleRole(address caller) public {
        _assumeOutsider(caller, PAYMENT_ORACLE_ROLE);
        vm.prank(caller);
        _expectUnauthorized(caller, PAYMENT_ORACLE_ROLE);
        ledger.creditFiat(alice, 1, _ref("p"));
    }

    function testFuzz_deduct_rejectsCallersWithoutBillingRole(address caller) public {
        _assumeOutsider(caller, BILLING_ROLE);
        _fund(alice, 10);
        vm.prank(caller);
        _expectUnauthorized(caller, BILLING_ROLE);
        ledger.deduct(alice, 0, 1, _ref("u"));
    }

    function testFuzz_deductBatch_rejectsCallersWithoutBillingRole(address caller) public {
        _assumeOutsider(caller, BILLING_ROLE);
        _fund(alice, 10);
        vm.prank(caller);
        _expectUnauthorized(caller, BILLING_ROLE);
        ledger.deductBatch(_addrs(alice), _uints(0), _uints(1), _refs(_ref("u")));
    }

    function testFuzz_setTokenRate_rejectsCallersWithoutAdminRole(address caller) public {
        _assumeOutsider(caller, DEFAULT_ADMIN_ROLE);
        vm.prank(caller);
        _expectUnauthorized(caller, DEFAULT_ADMIN_ROLE);
        ledger.setTokenRate(address(token), 1);
    }

    function testFuzz_withdraw_rejectsCallersWithoutAdminRole(address caller) public {
        _assumeOutsider(caller, DEFAULT_ADMIN_ROLE);
        vm.prank(caller);
        _expectUnauthorized(caller, DEFAULT_ADMIN_ROLE);
        ledger.withdraw(address(token), caller, 1);
    }

    function testFuzz_setServiceRegistry_rejectsCallersWithoutAdminRole(address caller) public {
        _assumeOutsider(caller, DEFAULT_ADMIN_ROLE);
        vm.prank(caller);
        _expectUnauthorized(caller, DEFAULT_ADMIN_ROLE);
        ledger.setServiceRegistry(caller);
    }

    function testFuzz_upgradeToAndCall_rejectsCallersWithoutAdminRole(address caller) public {
        _assumeOutsider(caller, DEFAULT_ADMIN_ROLE);
        vm.prank(caller);
        _expectUnauthorized(caller, DEFAULT_ADMIN_ROLE);
        ledger.upgradeToAndCall(address(0xBEEF), "");
    }
}

/// @notice Drives the ledger with bounded recharges, card credits, deductions, batches and withdrawals from a
/// few actors, and keeps ghost totals of what went in and out.
contract CreditLedgerHandler is CommonBase, StdCheats, StdUtils {
    CreditLedger internal immutable ledger;
    TestToken internal immutable token;
    address internal immutable oracle;
    address internal immutable billing;
    address internal immutable admin;

    address[] internal actors;
    uint256 public ghostCredited;
    uint256 public ghostDebited;
    uint256 public ghostTokensIn;
    uint256 public ghostTokensOut;
    uint256 internal nonce;

    constructor(CreditLedger ledger_, TestToken token_, address oracle_, address billing_, address admin_) {
        (ledger, token, oracle, billing, admin) = (ledger_, token_, oracle_, billing_, admin_);
        actors.push(makeAddr("actor0"));
        actors.push(makeAddr("actor1"));
        actors.push(makeAddr("actor2"));
    }

    function allActors() external view returns (address[] memory) {
        return actors;
    }

    function recharge(uint256 actorSeed, uint256 amount) external {
        address actor = actors[actorSeed % actors.length];
        amount = _bound(amount, 1, 1e15);
        token.mint(actor, amount);
        vm.startPrank(actor);
        token.approve(address(ledger), amount);
        ghostCredited += ledger.recharge(address(token), amount);
        vm.stopPrank();
        ghostTokensIn += amount;
    }

    function creditFiat(uint256 actorSeed, uint256 credits) external {
        credits = _bound(credits, 1, 1e15);
        vm.prank(oracle);
        ledger.creditFiat(actors[actorSeed % actors.length], credits, keccak256(abi.encode("pay", nonce++)));
        ghostCredited += credits;
    }

    function deduct(uint256 actorSeed, uint256 credits) external {
        address actor = actors[actorSeed % actors.length];
        uint256 balance = ledger.balanceOf(actor);
        if (balance == 0) return;
        credits = _bound(credits, 1, balance);
        vm.prank(billing);
        ledger.deduct(actor, 0, credits, keccak256(abi.encode("use", nonce++)));
        ghostDebited += credits;
    }

    function deductBatch(uint256 seed, uint256 c0, uint256 c1, uint256 c2) external {
        uint256[] memory credits = new uint256[](3);
        credits[0] = _bound(c0, 1, 2e15);
        credits[1] = _bound(c1, 1, 2e15);
        credits[2] = _bound(c2, 1, 2e15);
        address[] memory who = new address[](3);
        bytes32[] memory refs = new bytes32[](3);
        uint256[] memory left = new uint256[](actors.length);
        for (uint256 i; i < actors.length; ++i) {
            left[i] = ledger.balanceOf(actors[i]);
        }
        for (uint256 i; i < 3; ++i) {
            uint256 k = (seed >> (8 * i)) % actors.length;
            who[i] = actors[k];
            refs[i] = keccak256(abi.encode("batch", nonce++));
            // Mirrors the ledger's rule: an item charges at most what is left.
            uint256 charged = credits[i] < left[k] ? credits[i] : left[k];
            left[k] -= charged;
            ghostDebited += charged;
        }
        vm.prank(billing);
        ledger.deductBatch(who, new uint256[](3), credits, refs);
    }

    function withdraw(uint256 amount) external {
        uint256 held = token.balanceOf(address(ledger));
        if (held == 0) return;
        amount = _bound(amount, 1, held);
        vm.prank(admin);
        ledger.withdraw(address(token), admin, amount);
        ghostTokensOut += amount;
    }
}

/// @notice Stateful fuzzing of the ledger's accounting invariants.
contract CreditLedgerInvariantTest is PlatformTest {
    CreditLedgerHandler internal handler;

    function setUp() public override {
        super.setUp();
        handler = new CreditLedgerHandler(ledger, token, oracle, billing, admin);
        bytes4[] memory selectors = new bytes4[](5);
        selectors[0] = CreditLedgerHandler.recharge.selector;
        selectors[1] = CreditLedgerHandler.creditFiat.selector;
        selectors[2] = CreditLedgerHandler.deduct.selector;
        selectors[3] = CreditLedgerHandler.deductBatch.selector;
        selectors[4] = CreditLedgerHandler.withdraw.selector;
        targetContract(address(handler));
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
    }

    function invariant_balancesSumToCreditedMinusDebited() public view {
        address[] memory actors = handler.allActors();
        uint256 sum;
        for (uint256 i; i < actors.length; ++i) {
            sum += ledger.balanceOf(actors[i]);
        }
        assertEq(sum, ledger.totalCredited() - ledger.totalDebited());
    }

    function invariant_totalsMatchWhatWentInAndOut() public view {
        assertEq(ledger.totalCredited(), handler.ghostCredited());
        assertEq(ledger.totalDebited(), handler.ghostDebited());
    }

    function invariant_treasuryHoldsRechargedTokensLessWithdrawals() public view {
        assertEq(token.balanceOf(address(ledger)), handler.ghostTokensIn() - handler.ghostTokensOut());
    }
}
