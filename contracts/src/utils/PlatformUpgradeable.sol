// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {
    AccessControlUpgradeable
} from "@openzeppelin/contracts-upgradeable/access/AccessControlUpgradeable.sol";
import {
    ERC2771ContextUpgradeable
} from "@openzeppelin/contracts-upgradeable/metatx/ERC2771ContextUpgradeable.sol";
import {Initializable} from "@openzeppelin/contracts-upgradeable/proxy/utils/Initializable.sol";
import {UUPSUpgradeable} from "@openzeppelin/contracts-upgradeable/proxy/utils/UUPSUpgradeable.sol";
import {ContextUpgradeable} from "@openzeppelin/contracts-upgradeable/utils/ContextUpgradeable.sol";

/// @title PlatformUpgradeable
/// @notice What every DecentraSpace registry shares: role-based access, UUPS upgrades that only the admin
/// may perform, and ERC-2771 meta-transactions through the platform's trusted forwarder, so that the
/// platform can pay gas for its users. The forwarder is fixed per implementation (an immutable), so moving
/// to another forwarder is an upgrade.
abstract contract PlatformUpgradeable is
    Initializable,
    AccessControlUpgradeable,
    UUPSUpgradeable,
    ERC2771ContextUpgradeable
{
    /// @notice The platform's hot key: acts for users after the API checked them, and runs jobs.
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");

    /// @custom:oz-upgrades-unsafe-allow constructor
    constructor(address trustedForwarder_) ERC2771ContextUpgradeable(trustedForwarder_) {
        _disableInitializers();
    }

    // solhint-disable-next-line func-name-mixedcase
    function __Platform_init(address admin) internal onlyInitializing {
        __AccessControl_init();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @dev Only the admin upgrades.
    function _authorizeUpgrade(address) internal view override onlyRole(DEFAULT_ADMIN_ROLE) {}

    /// @dev The signer of a forwarded request, else the caller.
    function _msgSender()
        internal
        view
        override(ContextUpgradeable, ERC2771ContextUpgradeable)
        returns (address)
    {
        return ERC2771ContextUpgradeable._msgSender();
    }

    /// @dev The call data of a forwarded request, else the call data.
    function _msgData()
        internal
        view
        override(ContextUpgradeable, ERC2771ContextUpgradeable)
        returns (bytes calldata)
    {
        return ERC2771ContextUpgradeable._msgData();
    }

    /// @dev A forwarded request carries its signer in the last 20 bytes.
    function _contextSuffixLength()
        internal
        view
        override(ContextUpgradeable, ERC2771ContextUpgradeable)
        returns (uint256)
    {
        return ERC2771ContextUpgradeable._contextSuffixLength();
    }
}
