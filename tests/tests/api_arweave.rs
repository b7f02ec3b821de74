//! Arweave storage end to end against arlocal (a local Arweave gateway that verifies signatures
//! and data roots as arweave-js computes them), anvil, Postgres, the indexer and the API: files
//! are posted as transactions signed by the platform's wallet (inline, or as chunks with their
//! proofs) and read back byte for byte through the gateway and the file's shareable link.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use decentraspace_abi::{AccountRegistry, Tier};
use decentraspace_clients::arweave::{
    merkle::{Chunk, Tree, chunk_ranges},
    transaction::{Unsigned, Wallet},
};
use decentraspace_tests::{
    IndexerTask, Role, TestApi, TestArweave, TestChain, TestDb, api_config, eventually,
    indexer_config, problem_type,
};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

async fn upload_to_arweave(
    api: &TestApi,
    token: &str,
    name: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<(u16, Value)> {
    let part =
        reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()).mime_str(content_type)?;
    let form = reqwest::multipart::Form::new().text("backend", "arweave").part("file", part);
    let response =
        api.http.post(api.url("/storage/upload")).bearer_auth(token).multipart(form).send().await?;
    let status = response.status().as_u16();
    Ok((status, serde_json::from_str(&response.text().await?).unwrap_or(Value::Null)))
}

#[tokio::test]
async fn arweave_uploads_are_signed_transactions_that_read_back_through_the_gateway()
-> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let arweave = TestArweave::start().await?;
    let mut config = api_config(&chain, &db);
    config.arweave_url = Some(arweave.url.clone());
    config.arweave_wallet_file = Some(arweave.wallet_file.clone());
    config.arweave_gateway_url = arweave.url.clone();
    config.storage_max_file_paid = 2 * 1024 * 1024;
    config.storage_quota_paid = 2148 * 1024;
    let api = TestApi::start_with(config).await?;
    let session = api.login_registered(&chain.user(0)).await?;

    // Permanent storage is for Paid accounts.
    let (status, problem) =
        upload_to_arweave(&api, &session.access, "a.txt", "text/plain", b"x".to_vec()).await?;
    assert_eq!((status, problem_type(&problem).as_str()), (403, "paid-tier-required"), "{problem}");
    let operator = chain.provider_as(chain.role(Role::Operator));
    AccountRegistry::new(chain.deployment.contracts.account_registry, &operator)
        .setTier(chain.user(0).address(), Tier::Paid.into(), 0)
        .send()
        .await?
        .get_receipt()
        .await?;
    // Paid storage opens with its first hour in the balance.
    chain.credit(chain.user(0).address(), 1_000_000_000).await?;
    eventually("the upgrade to be indexed", || async {
        Ok(api.get("/auth/tier", Some(&session.access)).await?.1["tier"] == "paid")
    })
    .await?;

    // A small file goes inline with its transaction.
    let note = b"permanent note".to_vec();
    let (status, file) =
        upload_to_arweave(&api, &session.access, "note.txt", "text/plain", note.clone()).await?;
    assert_eq!(status, 201, "{file}");
    let id = file["cid"].as_str().unwrap_or_default().to_owned();
    assert_eq!(id.len(), 43, "an Arweave transaction id: {file}");
    assert_eq!(file["backend"], "arweave");
    assert_eq!(file["url"], json!(format!("{}/{id}", arweave.url)));
    assert_eq!(arweave.data(&id).await?, note);
    let tags = arweave.tags(&id).await?;
    assert!(tags.contains(&("Content-Type".into(), "text/plain".into())), "{tags:?}");
    assert!(tags.contains(&("App-Name".into(), "DecentraSpace".into())), "{tags:?}");

    // Over the tier's file size: refused, nothing recorded.
    let (status, problem) = upload_to_arweave(
        &api,
        &session.access,
        "big.bin",
        "application/octet-stream",
        random_bytes(3 * 1024 * 1024),
    )
    .await?;
    assert_eq!((status, problem_type(&problem).as_str()), (413, "file-too-large"), "{problem}");

    // 700 KiB: three chunks, posted after the transaction with their proofs.
    let photo = random_bytes(700 * 1024);
    let (status, file) = upload_to_arweave(
        &api,
        &session.access,
        "photo.bin",
        "application/octet-stream",
        photo.clone(),
    )
    .await?;
    assert_eq!(status, 201, "{file}");
    let id = file["cid"].as_str().unwrap_or_default().to_owned();
    arweave.mine().await?;
    assert!(arweave.data(&id).await? == photo, "the gateway serves the uploaded bytes");
    let link = file["share_link"].as_str().unwrap_or_default();
    let shared = reqwest::get(api.url(link)).await?;
    assert_eq!(shared.status(), 200);
    assert!(shared.bytes().await?.as_ref() == photo.as_slice(), "the link serves the bytes");

    let mut conn = db.connect().await?;
    let recorded: Vec<(String, i64)> = sqlx::query_as(
        "select backend, size_bytes from storage_files where deleted_at is null order by id",
    )
    .fetch_all(&mut conn)
    .await?;
    assert_eq!(
        recorded,
        vec![("arweave".to_owned(), note.len() as i64), ("arweave".to_owned(), photo.len() as i64)]
    );

    // Deleting an Arweave file removes its record, not its bytes from the quota: they stay on
    // Arweave for good. (Were they freed, 1,500 KiB would fit the 2,148 KiB quota.)
    let photo_id = file["id"].as_i64().unwrap_or_default();
    let path = format!("/storage/manage/files/{photo_id}");
    let (status, _) = api.send(reqwest::Method::DELETE, &path, Some(&session.access), None).await?;
    assert_eq!(status, 204);
    let (status, problem) = upload_to_arweave(
        &api,
        &session.access,
        "again.bin",
        "application/octet-stream",
        random_bytes(1_500 * 1024),
    )
    .await?;
    assert_eq!(
        (status, problem_type(&problem).as_str()),
        (413, "storage-quota-exceeded"),
        "{problem}"
    );
    Ok(())
}

