//! The Rust side drives the real contracts on anvil: deployed by the deploy script, called through
//! the `abi` bindings, every emitted event read back and decoded.

use alloy::{
    primitives::{Address, B256, U256, keccak256},
    providers::Provider,
    rpc::types::{Filter, TransactionReceipt},
    signers::{Signer, local::PrivateKeySigner},
    sol,
    sol_types::{SolStruct, eip712_domain},
};
use decentraspace_abi::{
    AccountRegistry, CreditLedger, DecodedLog, ERC2771Forwarder, Forwarder, ServiceKind,
    ServiceRegistry, ServiceState, TestToken, Tier,
    eip712::{ForwardRequest, forwarder_domain},
};
use decentraspace_tests::{Role, TestChain};

sol! {
    /// EIP-2612's permit, as the test token's domain signs it.
    struct Permit {
        address owner;
        address spender;
        uint256 value;
        uint256 nonce;
        uint256 deadline;
    }
}

/// One tUSD: the test token has 6 decimals and buys credits 1:1.
const TUSD: u64 = 1_000_000;

fn events(receipt: &TransactionReceipt, chain: &TestChain) -> Vec<&'static str> {
    receipt
        .inner
        .logs()
        .iter()
        .filter_map(|log| DecodedLog::decode(&chain.deployment.contracts, &log.inner).ok())
        .map(|decoded| decoded.name)
        .collect()
}

