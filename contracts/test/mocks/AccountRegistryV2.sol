// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccountRegistry} from "../../src/AccountRegistry.sol";

/// @notice A second version of AccountRegistry for upgrade tests: the real contract plus a version getter and a
/// reinitializer, with the storage layout unchanged.
contract AccountRegistryV2 is AccountRegistry {
    /// @notice Emitted by the V2 reinitializer, to show it ran once through `upgradeToAndCall`.
    event MigratedToV2();

    /// @custom:oz-upgrades-unsafe-allow constructor
    constructor(address trustedForwarder_) AccountRegistry(trustedForwarder_) {}

    /// @notice The migration step of V2; runs at most once per proxy.
    function initializeV2() external reinitializer(2) {
        emit MigratedToV2();
    }

    /// @notice The implementation's version.
    function version() external pure returns (uint256) {
        return 2;
    }
}
