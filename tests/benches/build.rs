//! `make bench-build`: a site built from source, from a GitHub push to live, against the same
//! build run directly on this machine (no sandbox, no platform) in the same run.
//!
//! The fixture is a site whose `package.json` depends on `BENCH_PACKAGES` (default 40) packages
//! published to a local npm registry (verdaccio, no uplink), and whose build renders
//! `BENCH_PAGES` (default 400) pages with them, hashing each page `BENCH_WORK` times (default 0;
//! it stands for a bundler's CPU work). Measured:
//! - raw, cold: `npm install` with an empty npm cache, then `npm run build`, in a fresh folder;
//! - raw, warm: the same in another fresh folder, with the cache the cold run filled;
//! - platform, cold: a push delivered to the site's webhook (the fake GitHub signs it with the
//!   site's secret) until the gateway serves the new commit: fetch, unpack, sandboxed install with
//!   an empty build cache, sandboxed build, output checks, IPFS add, switch;
//! - platform, warm: the next push of a new commit with the same dependencies (the build cache
//!   reused).
//!
//! Ends with
//! `build_push_to_live raw_seconds=… cold_seconds=… cold_ratio=… raw_warm_seconds=… warm_seconds=… warm_ratio=…`
//! (`cold_ratio` against the raw cold build, `warm_ratio` against the raw warm one).

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use decentraspace_tests::{FakeGitHub, Stack, TestApi, TestRegistry, push_payload, site_tar_gz};
use serde_json::json;

const DOMAIN: &str = "sites.bench";
const REPO: &str = "bench/site";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The fixture's files: `package.json` naming the packages, and a build that renders pages.
fn source(packages: usize, pages: usize, work: usize, title: &str) -> Vec<(String, Vec<u8>)> {
    let dependencies: serde_json::Map<String, serde_json::Value> =
        (0..packages).map(|n| (format!("bench-dep-{n:02}"), json!("1.0.0"))).collect();
    let package = json!({
        "name": "bench-site", "version": "1.0.0", "private": true,
        "dependencies": dependencies,
        "scripts": { "build": "node build.js" },
    });
    let build = format!(
        "const fs = require('fs');\n\
         const deps = Object.keys(require('./package.json').dependencies).map(d => require(d));\n\
         fs.mkdirSync('dist/pages', {{ recursive: true }});\n\
         const crypto = require('crypto');\n\
         for (let i = 0; i < {pages}; i++) {{\n\
           let body = '';\n\
           for (const render of deps) body += render(i);\n\
           for (let w = 0; w < {work}; w++) body = body.slice(0, -8) + crypto.createHash('sha256').update(body).digest('hex').slice(0, 8);\n\
           fs.writeFileSync(`dist/pages/${{i}}.html`, `<!doctype html><title>{title} ${{i}}</title>${{body}}`);\n\
         }}\n\
         fs.writeFileSync('dist/index.html', '<h1>{title}</h1>');\n\
         console.log('rendered {pages} pages');\n"
    );
    vec![
        ("package.json".into(), serde_json::to_vec_pretty(&package).unwrap_or_default()),
        ("build.js".into(), build.into_bytes()),
    ]
}

/// A package that renders a paragraph, with some code to load.
fn publish_packages(registry: &TestRegistry, packages: usize) -> anyhow::Result<()> {
    for n in 0..packages {
        let package =
            json!({"name": format!("bench-dep-{n:02}"), "version": "1.0.0", "main": "index.js"});
        let mut code = String::from("const words = [");
        for w in 0..200 {
            code.push_str(&format!("'word{n}x{w}', "));
        }
        code.push_str(
            "];\nmodule.exports = i => `<p>${words.slice(i % 150, i % 150 + 40).join(' ')}</p>`;\n",
        );
        registry.publish(&[("package.json", &package.to_string()), ("index.js", &code)])?;
    }
    Ok(())
}

/// The files as GitHub's tarball of commit `sha` holds them.
fn tarball(sha: &str, files: &[(String, Vec<u8>)]) -> anyhow::Result<Vec<u8>> {
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    site_tar_gz(&format!("bench-site-{}", &sha[..7]), &files)
}

/// The build run directly: `npm install` against the registry with `cache`, then the build.
fn raw_build(
    files: &[(String, Vec<u8>)],
    registry: &str,
    cache: &Path,
) -> anyhow::Result<Duration> {
    let folder = tempfile::tempdir()?;
    for (name, data) in files {
        std::fs::write(folder.path().join(name), data)?;
    }
    let started = Instant::now();
    for args in [&["install"][..], &["run", "build"][..]] {
        let ran = Command::new("npm")
            .args(args)
            .current_dir(folder.path())
            .env("npm_config_registry", format!("{registry}/"))
            .env("npm_config_cache", cache)
            .env("npm_config_prefer_offline", "true")
            .env("npm_config_audit", "false")
            .env("npm_config_fund", "false")
            .env("npm_config_update_notifier", "false")
            .output()
            .context("run npm")?;
        ensure!(ran.status.success(), "npm {args:?}: {}", String::from_utf8_lossy(&ran.stderr));
    }
    let elapsed = started.elapsed();
    ensure!(folder.path().join("dist/index.html").is_file(), "the raw build wrote no site");
    Ok(elapsed)
}