#[tokio::test]
async fn wallets_and_roles_drive_the_deployed_contracts() -> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let c = chain.deployment.contracts;
    assert_eq!(chain.deployment.chain_id, chain.chain_id());
    assert_eq!(chain.deployment.roles.operator, chain.role(Role::Operator).address());
    assert_eq!(chain.deployment.roles.admin, chain.role(Role::Admin).address());
    // The deployer handed admin over and kept nothing.
    let reader = chain.reader();
    let ledger_roles = CreditLedger::new(c.credit_ledger, &reader);
    let admin_role = ledger_roles.DEFAULT_ADMIN_ROLE().call().await?;
    assert!(ledger_roles.hasRole(admin_role, chain.role(Role::Admin).address()).call().await?);
    assert!(!ledger_roles.hasRole(admin_role, chain.role(Role::Deployer).address()).call().await?);
    let billing_role = ledger_roles.BILLING_ROLE().call().await?;
    assert!(ledger_roles.hasRole(billing_role, chain.role(Role::Billing).address()).call().await?);
    let token_address = c.test_token().expect("anvil deployments have a test token");

    let user = chain.user(0);
    let as_user = chain.provider_as(user.clone());
    let accounts = AccountRegistry::new(c.account_registry, &as_user);
    let ledger = CreditLedger::new(c.credit_ledger, &as_user);
    let services = ServiceRegistry::new(c.service_registry, &as_user);
    let token = TestToken::new(token_address, &as_user);

    // Register, then buy credits with approve + recharge.
    let receipt = accounts.register().send().await?.get_receipt().await?;
    assert_eq!(events(&receipt, &chain), ["AccountRegistered"]);
    token.mint(user.address(), U256::from(100 * TUSD)).send().await?.get_receipt().await?;
    token.approve(c.credit_ledger, U256::from(30 * TUSD)).send().await?.get_receipt().await?;
    let receipt =
        ledger.recharge(token_address, U256::from(30 * TUSD)).send().await?.get_receipt().await?;
    assert_eq!(events(&receipt, &chain), ["CreditsRecharged"]);
    let recharged = receipt.decoded_log::<CreditLedger::CreditsRecharged>().expect("event");
    assert_eq!(recharged.account, user.address());
    assert_eq!(recharged.credits, U256::from(30 * TUSD));
    assert_eq!(ledger.balanceOf(user.address()).call().await?, U256::from(30 * TUSD));

    // Buy credits with an EIP-2612 permit instead of an approval: one transaction.
    let amount = U256::from(20 * TUSD);
    let deadline = U256::from(u64::MAX);
    let permit = Permit {
        owner: user.address(),
        spender: c.credit_ledger,
        value: amount,
        nonce: token.nonces(user.address()).call().await?,
        deadline,
    };
    let domain = eip712_domain! {
        name: "DecentraSpace Test USD",
        version: "1",
        chain_id: chain.chain_id(),
        verifying_contract: token_address,
    };
    let signature = user.sign_hash(&permit.eip712_signing_hash(&domain)).await?;
    let receipt = ledger
        .rechargeWithPermit(
            token_address,
            amount,
            deadline,
            27 + u8::from(signature.v()),
            B256::from(signature.r()),
            B256::from(signature.s()),
        )
        .send()
        .await?
        .get_receipt()
        .await?;
    assert_eq!(events(&receipt, &chain), ["CreditsRecharged"]);
    assert_eq!(ledger.balanceOf(user.address()).call().await?, U256::from(50 * TUSD));

    // The operator makes the user Paid (priced services), the user opens a static site.
    let as_operator = chain.provider_as(chain.role(Role::Operator));
    AccountRegistry::new(c.account_registry, &as_operator)
        .setTier(user.address(), Tier::Paid.into(), 0)
        .send()
        .await?
        .get_receipt()
        .await?;
    assert_eq!(accounts.effectiveTier(user.address()).call().await?, u8::from(Tier::Paid));
    let receipt = services
        .createService(ServiceKind::StaticHosting.into(), keccak256("my-site"))
        .send()
        .await?
        .get_receipt()
        .await?;
    let created = receipt.decoded_log::<ServiceRegistry::ServiceCreated>().expect("event");
    let service_id = created.serviceId;
    assert_eq!(created.owner, user.address());
    assert_eq!(created.expiresAt, 0, "a Paid account's service does not expire");

    // The billing role charges an hour of the site.
    let hourly = services.priceOf(service_id).call().await?;
    assert!(hourly > U256::ZERO, "paid static hosting has a price");
    let as_billing = chain.provider_as(chain.role(Role::Billing));
    let usage_ref = keccak256("usage-1");
    let receipt = CreditLedger::new(c.credit_ledger, &as_billing)
        .deduct(user.address(), service_id, hourly, usage_ref)
        .send()
        .await?
        .get_receipt()
        .await?;
    let deducted = receipt.decoded_log::<CreditLedger::CreditsDeducted>().expect("event");
    assert_eq!(deducted.balanceAfter, U256::from(50 * TUSD) - hourly);
    assert_eq!(deducted.usageRef, usage_ref);

    // A replayed usage reference is refused with the ledger's own error.
    let replay = CreditLedger::new(c.credit_ledger, &as_billing)
        .deduct(user.address(), service_id, hourly, usage_ref)
        .call()
        .await
        .expect_err("a usage reference charges once");
    let err = replay
        .as_decoded_interface_error::<CreditLedger::CreditLedgerErrors>()
        .expect("a CreditLedger error");
    assert!(
        matches!(err, CreditLedger::CreditLedgerErrors::CreditLedgerUsageRefUsed(_)),
        "{err:?}"
    );

    // Pause and resume; a paused service is not chargeable.
    services.pause(service_id).send().await?.get_receipt().await?;
    assert_eq!(services.serviceOf(service_id).call().await?.state, u8::from(ServiceState::Paused));
    assert!(!services.isChargeable(service_id).call().await?);
    services.resume(service_id).send().await?.get_receipt().await?;
    assert!(services.isChargeable(service_id).call().await?);

    // Every event the platform emitted since deployment decodes.
    let filter =
        Filter::new().address(c.registries().to_vec()).from_block(chain.deployment.deploy_block);
    let logs = chain.reader().get_logs(&filter).await?;
    let names: Vec<&str> = logs
        .iter()
        .map(|log| DecodedLog::decode(&c, &log.inner).map(|d| d.name))
        .collect::<Result<_, _>>()?;
    for expected in [
        "Initialized",
        "RoleGranted",
        "RoleRevoked",
        "PriceSet",
        "TierLimitSet",
        "FreeTierDurationChanged",
        "TokenRateSet",
        "AccountRegistered",
        "CreditsRecharged",
        "TierChanged",
        "ServiceCreated",
        "CreditsDeducted",
        "ServicePaused",
        "ServiceResumed",
    ] {
        assert!(names.contains(&expected), "no {expected} among {names:?}");
    }
    let user_events: Vec<&str> =
        names.iter().copied().skip_while(|n| *n != "AccountRegistered").collect();
    assert_eq!(
        user_events,
        [
            "AccountRegistered",
            "CreditsRecharged",
            "CreditsRecharged",
            "TierChanged",
            "ServiceCreated",
            "CreditsDeducted",
            "ServicePaused",
            "ServiceResumed",
        ]
    );
    Ok(())
}

