// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title TestNameWrapper
/// @notice A stand-in for ENS's NameWrapper on local chains and in tests, with the one call the platform
/// makes: `ownerOf(uint256(node))`, the owner of a wrapped name (its ERC-1155 token id is the node). The
/// production NameWrapper is not installable from the npm registry; its `ownerOf` has this signature in
/// every version. Anyone may set an owner here: never deploy it where names matter.
contract TestNameWrapper {
    mapping(uint256 id => address owner) private _owners;

    /// @notice `owner` now holds the wrapped name `id`.
    event Wrapped(uint256 indexed id, address indexed owner);

    /// @notice Records `owner` as the holder of the wrapped name `id`.
    function setOwner(uint256 id, address owner) external {
        _owners[id] = owner;
        emit Wrapped(id, owner);
    }

    /// @notice The holder of the wrapped name `id` (zero when it is not wrapped).
    function ownerOf(uint256 id) external view returns (address) {
        return _owners[id];
    }
}
