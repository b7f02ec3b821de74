//! `make bench-gateway`: the site gateway against nginx on the same machine, in the same run.
//!
//! The API (release build, in this process, with its request log), Postgres, the IPFS node,
//! anvil and the indexer run here; one site is deployed through `POST /hosting/deploy` with a
//! 2 KB `index.html` and a 100 MB file. nginx (Debian's, 2 workers, access log on, `sendfile`)
//! serves the same files from disk, with the same certificate. `wrk` (2 threads,
//! `BENCH_CONNECTIONS` connections, default 32, `BENCH_SECONDS`, default 10) then measures:
//! - the page over plain HTTP:
//!   `gateway page_bytes=… rps=… p50_ms=… p99_ms=… errors=… nginx_rps=… ratio=…`, and
//!   `gateway_log answered=… logged=…` (every answered request is in the request log)
//! - the page over HTTPS on kept-alive connections:
//!   `gateway_https rps=… p99_ms=… errors=… nginx_rps=… ratio=…`
//! - the 100 MB file (4 connections):
//!   `gateway_large bytes=… mb_per_sec=… nginx_mb_per_sec=… ratio=… peak_rss_mb=… rss_before_mb=…`
//!   where `peak_rss_mb` is this process's (the API's) peak resident memory while it serves the
//!   file, and `rss_before_mb` what it held before.