/// The data root and signature of a multi-chunk transaction, checked by arlocal against its own
/// (arweave-js) tree and RSA-PSS verification: the same transaction sent inline is taken, and
/// one with a wrong root or signature is refused.
#[tokio::test]
async fn multi_chunk_data_roots_and_signatures_match_the_reference_implementation()
-> anyhow::Result<()> {
    let arweave = TestArweave::start().await?;
    let wallet = Wallet::from_jwk(&std::fs::read_to_string(&arweave.wallet_file)?)?;
    assert_eq!(wallet.address(), arweave.address);
    let http = reqwest::Client::new();
    let anchor = http.get(format!("{}/tx_anchor", arweave.url)).send().await?.text().await?;

    // 256 KiB × 2 + 1000 bytes: the last two chunks are balanced.
    let data = random_bytes(2 * 256 * 1024 + 1000);
    let chunks: Vec<Chunk> = chunk_ranges(data.len() as u64)
        .into_iter()
        .map(|(start, end)| Chunk {
            start,
            end,
            data_hash: Sha256::digest(&data[start as usize..end as usize]).into(),
        })
        .collect();
    assert_eq!(chunks.len(), 3);
    let root = Tree::new(&chunks).root();
    let tags = [("Content-Type", "application/octet-stream")];
    let unsigned = |data_root| Unsigned {
        anchor: &anchor,
        reward: "1000000",
        tags: &tags,
        data_size: data.len() as u64,
        data_root,
        data: Some(&data),
    };
    let post = |tx: Value| {
        let http = http.clone();
        let url = format!("{}/tx", arweave.url);
        async move { anyhow::Ok(http.post(url).json(&tx).send().await?.status().as_u16()) }
    };

    let mut wrong_root = root;
    wrong_root[0] ^= 1;
    let refused = post(serde_json::to_value(unsigned(wrong_root).sign(&wallet)?)?).await?;
    assert_eq!(refused, 400, "a wrong data root is refused");
    let mut forged = serde_json::to_value(unsigned(root).sign(&wallet)?)?;
    let mut signature = B64.decode(forged["signature"].as_str().unwrap_or_default())?;
    signature[10] ^= 1;
    forged["id"] = json!(B64.encode(Sha256::digest(&signature)));
    forged["signature"] = json!(B64.encode(&signature));
    assert_eq!(post(forged).await?, 400, "a wrong signature is refused");

    let tx = unsigned(root).sign(&wallet)?;
    assert_eq!(post(serde_json::to_value(&tx)?).await?, 200, "the right root and signature");
    assert!(arweave.data(&tx.id).await? == data);
    Ok(())
}
