// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice An 18-decimal token that burns a fee of `feeBps` (basis points) on every transfer, so the
/// receiver gets less than the amount sent. Minting is open to anyone. Has no EIP-2612 permit.
contract FeeOnTransferToken is ERC20 {
    /// @notice The fee taken on each transfer, in basis points of the amount (10_000 takes everything).
    uint256 public immutable feeBps;

    constructor(uint256 feeBps_) ERC20("Fee On Transfer", "FOT") {
        require(feeBps_ <= 10_000, "fee above 100%");
        feeBps = feeBps_;
    }

    /// @notice Mints `amount` to `to`, fee-free.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @dev Transfers (not mints or burns) burn the fee from the sender before moving the rest.
    function _update(address from, address to, uint256 value) internal override {
        if (from == address(0) || to == address(0)) {
            super._update(from, to, value);
            return;
        }
        uint256 fee = value * feeBps / 10_000;
        super._update(from, address(0), fee);
        super._update(from, to, value - fee);
    }
}