/// Signs `data` for `to` as `user`, for the relayer to submit through the forwarder.
async fn forward_request(
    chain: &TestChain,
    user: &PrivateKeySigner,
    to: Address,
    data: alloy::primitives::Bytes,
) -> anyhow::Result<ERC2771Forwarder::ForwardRequestData> {
    let c = chain.deployment.contracts;
    let forwarder = Forwarder::new(c.forwarder, chain.reader());
    let request = ForwardRequest {
        from: user.address(),
        to,
        value: U256::ZERO,
        gas: U256::from(500_000),
        nonce: forwarder.nonces(user.address()).call().await?,
        deadline: alloy::primitives::aliases::U48::from(u32::MAX),
        data: data.clone(),
    };
    let hash = request.eip712_signing_hash(&forwarder_domain(chain.chain_id(), c.forwarder));
    let signature = user.sign_hash(&hash).await?;
    Ok(ERC2771Forwarder::ForwardRequestData {
        from: request.from,
        to: request.to,
        value: request.value,
        gas: request.gas,
        deadline: request.deadline,
        data,
        signature: signature.as_bytes().into(),
    })
}

#[tokio::test]
async fn the_relayer_pays_gas_for_requests_users_signed() -> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let c = chain.deployment.contracts;
    // A fresh wallet with no ether at all: everything it does goes through the relayer.
    let user = PrivateKeySigner::random();
    let relayer = chain.provider_as(chain.role(Role::Relayer));
    let forwarder = Forwarder::new(c.forwarder, &relayer);
    let accounts = AccountRegistry::new(c.account_registry, chain.reader());
    let services = ServiceRegistry::new(c.service_registry, chain.reader());

    let register = accounts.register().calldata().clone();
    let request = forward_request(&chain, &user, c.account_registry, register).await?;
    let receipt = forwarder.execute(request).send().await?.get_receipt().await?;
    assert!(receipt.status());
    let registered = receipt.decoded_log::<AccountRegistry::AccountRegistered>().expect("event");
    assert_eq!(registered.account, user.address(), "the signer registers, not the relayer");

    let create =
        services.createService(ServiceKind::Storage.into(), keccak256("files")).calldata().clone();
    let request = forward_request(&chain, &user, c.service_registry, create).await?;
    let receipt = forwarder.execute(request.clone()).send().await?.get_receipt().await?;
    let created = receipt.decoded_log::<ServiceRegistry::ServiceCreated>().expect("event");
    assert_eq!(created.owner, user.address());

    // The same signed request cannot be replayed: its nonce is spent.
    let replay = forwarder.execute(request).call().await.expect_err("replayed request");
    let err = replay
        .as_decoded_interface_error::<Forwarder::ForwarderErrors>()
        .expect("a Forwarder error");
    assert!(matches!(err, Forwarder::ForwarderErrors::ERC2771ForwarderInvalidSigner(_)), "{err:?}");

    // A request signed by someone else for the user's service is refused by the registry.
    let pause = services.pause(created.serviceId).calldata().clone();
    let intruder = PrivateKeySigner::random();
    let request = forward_request(&chain, &intruder, c.service_registry, pause).await?;
    assert!(forwarder.execute(request).call().await.is_err(), "only the owner pauses");

    assert_eq!(chain.reader().get_balance(user.address()).await?, U256::ZERO);
    Ok(())
}
