// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {PlatformDeployer} from "../../script/PlatformDeployer.sol";
import {AccountRegistry} from "../../src/AccountRegistry.sol";
import {CreditLedger} from "../../src/CreditLedger.sol";
import {DomainRegistry} from "../../src/DomainRegistry.sol";
import {Forwarder} from "../../src/Forwarder.sol";
import {ServiceRegistry} from "../../src/ServiceRegistry.sol";
import {IAccountRegistry} from "../../src/interfaces/IAccountRegistry.sol";
import {IServiceRegistry} from "../../src/interfaces/IServiceRegistry.sol";
import {TestToken} from "../../src/testing/TestToken.sol";
import {ERC2771Forwarder} from "@openzeppelin/contracts/metatx/ERC2771Forwarder.sol";
import {Test} from "forge-std/Test.sol";

/// @notice The base of every contract test: the platform deployed exactly as the deploy script deploys it,
/// with one address per role, and helpers that act as users and as the platform.
abstract contract PlatformTest is Test, PlatformDeployer {
    address internal admin = makeAddr("admin");
    address internal operator = makeAddr("operator");
    address internal oracle = makeAddr("paymentOracle");
    address internal billing = makeAddr("billing");
    address internal registrar = makeAddr("registrar");
    address internal verifier = makeAddr("verifier");
    address internal relayer = makeAddr("relayer");
    address internal stranger = makeAddr("stranger");

    uint256 internal aliceKey;
    address internal alice;
    uint256 internal bobKey;
    address internal bob;

    Forwarder internal forwarder;
    AccountRegistry internal accounts;
    CreditLedger internal ledger;
    ServiceRegistry internal services;
    DomainRegistry internal domains;
    TestToken internal token;

    bytes32 private constant FORWARD_REQUEST_TYPEHASH = keccak256(
        "ForwardRequest(address from,address to,uint256 value,uint256 gas,uint256 nonce,uint48 deadline,bytes data)"
    );

    function setUp() public virtual {
        vm.warp(1_750_000_000);
        (alice, aliceKey) = makeAddrAndKey("alice");
        (bob, bobKey) = makeAddrAndKey("bob");
        Roles memory roles = Roles({
            admin: admin,
            operator: operator,
            paymentOracle: oracle,
            billing: billing,
            registrar: registrar,
            verifier: verifier
        });
        vm.startPrank(admin);
        Platform memory p = _deployPlatform(admin, roles, true);
        vm.stopPrank();
        forwarder = p.forwarder;
        accounts = p.accounts;
        ledger = p.ledger;
        services = p.services;
        domains = p.domains;
        token = p.testToken;
    }

    /// @dev Registers `user` as the user would.
    function _register(address user) internal {
        vm.prank(user);
        accounts.register();
    }

    /// @dev Gives `user` `credits` through a card payment credited by the oracle.
    function _fund(address user, uint256 credits) internal {
        vm.prank(oracle);
        ledger.creditFiat(
            user, credits, keccak256(abi.encode("fund", user, credits, vm.getBlockTimestamp(), gasleft()))
        );
    }

    /// @dev Makes `user` Paid without an end, as an admin's decision applied by the operator.
    function _makePaid(address user) internal {
        vm.prank(operator);
        accounts.setTier(user, IAccountRegistry.Tier.Paid, 0);
    }

    /// @dev Registers `user` and creates a service of `kind` as the user would.
    function _createService(address user, IServiceRegistry.ServiceKind kind) internal returns (uint256 id) {
        if (!accounts.isActive(user)) _register(user);
        bytes32 ref = keccak256(abi.encode(user, kind, services.serviceCount()));
        vm.prank(user);
        id = services.createService(kind, ref);
    }

    /// @dev A forward request from the holder of `signerKey` calling `to` with `data`, signed for the
    /// forwarder (EIP-712), ready for the relayer to execute.
    function _forwardRequest(uint256 signerKey, address to, bytes memory data)
        internal
        view
        returns (ERC2771Forwarder.ForwardRequestData memory req)
    {
        address from = vm.addr(signerKey);
        req = ERC2771Forwarder.ForwardRequestData({
            from: from,
            to: to,
            value: 0,
            gas: 1_000_000,
            deadline: uint48(block.timestamp + 1 hours),
            data: data,
            signature: ""
        });
        bytes32 structHash = keccak256(
            abi.encode(
                FORWARD_REQUEST_TYPEHASH,
                req.from,
                req.to,
                req.value,
                req.gas,
                forwarder.nonces(from),
                req.deadline,
                keccak256(req.data)
            )
        );
        (, string memory name, string memory version, uint256 chainId, address verifyingContract,,) =
            forwarder.eip712Domain();
        bytes32 domainSeparator = keccak256(
            abi.encode(
                keccak256(
                    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
                ),
                keccak256(bytes(name)),
                keccak256(bytes(version)),
                chainId,
                verifyingContract
            )
        );
        (uint8 v, bytes32 r, bytes32 s) =
            vm.sign(signerKey, keccak256(abi.encodePacked("\x19\x01", domainSeparator, structHash)));
        req.signature = abi.encodePacked(r, s, v);
    }

    /// @dev An EIP-2612 permit signature of the test token from the holder of `ownerKey` to `spender`.
    function _permit(uint256 ownerKey, address spender, uint256 value, uint256 deadline)
        internal
        view
        returns (uint8 v, bytes32 r, bytes32 s)
    {
        address owner = vm.addr(ownerKey);
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256(
                    "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
                ),
                owner,
                spender,
                value,
                token.nonces(owner),
                deadline
            )
        );
        return
            vm.sign(ownerKey, keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash)));
    }
}
