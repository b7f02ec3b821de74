// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccountRegistry} from "../../src/AccountRegistry.sol";

/// @notice Exposes the ERC-2771 context every registry inherits from PlatformUpgradeable.
contract PlatformContextHarness is AccountRegistry {
    constructor(address trustedForwarder_) AccountRegistry(trustedForwarder_) {}

    function exposedMsgSender() external view returns (address) {
        return _msgSender();
    }

    function exposedMsgData() external view returns (bytes memory) {
        return _msgData();
    }
}
