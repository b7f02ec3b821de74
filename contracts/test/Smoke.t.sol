// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IServiceRegistry} from "../src/interfaces/IServiceRegistry.sol";
import {PlatformTest} from "./utils/PlatformTest.sol";

contract SmokeTest is PlatformTest {
    function test_deployedAndWired() public {
        uint256 id = _createService(alice, IServiceRegistry.ServiceKind.StaticHosting);
        assertEq(services.ownerOf(id), alice);
        _fund(alice, 100);
        assertEq(ledger.balanceOf(alice), 100);
        vm.prank(relayer);
        forwarder.execute(_forwardRequest(aliceKey, address(services), abi.encodeCall(services.pause, (id))));
        assertEq(uint8(services.serviceOf(id).state), uint8(IServiceRegistry.ServiceState.Paused));
    }
}