use std::{
    io::Write,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use decentraspace_tests::{
    IndexerTask, TestApi, TestChain, TestDb, TestIpfs, api_config, free_port, indexer_config, wrk,
};

const DOMAIN: &str = "sites.bench";
const LARGE: usize = 100 * 1024 * 1024;

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

/// 100 MB that do not compress (a video, an archive).
fn large() -> Vec<u8> {
    let mut bytes = vec![0u8; LARGE];
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    bytes
}

/// nginx serving `root` on `port` (HTTP) and `tls_port` (HTTPS with `cert`/`key`).
struct Nginx {
    child: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Nginx {
    fn start(dir: &Path, root: &Path, port: u16, tls_port: u16) -> anyhow::Result<Self> {
        let d = dir.display();
        let conf = format!(
            "worker_processes 2;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log {d}/access.log;\n  sendfile on;\n  tcp_nopush on;\n\
               keepalive_requests 1000000;\n  default_type application/octet-stream;\n\
               client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{\n    listen 127.0.0.1:{port};\n    listen 127.0.0.1:{tls_port} ssl http2;\n\
                 ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem;\n\
                 root {root};\n  }}\n}}\n",
            root = root.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf)?;
        let child = Command::new("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("run nginx (make bench-gateway installs it)")?;
        let mut nginx = Self { child };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = nginx.child.try_wait()? {
                bail!(
                    "nginx exited ({status}): {}",
                    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                );
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "nginx did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }
}

/// This process's peak resident memory, in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse::<f64>().ok()
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env_or("BENCH_SECONDS", 10);
    let connections = env_or("BENCH_CONNECTIONS", 32);
    let dir = tempfile::tempdir()?;
    // One certificate for both servers: a wildcard for the sites domain.
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec![format!("*.{DOMAIN}")])?.self_signed(&key)?;
    std::fs::write(dir.path().join("cert.pem"), cert.pem())?;
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem())?;

    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let ipfs = TestIpfs::start().await?;
    let tls_port = free_port()?;
    let mut config = api_config(&chain, &db);
    config.ipfs_api_url = Some(ipfs.api_url.clone());
    config.sites_domain = DOMAIN.into();
    config.uptime_interval_secs = 0;
    config.database_pool_size = 32;
    config.gateway_tls_listen = Some(([127, 0, 0, 1], tls_port).into());
    config.sites_tls_cert_file = Some(dir.path().join("cert.pem"));
    config.sites_tls_key_file = Some(dir.path().join("key.pem"));
    config.deploy_max_archive_bytes = 2 * LARGE as u64;
    // Plain HTTP is measured too, not redirected.
    config.gateway_redirect_https = false;
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
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("index.html"), &html)?;
    // The archive is made and sent in a scope of its own: its 300 MB of buffers are gone before
    // the memory of serving is measured.
    let queued: serde_json::Value = {
        let big = large();
        std::fs::write(root.join("large.bin"), &big)?;
        let mut builder = tar::Builder::new(Vec::new());
        for (name, bytes) in
            [("site/index.html", html.as_slice()), ("site/large.bin", big.as_slice())]
        {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, bytes)?;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&builder.into_inner()?)?;
        let form = reqwest::multipart::Form::new().text("site", "bench").part(
            "archive",
            reqwest::multipart::Part::bytes(gz.finish()?).file_name("site.tar.gz"),
        );
        api.http
            .post(api.url("/hosting/deploy"))
            .bearer_auth(&session.access)
            .multipart(form)
            .send()
            .await?
            .json()
            .await?
    };
    let id = queued["id"].as_i64().with_context(|| format!("a deployment: {queued}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let (_, d) = api.get(&format!("/hosting/deploy/{id}"), Some(&session.access)).await?;
        match d["state"].as_str() {
            Some("live") => break,
            Some("failed") => bail!("the deployment failed: {d}"),
            _ if std::time::Instant::now() > deadline => {
                bail!("the deployment did not finish: {d}")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let nginx_port = free_port()?;
    let nginx_tls = free_port()?;
    let _nginx = Nginx::start(dir.path(), &root, nginx_port, nginx_tls)?;
    let host = format!("Host: bench.{DOMAIN}");
    let tls_host = format!("bench.{DOMAIN}");
    // Warm both: the gateway's first read of each file goes to IPFS, and the large one is copied
    // to its disk cache meanwhile (read until a whole read takes under a second).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    for url in [format!("{}/", api.gateway), format!("{}/large.bin", api.gateway)] {
        loop {
            let started = std::time::Instant::now();
            let response = api.http.get(&url).header("host", &tls_host).send().await?;
            anyhow::ensure!(response.status() == 200, "{url}: {}", response.status());
            let body = response.bytes().await?;
            anyhow::ensure!(body.len() == html.len() || body.len() == LARGE, "{url}: a short body");
            if started.elapsed() < Duration::from_secs(1) {
                break;
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "{url} never got fast");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // Every request answered is in the request log: what it counted over the run is at least
    // what wrk saw completed (a request in flight when wrk stopped was answered too).
    let logged = || async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        anyhow::Ok(
            sqlx::query_scalar::<_, i64>(
                "select coalesce(sum(requests), 0)::bigint from site_traffic",
            )
            .fetch_one(&mut db.connect().await?)
            .await?,
        )
    };
    let logged_before = logged().await?;
    let run = wrk(&format!("{}/", api.gateway), Some(&host), seconds, connections)?;
    let logged_run = logged().await? - logged_before;
    println!("gateway_log answered={} logged={logged_run}", run.requests);
    anyhow::ensure!(
        logged_run >= run.requests as i64,
        "the request log lost requests: {logged_run} logged of {} answered",
        run.requests
    );
    let nginx = wrk(&format!("http://127.0.0.1:{nginx_port}/"), Some(&host), seconds, connections)?;
    println!(
        "gateway page_bytes={} rps={:.0} p50_ms={:.2} p99_ms={:.2} errors={} nginx_rps={:.0} nginx_p99_ms={:.2} ratio={:.3}",
        html.len(),
        run.rps,
        run.p50_ms,
        run.p99_ms,
        run.errors,
        nginx.rps,
        nginx.p99_ms,
        run.rps / nginx.rps
    );

    // wrk resolves the name itself: the URLs name 127.0.0.1, the Host header and SNI the site.
    let https = wrk(&format!("https://127.0.0.1:{tls_port}/"), Some(&host), seconds, connections)?;
    let nginx_https =
        wrk(&format!("https://127.0.0.1:{nginx_tls}/"), Some(&host), seconds, connections)?;
    println!(
        "gateway_https rps={:.0} p99_ms={:.2} errors={} nginx_rps={:.0} nginx_p99_ms={:.2} ratio={:.3}",
        https.rps,
        https.p99_ms,
        https.errors,
        nginx_https.rps,
        nginx_https.p99_ms,
        https.rps / nginx_https.rps
    );

    // The peak from here on: what serving the large file takes.
    std::fs::write("/proc/self/clear_refs", "5").context("reset the peak RSS")?;
    let rss_before = peak_rss_mb();
    let large_run = wrk(&format!("{}/large.bin", api.gateway), Some(&host), seconds, 4)?;
    let serving_peak = peak_rss_mb();
    let nginx_large =
        wrk(&format!("http://127.0.0.1:{nginx_port}/large.bin"), Some(&host), seconds, 4)?;
    println!(
        "gateway_large bytes={LARGE} mb_per_sec={:.0} errors={} nginx_mb_per_sec={:.0} ratio={:.3} peak_rss_mb={:.0} rss_before_mb={:.0}",
        large_run.mb_per_sec,
        large_run.errors,
        nginx_large.mb_per_sec,
        large_run.mb_per_sec / nginx_large.mb_per_sec,
        serving_peak,
        rss_before
    );
    Ok(())
}
