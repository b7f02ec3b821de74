// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {PlatformDeployer} from "./PlatformDeployer.sol";
import {Script} from "forge-std/Script.sol";
import {console} from "forge-std/console.sol";

/// @title Deploy
/// @notice Deploys the platform and writes `deployments/<chainId>.json` (addresses, deploy block, roles).
///
/// Environment:
/// - `DEPLOYER_PRIVATE_KEY` (required): pays for the deployment; admin while wiring.
/// - `ADMIN`, `OPERATOR`, `PAYMENT_ORACLE`, `BILLING`, `REGISTRAR`, `VERIFIER` (optional addresses, each
///   defaulting to the deployer): who gets which role. The deployer renounces admin when `ADMIN` differs.
/// - `DEPLOY_TEST_TOKEN` (optional bool; default true on anvil, chain 31337, false elsewhere).
/// - `DEPLOYMENTS_FILE` (optional): where to write the record (must be under `deployments/`).
///
/// Local: `make dev`. Polygon Amoy:
/// `forge script contracts/script/Deploy.s.sol --rpc-url $AMOY_RPC_URL --broadcast` with the variables above.
contract Deploy is Script, PlatformDeployer {
    /// @notice Runs the deployment.
    function run() external returns (Platform memory p) {
        uint256 deployerKey = vm.envUint("DEPLOYER_PRIVATE_KEY");
        address deployer = vm.addr(deployerKey);
        Roles memory roles = Roles({
            admin: vm.envOr("ADMIN", deployer),
            operator: vm.envOr("OPERATOR", deployer),
            paymentOracle: vm.envOr("PAYMENT_ORACLE", deployer),
            billing: vm.envOr("BILLING", deployer),
            registrar: vm.envOr("REGISTRAR", deployer),
            verifier: vm.envOr("VERIFIER", deployer)
        });
        bool withTestToken = vm.envOr("DEPLOY_TEST_TOKEN", block.chainid == 31_337);
        uint256 deployBlock = block.number;

        vm.startBroadcast(deployerKey);
        p = _deployPlatform(deployer, roles, withTestToken);
        vm.stopBroadcast();

        string memory file =
            vm.envOr("DEPLOYMENTS_FILE", string.concat("deployments/", vm.toString(block.chainid), ".json"));
        vm.writeJson(_record(p, roles, deployBlock), file);
        console.log("deployment written to", file);
    }

    function _record(Platform memory p, Roles memory roles, uint256 deployBlock)
        private
        returns (string memory)
    {
        string memory c = "contracts";
        vm.serializeAddress(c, "Forwarder", address(p.forwarder));
        vm.serializeAddress(c, "AccountRegistry", address(p.accounts));
        vm.serializeAddress(c, "CreditLedger", address(p.ledger));
        vm.serializeAddress(c, "ServiceRegistry", address(p.services));
        vm.serializeAddress(c, "DomainRegistry", address(p.domains));
        string memory contractsJson = vm.serializeAddress(c, "TestToken", address(p.testToken));

        string memory r = "roles";
        vm.serializeAddress(r, "admin", roles.admin);
        vm.serializeAddress(r, "operator", roles.operator);
        vm.serializeAddress(r, "paymentOracle", roles.paymentOracle);
        vm.serializeAddress(r, "billing", roles.billing);
        vm.serializeAddress(r, "registrar", roles.registrar);
        string memory rolesJson = vm.serializeAddress(r, "verifier", roles.verifier);

        string memory root = "deployment";
        vm.serializeUint(root, "chainId", block.chainid);
        vm.serializeUint(root, "deployBlock", deployBlock);
        vm.serializeString(root, "contracts", contractsJson);
        return vm.serializeString(root, "roles", rolesJson);
    }
}
