// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {PlatformTest} from "./utils/PlatformTest.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

contract TestTokenTest is PlatformTest {
    function test_metadata() public view {
        assertEq(token.name(), "DecentraSpace Test USD");
        assertEq(token.symbol(), "tUSD");
        // Like USDC, so 1 tUSD = 1e6 base units = 1e6 credit units at the deployed rate.
        assertEq(token.decimals(), 6);
        assertEq(token.totalSupply(), 0);
        assertEq(ledger.tokenRate(address(token)), TEST_TOKEN_RATE);
    }

    function test_eip712Domain() public view {
        (, string memory name, string memory version, uint256 chainId, address verifyingContract,,) =
            token.eip712Domain();
        assertEq(name, "DecentraSpace Test USD");
        assertEq(version, "1");
        assertEq(chainId, block.chainid);
        assertEq(verifyingContract, address(token));
    }

    function testFuzz_mint_openToAnyone(address minter, address to, uint256 amount) public {
        vm.assume(to != address(0));
        vm.expectEmit(address(token));
        emit IERC20.Transfer(address(0), to, amount);
        vm.prank(minter);
        token.mint(to, amount);
        assertEq(token.balanceOf(to), amount);
        assertEq(token.totalSupply(), amount);
    }

    function test_permit() public {
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(aliceKey, address(ledger), 5e6, deadline);

        vm.expectEmit(address(token));
        emit IERC20.Approval(alice, address(ledger), 5e6);
        // Anyone may submit the signature: the relayer pays the gas.
        vm.prank(relayer);
        token.permit(alice, address(ledger), 5e6, deadline, v, r, s);

        assertEq(token.allowance(alice, address(ledger)), 5e6);
        assertEq(token.nonces(alice), 1);
    }

    function test_permit_thenRechargeWithoutApproveTransaction() public {
        token.mint(alice, 5e6);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(aliceKey, address(ledger), 5e6, deadline);

        vm.prank(alice);
        uint256 credits = ledger.rechargeWithPermit(address(token), 5e6, deadline, v, r, s);

        assertEq(credits, 5e6);
        assertEq(ledger.balanceOf(alice), 5e6);
        assertEq(token.balanceOf(alice), 0);
        assertEq(token.balanceOf(address(ledger)), 5e6);
        assertEq(token.nonces(alice), 1);
    }

    function test_permit_revertsWhenExpired() public {
        uint256 deadline = block.timestamp - 1;
        (uint8 v, bytes32 r, bytes32 s) = _permit(aliceKey, address(ledger), 5e6, deadline);
        vm.expectRevert(abi.encodeWithSelector(ERC20Permit.ERC2612ExpiredSignature.selector, deadline));
        token.permit(alice, address(ledger), 5e6, deadline, v, r, s);
    }

    function test_permit_revertsOnWrongSigner() public {
        uint256 deadline = block.timestamp + 1 hours;
        // Bob signs alice's permit.
        (uint8 v, bytes32 r, bytes32 s) =
            vm.sign(bobKey, _permitDigest(alice, address(ledger), 5e6, token.nonces(alice), deadline));
        vm.expectRevert(abi.encodeWithSelector(ERC20Permit.ERC2612InvalidSigner.selector, bob, alice));
        token.permit(alice, address(ledger), 5e6, deadline, v, r, s);
    }

    function test_permit_revertsOnReplay() public {
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(aliceKey, address(ledger), 5e6, deadline);
        token.permit(alice, address(ledger), 5e6, deadline, v, r, s);

        // With the nonce used, the same signature recovers to some other address.
        address recovered =
            ecrecover(_permitDigest(alice, address(ledger), 5e6, token.nonces(alice), deadline), v, r, s);
        assertNotEq(recovered, alice);
        vm.expectRevert(abi.encodeWithSelector(ERC20Permit.ERC2612InvalidSigner.selector, recovered, alice));
        token.permit(alice, address(ledger), 5e6, deadline, v, r, s);
    }

    function _permitDigest(address owner, address spender, uint256 value, uint256 nonce, uint256 deadline)
        internal
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256(
                    "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
                ),
                owner,
                spender,
                value,
                nonce,
                deadline
            )
        );
        return keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash));
    }
}
