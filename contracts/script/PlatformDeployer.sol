// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccountRegistry} from "../src/AccountRegistry.sol";
import {CreditLedger} from "../src/CreditLedger.sol";
import {DomainRegistry} from "../src/DomainRegistry.sol";
import {Forwarder} from "../src/Forwarder.sol";
import {ServiceRegistry} from "../src/ServiceRegistry.sol";
import {IAccountRegistry} from "../src/interfaces/IAccountRegistry.sol";
import {IServiceRegistry} from "../src/interfaces/IServiceRegistry.sol";
import {TestToken} from "../src/testing/TestToken.sol";
import {ERC1967Proxy} from "@openzeppelin/contracts/proxy/ERC1967/ERC1967Proxy.sol";

/// @title PlatformDeployer
/// @notice Deploys and wires the whole platform: the forwarder, the four registries behind UUPS proxies,
/// their roles, and the default prices and limits. The deploy script and the tests share it, so tests run
/// against the platform exactly as it is deployed. The caller must be `deployer` (broadcast or prank):
/// it holds the admin role while wiring and hands it to `admin` at the end.
abstract contract PlatformDeployer {
    /// @notice Who gets which role.
    struct Roles {
        address admin;
        address operator;
        address paymentOracle;
        address billing;
        address registrar;
        address verifier;
    }

    /// @notice The deployed platform.
    struct Platform {
        Forwarder forwarder;
        AccountRegistry accounts;
        CreditLedger ledger;
        ServiceRegistry services;
        DomainRegistry domains;
        TestToken testToken;
    }

    /// @notice One month of the Paid tier at deployment: 5 USD.
    uint256 internal constant PAID_TIER_PRICE = 5_000_000;
    /// @notice The test token's rate: 1 tUSD (1e6 base units) buys 1 USD of credit (1e6 units).
    uint256 internal constant TEST_TOKEN_RATE = 1e18;

    /// @dev Deploys everything with `deployer` as the temporary admin, then hands admin to `roles.admin`.
    function _deployPlatform(address deployer, Roles memory roles, bool withTestToken)
        internal
        returns (Platform memory p)
    {
        p.forwarder = new Forwarder();
        address fwd = address(p.forwarder);

        p.accounts = AccountRegistry(
            _proxy(address(new AccountRegistry(fwd)), abi.encodeCall(AccountRegistry.initialize, (deployer)))
        );
        p.ledger = CreditLedger(
            _proxy(address(new CreditLedger(fwd)), abi.encodeCall(CreditLedger.initialize, (deployer)))
        );
        p.services = ServiceRegistry(
            _proxy(
                address(new ServiceRegistry(fwd)),
                abi.encodeCall(ServiceRegistry.initialize, (deployer, address(p.accounts), address(p.ledger)))
            )
        );
        p.domains = DomainRegistry(
            _proxy(
                address(new DomainRegistry(fwd)),
                abi.encodeCall(DomainRegistry.initialize, (deployer, address(p.services)))
            )
        );

        // Cross-contract wiring: upgrades are paid through the ledger; deductions are checked against services.
        p.accounts.setCreditLedger(address(p.ledger));
        p.accounts.setPaidTierPrice(PAID_TIER_PRICE);
        p.ledger.setServiceRegistry(address(p.services));
        p.ledger.grantRole(p.ledger.BILLING_ROLE(), address(p.accounts));

        p.accounts.grantRole(p.accounts.OPERATOR_ROLE(), roles.operator);
        p.services.grantRole(p.services.OPERATOR_ROLE(), roles.operator);
        p.ledger.grantRole(p.ledger.PAYMENT_ORACLE_ROLE(), roles.paymentOracle);
        p.ledger.grantRole(p.ledger.BILLING_ROLE(), roles.billing);
        p.domains.grantRole(p.domains.REGISTRAR_ROLE(), roles.registrar);
        p.domains.grantRole(p.domains.VERIFIER_ROLE(), roles.verifier);

        _setDefaultPolicy(p.services);

        if (withTestToken) {
            p.testToken = new TestToken();
            p.ledger.setTokenRate(address(p.testToken), TEST_TOKEN_RATE);
        }

        if (roles.admin != deployer) {
            _handOverAdmin(address(p.accounts), deployer, roles.admin);
            _handOverAdmin(address(p.ledger), deployer, roles.admin);
            _handOverAdmin(address(p.services), deployer, roles.admin);
            _handOverAdmin(address(p.domains), deployer, roles.admin);
        }
    }

    /// @dev Prices (credit units per hour) and limits (open services per account) at launch. Free services
    /// cost nothing; dynamic hosting and databases are for Paid accounts only.
    function _setDefaultPolicy(ServiceRegistry services) private {
        IAccountRegistry.Tier free = IAccountRegistry.Tier.Free;
        IAccountRegistry.Tier paid = IAccountRegistry.Tier.Paid;
        _policy(services, IServiceRegistry.ServiceKind.StaticHosting, free, 0, 1);
        _policy(services, IServiceRegistry.ServiceKind.StaticHosting, paid, 1000, 20);
        _policy(services, IServiceRegistry.ServiceKind.DynamicHosting, free, 0, 0);
        _policy(services, IServiceRegistry.ServiceKind.DynamicHosting, paid, 10_000, 5);
        _policy(services, IServiceRegistry.ServiceKind.Storage, free, 0, 1);
        _policy(services, IServiceRegistry.ServiceKind.Storage, paid, 500, 1);
        _policy(services, IServiceRegistry.ServiceKind.Domain, free, 0, 1);
        _policy(services, IServiceRegistry.ServiceKind.Domain, paid, 0, 10);
        _policy(services, IServiceRegistry.ServiceKind.Database, free, 0, 0);
        _policy(services, IServiceRegistry.ServiceKind.Database, paid, 5000, 3);
    }

    function _policy(
        ServiceRegistry services,
        IServiceRegistry.ServiceKind kind,
        IAccountRegistry.Tier tier,
        uint256 pricePerHour,
        uint32 limit
    ) private {
        services.setPrice(kind, tier, pricePerHour);
        services.setTierLimit(kind, tier, limit);
    }

    function _handOverAdmin(address target, address from, address to) private {
        AccountRegistry c = AccountRegistry(target); // any PlatformUpgradeable: they share the AccessControl ABI
        c.grantRole(c.DEFAULT_ADMIN_ROLE(), to);
        c.renounceRole(c.DEFAULT_ADMIN_ROLE(), from);
    }

    function _proxy(address implementation, bytes memory init) private returns (address) {
        return address(new ERC1967Proxy(implementation, init));
    }
}
