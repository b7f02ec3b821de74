//! `make bench-gateway`: the site gateway serving a small page from a site's current deployment,
//! under `wrk` (`BENCH_SECONDS`, default 10; `BENCH_CONNECTIONS`, default 32), with the API
//! (release build, in this process), its request log, Postgres, the IPFS node, anvil and the
//! indexer on the same machine. Ends with
//! `gateway page_bytes=B rps=R p50_ms=… p99_ms=… errors=E`.

use std::{io::Write, time::Duration};

use anyhow::{Context, bail};
use decentraspace_tests::{
    IndexerTask, TestApi, TestChain, TestDb, TestIpfs, api_config, indexer_config, wrk,
};

const DOMAIN: &str = "sites.bench";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small page, as a landing page's HTML is.
fn page() -> Vec<u8> {
    let mut html = String::from("<!doctype html><html><head><title>bench</title></head><body>");
    while html.len() < 2_000 {
        html.push_str("<p>DecentraSpace serves this page from IPFS.</p>");
    }
    html.push_str("</body></html>");
    html.into_bytes()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env_or("BENCH_SECONDS", 10);
    let connections = env_or("BENCH_CONNECTIONS", 32);
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let ipfs = TestIpfs::start().await?;
    let mut config = api_config(&chain, &db);
    config.ipfs_api_url = Some(ipfs.api_url.clone());
    config.sites_domain = DOMAIN.into();
    config.uptime_interval_secs = 0;
    config.database_pool_size = 32;
    let api = TestApi::start_with(config).await?;
    let session = api.login(&chain.user(0)).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while api.get("/auth/tier", Some(&session.access)).await?.1["registered"] != true {
        if std::time::Instant::now() > deadline {
            bail!("the registration was not indexed");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let html = page();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(html.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "site/index.html", html.as_slice())?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&builder.into_inner()?)?;
    let form = reqwest::multipart::Form::new()
        .text("site", "bench")
        .part("archive", reqwest::multipart::Part::bytes(gz.finish()?).file_name("site.tar.gz"));
    let queued: serde_json::Value = api
        .http
        .post(api.url("/hosting/deploy"))
        .bearer_auth(&session.access)
        .multipart(form)
        .send()
        .await?
        .json()
        .await?;
    let id = queued["id"].as_i64().with_context(|| format!("a deployment: {queued}"))?;
    loop {
        let (_, d) = api.get(&format!("/hosting/deploy/{id}"), Some(&session.access)).await?;
        match d["state"].as_str() {
            Some("live") => break,
            Some("failed") => bail!("the deployment failed: {d}"),
            _ if std::time::Instant::now() > deadline => {
                bail!("the deployment did not finish: {d}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }

    let host = format!("Host: bench.{DOMAIN}");
    let run = wrk(&format!("{}/", api.gateway), Some(&host), seconds, connections)?;
    println!(
        "gateway page_bytes={} rps={:.0} p50_ms={:.2} p99_ms={:.2} errors={}",
        html.len(),
        run.rps,
        run.p50_ms,
        run.p99_ms,
        run.errors
    );
    Ok(())
}