/// Pushes `files` as commit `sha` and delivers the push; the time until the gateway serves it.
async fn push_to_live(
    api: &TestApi,
    github: &FakeGitHub,
    sha: &str,
    files: &[(String, Vec<u8>)],
    title: &str,
) -> anyhow::Result<Duration> {
    github.push(REPO, "main", sha, tarball(sha, files)?);
    let started = Instant::now();
    let answers = github.deliver(REPO, "push", &push_payload(REPO, "main", sha)).await?;
    ensure!(answers.len() == 1 && answers[0].status == 200, "the push was not taken: {answers:?}");
    let want = format!("<h1>{title}</h1>");
    let deadline = started + Duration::from_secs(600);
    loop {
        let served = api
            .http
            .get(format!("{}/", api.gateway))
            .header("host", format!("bench.{DOMAIN}"))
            .send()
            .await?
            .text()
            .await?;
        if served == want {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            bail!("{title} not live after 10 minutes (serving {served:?})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (packages, pages) = (env_or("BENCH_PACKAGES", 40), env_or("BENCH_PAGES", 400));
    let work = env_or("BENCH_WORK", 0);
    let registry = TestRegistry::start().await?;
    publish_packages(&registry, packages)?;
    let address = registry.address()?;
    let github = FakeGitHub::start().await?;
    let pointed = github.configurer();
    let stack = Stack::builder()
        .ipfs()
        .configure(move |config, _| {
            config.sites_domain = DOMAIN.into();
            config.uptime_interval_secs = 0;
            pointed(config);
            config.build_registry_url = Some(format!("http://{address}"));
        })
        .start()
        .await?;
    let api = &stack.api;
    let session = api.login_registered(&stack.chain.user(0)).await?;
    let token = session.access.as_str();

    // Link the account and deploy a first commit without a build: the site and its webhook.
    github.repository(REPO, "main", &["bench"]);
    let first = "0000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    github.push(
        REPO,
        "main",
        first,
        tarball(first, &[("index.html".into(), b"<h1>start</h1>".to_vec())])?,
    );
    let (_, start) = api.post("/github/link", Some(token), &json!({})).await?;
    let code = github.authorize(1, "bench");
    let (status, linked) = api
        .post("/github/link/callback", Some(token), &json!({"code": code, "state": start["state"]}))
        .await?;
    ensure!(status == 201, "link: {status} {linked}");
    let request = json!({"site": "bench", "github_account_id": linked["id"], "repository": REPO});
    let (status, queued) = api.post("/github/deploy", Some(token), &request).await?;
    ensure!(status == 202, "deploy: {status} {queued}");
    let done = api.deployment_finished(token, queued["id"].as_i64().context("an id")?).await?;
    ensure!(done["state"] == "live", "the first deployment: {done}");

    let raw_cache = tempfile::tempdir()?;
    let raw_cold =
        raw_build(&source(packages, pages, work, "raw"), &registry.url, raw_cache.path())?;
    let raw_warm =
        raw_build(&source(packages, pages, work, "raw"), &registry.url, raw_cache.path())?;
    let cold_source = source(packages, pages, work, "cold");
    let cold = push_to_live(
        api,
        &github,
        "1111111bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        &cold_source,
        "cold",
    )
    .await?;
    let warm_source = source(packages, pages, work, "warm");
    let warm = push_to_live(
        api,
        &github,
        "2222222ccccccccccccccccccccccccccccccccc",
        &warm_source,
        "warm",
    )
    .await?;
    let (_, history) = api.get("/hosting/deploy?site=bench&limit=2", Some(token)).await?;
    let warm_log = history["items"][0]["log"].as_str().unwrap_or_default();
    ensure!(warm_log.contains("build cache: reused"), "the warm build reused no cache: {warm_log}");

    eprintln!(
        "packages={packages} pages={pages} work={work}\nthe warm deployment's log:\n{warm_log}"
    );
    println!(
        "build_push_to_live raw_seconds={:.2} cold_seconds={:.2} cold_ratio={:.2} raw_warm_seconds={:.2} warm_seconds={:.2} warm_ratio={:.2}",
        raw_cold.as_secs_f64(),
        cold.as_secs_f64(),
        cold.as_secs_f64() / raw_cold.as_secs_f64(),
        raw_warm.as_secs_f64(),
        warm.as_secs_f64(),
        warm.as_secs_f64() / raw_warm.as_secs_f64(),
    );
    Ok(())
}
