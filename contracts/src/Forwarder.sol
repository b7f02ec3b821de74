// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC2771Forwarder} from "@openzeppelin/contracts/metatx/ERC2771Forwarder.sol";

/// @title Forwarder
/// @notice The platform's trusted ERC-2771 forwarder: the relayer submits requests that users signed as
/// EIP-712 `ForwardRequest`s, paying the gas, and the platform contracts see the signer as the caller.
contract Forwarder is ERC2771Forwarder {
    /// @notice The EIP-712 domain name that users sign requests under.
    string public constant NAME = "DecentraSpace Forwarder";

    constructor() ERC2771Forwarder(NAME) {}
}
