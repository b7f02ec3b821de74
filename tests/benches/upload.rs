//! `make bench-upload`: a `BENCH_UPLOAD_MIB` (default 1,024 MiB) file streamed to
//! `POST /storage/upload` of the API binary (its own process, so its memory is measured alone),
//! through to a local IPFS node, as one chunked multipart body generated on the fly. Reports the
//! throughput and the API's peak RSS (`VmHWM`). Ends with
//! `upload bytes=B seconds=S mb_per_sec=R api_peak_rss_mb=M`.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use decentraspace_abi::{AccountRegistry, Tier};
use decentraspace_tests::{
    ApiProcess, IndexerTask, Role, SIWE_DOMAIN, SIWE_URI, TestApi, TestChain, TestDb, TestIpfs,
    indexer_config, role_key,
};

const MIB: u64 = 1024 * 1024;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Peak resident memory of `pid`, in MB.
fn peak_rss_mb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM")?;
    Ok(kb / 1024)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bytes = env_or("BENCH_UPLOAD_MIB", 1024) * MIB;
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let ipfs = TestIpfs::start().await?;

    // A Paid account (files up to 5 GiB), registered and indexed before signing in.
    let user = chain.user(0);
    let operator = chain.provider_as(chain.role(Role::Operator));
    let accounts = AccountRegistry::new(chain.deployment.contracts.account_registry, &operator);
    accounts.registerFor(user.address()).send().await?.get_receipt().await?;
    accounts.setTier(user.address(), Tier::Paid.into(), 0).send().await?.get_receipt().await?;
    // Paid storage opens with its first hour in the balance.
    chain.credit(user.address(), 1_000_000_000).await?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let api = ApiProcess::spawn(
        &chain,
        &db,
        &[
            ("API_LISTEN", format!("127.0.0.1:{port}")),
            ("SIWE_DOMAIN", SIWE_DOMAIN.to_owned()),
            ("SIWE_URI", SIWE_URI.to_owned()),
            ("OPERATOR_PRIVATE_KEY", role_key(&chain, Role::Operator)),
            ("IPFS_API_URL", ipfs.api_url.clone()),
        ],
    )?;
    let client = TestApi::at(&format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get("/health", None).await.map(|(s, _)| s).unwrap_or(0) != 200 {
        anyhow::ensure!(Instant::now() < deadline, "the API did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let session = client.login(&user).await?;
    let base_rss = peak_rss_mb(api.pid())?;

    // 1 MiB chunks of pseudo-random bytes (xorshift), made as they are sent: the client holds one.
    let chunks = bytes / MIB;
    let body =
        futures::stream::unfold((0u64, 0x9E37_79B9_7F4A_7C15u64), move |(n, mut x)| async move {
            if n == chunks {
                return None;
            }
            let mut chunk = vec![0u8; MIB as usize];
            for word in chunk.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                word.copy_from_slice(&x.to_le_bytes());
            }
            Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), (n + 1, x)))
        });
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(body))
        .file_name("big.bin")
        .mime_str("application/octet-stream")?;
    let started = Instant::now();
    let response = client
        .http
        .post(client.url("/storage/upload"))
        .bearer_auth(&session.access)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(status == 201, "upload: {status} {answer}");
    anyhow::ensure!(answer["size"] == serde_json::json!(bytes), "size: {answer}");
    let peak = peak_rss_mb(api.pid())?;
    eprintln!("cid {} (API RSS before the upload: {base_rss} MB)", answer["cid"]);
    println!(
        "upload bytes={bytes} seconds={seconds:.2} mb_per_sec={:.1} api_peak_rss_mb={peak}",
        bytes as f64 / MIB as f64 / seconds
    );
    Ok(())
}
