//! `indexer verify`: the indexed projections against the chain, at the checkpoint block.

use alloy::{
    eips::BlockId,
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
};
use anyhow::Context;
use decentraspace_abi::{
    AccountRegistry, CreditLedger, Deployment, DomainRegistry, ServiceRegistry,
};
use futures::{StreamExt, stream};
use sqlx::PgConnection;

use crate::{
    projection::{EntityKey, EntityValue},
    store,
};

/// What verification found.
#[derive(Debug, Default)]
pub struct Report {
    /// The block compared at.
    pub block: u64,
    /// How many entities were compared.
    pub checked: usize,
    /// Every difference, in words.
    pub differences: Vec<String>,
}

/// Compares every indexed account, balance, service and domain (and every service on-chain) with
/// the chain at the checkpoint block.
pub async fn verify(
    conn: &mut PgConnection,
    rpc_url: &str,
    deployment: &Deployment,
) -> anyhow::Result<Report> {
    let chain_id = deployment.chain_id;
    let checkpoint = store::checkpoint(conn, chain_id)
        .await?
        .context("nothing indexed yet for this chain: run the indexer first")?;
    let provider: DynProvider =
        ProviderBuilder::new().connect(rpc_url).await.context("connect to the RPC")?.erased();
    let at = BlockId::number(checkpoint.block_number);
    let c = deployment.contracts;
    let accounts = AccountRegistry::new(c.account_registry, &provider);
    let ledger = CreditLedger::new(c.credit_ledger, &provider);
    let services = ServiceRegistry::new(c.service_registry, &provider);
    let domains = DomainRegistry::new(c.domain_registry, &provider);

    let indexed = store::indexed_entities(conn, chain_id).await?;
    let service_count: u64 = services
        .serviceCount()
        .block(at)
        .call()
        .await
        .context("serviceCount")?
        .try_into()
        .unwrap_or(u64::MAX);
    let mut keys: Vec<EntityKey> = indexed.keys().cloned().collect();
    keys.extend((1..=service_count).map(EntityKey::Service));
    // An account without a balance row must have none on-chain either.
    let registered: Vec<Address> = keys
        .iter()
        .filter_map(|k| if let EntityKey::Account(a) = k { Some(*a) } else { None })
        .collect();
    keys.extend(registered.into_iter().map(EntityKey::Balance));
    keys.sort();
    keys.dedup();
    keys.retain(|k| {
        matches!(
            k,
            EntityKey::Account(_)
                | EntityKey::Balance(_)
                | EntityKey::Service(_)
                | EntityKey::Domain(_)
        )
    });

    let mut report = Report { block: checkpoint.block_number, ..Report::default() };
    let checks = stream::iter(keys)
        .map(|key| {
            let (accounts, ledger, services, domains) = (&accounts, &ledger, &services, &domains);
            let ours = indexed.get(&key).cloned();
            async move {
                let theirs: anyhow::Result<Option<EntityValue>> = match &key {
                    EntityKey::Account(a) => on_chain_account(accounts, *a, at).await,
                    EntityKey::Balance(a) => {
                        match ledger.balanceOf(*a).block(at).call().await {
                            Ok(b) => Ok((b != U256::ZERO || ours.is_some())
                                .then_some(EntityValue::Balance(b))),
                            Err(err) => Err(err.into()),
                        }
                    }
                    EntityKey::Service(id) => on_chain_service(services, *id, at).await,
                    EntityKey::Domain(node) => on_chain_domain(domains, *node, at).await,
                    _ => unreachable!("filtered above"),
                };
                (key, ours, theirs)
            }
        })
        .buffer_unordered(16);
    let results: Vec<_> = checks.collect().await;
    for (key, ours, theirs) in results {
        report.checked += 1;
        let theirs = theirs.with_context(|| format!("read {key} on-chain"))?;
        if ours != theirs {
            report.differences.push(format!("{key}: indexed {ours:?}, on-chain {theirs:?}"));
        }
    }
    Ok(report)
}

async fn on_chain_account(
    accounts: &AccountRegistry::AccountRegistryInstance<&DynProvider>,
    account: Address,
    at: BlockId,
) -> anyhow::Result<Option<EntityValue>> {
    let a = accounts.accountOf(account).block(at).call().await?;
    if a.status == 0 {
        return Ok(None);
    }
    Ok(Some(EntityValue::Account(crate::projection::AccountRow {
        status: a.status.try_into()?,
        tier: a.tier.try_into()?,
        tier_expires_at: a.tierExpiresAt,
        registered_at: a.registeredAt,
    })))
}

async fn on_chain_service(
    services: &ServiceRegistry::ServiceRegistryInstance<&DynProvider>,
    id: u64,
    at: BlockId,
) -> anyhow::Result<Option<EntityValue>> {
    let s = services.serviceOf(U256::from(id)).block(at).call().await?;
    if s.state == 0 {
        return Ok(None);
    }
    Ok(Some(EntityValue::Service(crate::projection::ServiceRow {
        owner: s.owner,
        kind: s.kind.try_into()?,
        state: s.state.try_into()?,
        service_ref: s.r#ref,
        created_at: s.createdAt,
        expires_at: s.expiresAt,
    })))
}

async fn on_chain_domain(
    domains: &DomainRegistry::DomainRegistryInstance<&DynProvider>,
    node: B256,
    at: BlockId,
) -> anyhow::Result<Option<EntityValue>> {
    let d = domains.domainOf(node).block(at).call().await?;
    if d.method == 0 {
        return Ok(None);
    }
    let name = domains.nameOf(node).block(at).call().await?;
    Ok(Some(EntityValue::Domain(crate::projection::DomainRow {
        name,
        owner: d.owner,
        method: d.method.try_into()?,
        expires_at: d.expiresAt,
        service_id: d.serviceId.try_into().unwrap_or(u64::MAX),
    })))
}
