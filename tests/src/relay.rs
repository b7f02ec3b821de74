//! Forward requests (ERC-2771) as a wallet signs them for the relay (`POST /blockchain/credit`).

use alloy::{
    primitives::{Address, Bytes, U256, aliases::U48},
    signers::{Signer, local::PrivateKeySigner},
    sol_types::SolStruct,
};
use decentraspace_abi::{
    Forwarder,
    eip712::{ForwardRequest, forwarder_domain},
};
use serde_json::{Value, json};

use crate::{TestApi, TestChain};

/// A relay body for a forward request to `to` with `data`, signed by `signer` but claiming
/// `from` (the same wallet, unless a test forges one).
pub async fn forward(
    chain: &TestChain,
    signer: &PrivateKeySigner,
    from: Address,
    to: Address,
    data: Bytes,
) -> anyhow::Result<Value> {
    let c = chain.deployment.contracts;
    let forwarder = Forwarder::new(c.forwarder, chain.reader());
    let deadline = chrono::Utc::now().timestamp() as u64 + 3_600;
    let request = ForwardRequest {
        from,
        to,
        value: U256::ZERO,
        gas: U256::from(500_000),
        nonce: forwarder.nonces(from).call().await?,
        deadline: U48::from(deadline),
        data: data.clone(),
    };
    let signature = signer
        .sign_hash(&request.eip712_signing_hash(&forwarder_domain(chain.chain_id(), c.forwarder)))
        .await?;
    Ok(json!({
        "forward_request": {
            "from": from.to_string(), "to": to.to_string(), "gas": 500_000, "deadline": deadline,
            "data": data.to_string(), "signature": Bytes::from(signature.as_bytes()).to_string(),
        }
    }))
}

/// Signs `to`/`data` as `signer`, relays it, and waits until it is mined: the record's final
/// state.
pub async fn relay_signed(
    api: &TestApi,
    chain: &TestChain,
    signer: &PrivateKeySigner,
    token: &str,
    to: Address,
    data: Bytes,
) -> anyhow::Result<Value> {
    let body = forward(chain, signer, signer.address(), to, data).await?;
    let (status, sent) = api.post("/blockchain/credit/", Some(token), &body).await?;
    anyhow::ensure!(status == 202, "relay: {status} {sent}");
    let id = sent["id"].as_i64().unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, tx) = api.get(&format!("/blockchain/credit/{id}"), Some(token)).await?;
        if tx["status"] != "pending" && tx["status"] != "received" {
            return Ok(tx);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "relayed tx {id} stuck: {tx}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
