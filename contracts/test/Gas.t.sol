// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IServiceRegistry} from "../src/interfaces/IServiceRegistry.sol";
import {PlatformTest} from "./utils/PlatformTest.sol";
import {console} from "forge-std/console.sol";

/// @notice Gas benchmarks of the platform's hot paths, one figure per line (`gas <operation> <gas>`), for
/// BENCHMARKS.md. A figure is the gas the call's own execution uses (`vm.lastCallGas`, the callee's frame):
/// what a transaction pays beyond the 21,000 base cost and its calldata, before refunds. Everything the call
/// reads is prepared in setUp, and the test touches no platform contract before the measured call, so it
/// runs as in a fresh transaction: every contract and storage slot cold on first access (EIP-2929), storage
/// writes priced against values set in earlier transactions. The batch lines also give the whole
/// transaction per item (`tx_per_item`: base cost, Cancun calldata pricing and execution, divided by n).
contract GasTest is PlatformTest {
    uint256 internal constant BATCH_ACCOUNTS = 10;
    uint256 internal constant RECHARGE = 25e6;

    /// @dev Alice is Paid, funded and holds an Active and a Paused hosting service and a purchased domain.
    uint256 internal activeService;
    uint256 internal pausedService;
    bytes32 internal aliceDomain;
    /// @dev Ten Paid, funded accounts holding one Active hosting service each, for the batches.
    address[BATCH_ACCOUNTS] internal payers;
    uint256[BATCH_ACCOUNTS] internal payerServices;
    /// @dev Alice's permit of RECHARGE tokens to the ledger, signed ahead so the test reads no token state.
    uint256 internal permitDeadline;
    uint8 internal permitV;
    bytes32 internal permitR;
    bytes32 internal permitS;

    function setUp() public override {
        super.setUp();
        _makeBillable(alice);
        activeService = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        pausedService = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        vm.prank(alice);
        services.pause(pausedService);

        // A recharge spends an allowance given earlier; a permit recharge spends tokens alice holds.
        token.mint(alice, 2 * RECHARGE);
        vm.prank(alice);
        token.approve(address(ledger), RECHARGE);
        permitDeadline = block.timestamp + 1 hours;
        (permitV, permitR, permitS) = _permit(aliceKey, address(ledger), RECHARGE, permitDeadline);
        // Bob is registered and Free: the benchmark creates his first site.
        _register(bob);

        vm.prank(registrar);
        aliceDomain = domains.recordPurchase("alice.example", alice, uint64(block.timestamp + 365 days));

        for (uint256 i; i < BATCH_ACCOUNTS; ++i) {
            payers[i] = makeAddr(string.concat("payer", vm.toString(i)));
            _makeBillable(payers[i]);
            payerServices[i] = _createService(payers[i], IServiceRegistry.ServiceKind.StaticHosting);
        }
    }

    function test_gas_recharge() public {
        uint256 used =
            _measure(alice, address(ledger), abi.encodeCall(ledger.recharge, (address(token), RECHARGE)));
        _report("recharge", used);
        assertEq(ledger.balanceOf(alice), 1000e6 + RECHARGE);
    }

    function test_gas_rechargeWithPermit() public {
        bytes memory data = abi.encodeCall(
            ledger.rechargeWithPermit, (address(token), RECHARGE, permitDeadline, permitV, permitR, permitS)
        );
        uint256 used = _measure(alice, address(ledger), data);
        _report("rechargeWithPermit", used);
        assertEq(ledger.balanceOf(alice), 1000e6 + RECHARGE);
    }

    function test_gas_creditFiat() public {
        uint256 used = _measure(
            oracle, address(ledger), abi.encodeCall(ledger.creditFiat, (alice, 10e6, keccak256("payment-1")))
        );
        _report("creditFiat", used);
        assertEq(ledger.balanceOf(alice), 1000e6 + 10e6);
    }

    function test_gas_deduct() public {
        uint256 used = _measure(
            billing,
            address(ledger),
            abi.encodeCall(ledger.deduct, (alice, activeService, 1000, keccak256("usage-1")))
        );
        _report("deduct", used);
        assertEq(ledger.balanceOf(alice), 1000e6 - 1000);
    }

    function test_gas_deductBatch_100() public {
        _benchBatch(100);
    }

    function test_gas_deductBatch_1000() public {
        _benchBatch(1000);
    }

    function test_gas_createService() public {
        // A Free account's first site: the common case, and the one that also reads the free-tier duration.
        uint256 used = _measure(
            bob,
            address(services),
            abi.encodeCall(
                services.createService, (IServiceRegistry.ServiceKind.StaticHosting, keccak256("site"))
            )
        );
        _report("createService", used);
        assertEq(services.openServices(bob, IServiceRegistry.ServiceKind.StaticHosting), 1);
    }

    function test_gas_pause() public {
        uint256 used = _measure(alice, address(services), abi.encodeCall(services.pause, (activeService)));
        _report("pause", used);
        assertEq(uint8(services.serviceOf(activeService).state), uint8(IServiceRegistry.ServiceState.Paused));
    }

    function test_gas_resume() public {
        uint256 used = _measure(alice, address(services), abi.encodeCall(services.resume, (pausedService)));
        _report("resume", used);
        assertEq(uint8(services.serviceOf(pausedService).state), uint8(IServiceRegistry.ServiceState.Active));
    }

    function test_gas_recordPurchase() public {
        uint256 used = _measure(
            registrar,
            address(domains),
            abi.encodeCall(
                domains.recordPurchase, ("bob-site.example", bob, uint64(block.timestamp + 365 days))
            )
        );
        _report("recordPurchase", used);
        assertEq(domains.ownerOf(domains.nodeOf("bob-site.example")), bob);
    }

    function test_gas_link() public {
        uint256 used =
            _measure(alice, address(domains), abi.encodeCall(domains.link, (aliceDomain, activeService)));
        _report("link", used);
        assertEq(domains.domainOf(aliceDomain).serviceId, activeService);
    }

    /// @dev One batch of `n` usages spread over the ten payers' services, each charged 1,000 units.
    function _benchBatch(uint256 n) internal {
        address[] memory accts = new address[](n);
        uint256[] memory ids = new uint256[](n);
        uint256[] memory credits = new uint256[](n);
        bytes32[] memory refs = new bytes32[](n);
        for (uint256 i; i < n; ++i) {
            accts[i] = payers[i % BATCH_ACCOUNTS];
            ids[i] = payerServices[i % BATCH_ACCOUNTS];
            credits[i] = 1000;
            refs[i] = keccak256(abi.encode("usage", n, i));
        }
        bytes memory data = abi.encodeCall(ledger.deductBatch, (accts, ids, credits, refs));
        uint256 debitedBefore = ledger.totalDebited();
        uint256 used = _measure(billing, address(ledger), data);

        string memory label = string.concat("(n=", vm.toString(n), ")");
        _report(string.concat("deductBatch total", label), used);
        _report(string.concat("deductBatch per_item", label), used / n);
        _report(string.concat("deductBatch tx_per_item", label), (21_000 + _calldataGas(data) + used) / n);
        // Every item was charged: the service check passed for all of them.
        assertEq(ledger.totalDebited() - debitedBefore, 1000 * n);
    }

    /// @dev Makes `user` registered, Paid without an end, and funded, so its services are chargeable.
    function _makeBillable(address user) internal {
        _register(user);
        _makePaid(user);
        _fund(user, 1000e6);
    }

    /// @dev The execution gas of one call of `target` with `data` from `caller`; reverts as the call did.
    function _measure(address caller, address target, bytes memory data) internal returns (uint256 used) {
        vm.prank(caller);
        (bool ok, bytes memory result) = target.call(data);
        if (!ok) {
            assembly {
                revert(add(result, 32), mload(result))
            }
        }
        used = vm.lastCallGas().gasTotalUsed;
        assertGt(used, 0);
    }

    /// @dev Calldata cost before Prague: 4 gas per zero byte, 16 per other byte.
    function _calldataGas(bytes memory data) internal pure returns (uint256 gas) {
        for (uint256 i; i < data.length; ++i) {
            gas += data[i] == 0 ? 4 : 16;
        }
    }

    function _report(string memory what, uint256 used) internal pure {
        console.log(string.concat("gas ", what, " ", vm.toString(used)));
    }
}
