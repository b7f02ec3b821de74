// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title TestToken
/// @notice A stablecoin stand-in for local chains and tests: 6 decimals like USDC, EIP-2612 permits, and
/// minting open to anyone. Deployed only where the deploy script is told to (never on Polygon PoS).
contract TestToken is ERC20, ERC20Permit {
    constructor() ERC20("DecentraSpace Test USD", "tUSD") ERC20Permit("DecentraSpace Test USD") {}

    /// @notice Mints `amount` base units to `to`; open to anyone, as a faucet.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @inheritdoc ERC20
    function decimals() public pure override returns (uint8) {
        return 6;
    }
}
