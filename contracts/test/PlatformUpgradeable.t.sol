// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccountRegistry} from "../src/AccountRegistry.sol";
import {PlatformContextHarness} from "./mocks/PlatformContextHarness.sol";
import {PlatformTest} from "./utils/PlatformTest.sol";
import {ERC1967Proxy} from "@openzeppelin/contracts/proxy/ERC1967/ERC1967Proxy.sol";

/// @notice The ERC-2771 context shared by every registry: a forwarded call sees the signer and its own
/// call data; any other call sees the caller and the call data as sent.
contract PlatformUpgradeableTest is PlatformTest {
    PlatformContextHarness internal harness;

    function setUp() public override {
        super.setUp();
        harness = PlatformContextHarness(
            address(
                new ERC1967Proxy(
                    address(new PlatformContextHarness(address(forwarder))),
                    abi.encodeCall(AccountRegistry.initialize, (admin))
                )
            )
        );
    }

    function test_directCallSeesCallerAndCallData() public {
        vm.prank(alice);
        assertEq(harness.exposedMsgSender(), alice);
        assertEq(harness.exposedMsgData(), abi.encodeCall(PlatformContextHarness.exposedMsgData, ()));
    }

    function test_forwarderCallStripsTheSignerSuffix() public {
        bytes memory data = abi.encodeCall(PlatformContextHarness.exposedMsgData, ());
        // The forwarder appends the signer's 20 bytes; the contract must see the call data without them.
        vm.prank(address(forwarder));
        (bool ok, bytes memory ret) = address(harness).call(abi.encodePacked(data, alice));
        assertTrue(ok);
        assertEq(abi.decode(ret, (bytes)), data);

        vm.prank(address(forwarder));
        (ok, ret) = address(harness)
            .call(abi.encodePacked(abi.encodeCall(PlatformContextHarness.exposedMsgSender, ()), alice));
        assertTrue(ok);
        assertEq(abi.decode(ret, (address)), alice);
    }

    function test_trustedForwarderIsThePlatformForwarder() public view {
        assertTrue(harness.isTrustedForwarder(address(forwarder)));
        assertEq(harness.trustedForwarder(), address(forwarder));
        assertFalse(harness.isTrustedForwarder(relayer));
    }
}
