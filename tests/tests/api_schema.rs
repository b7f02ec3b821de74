//! Schema fuzzing: schemathesis (pinned in `tools/schemathesis/requirements.txt`, installed by
//! `make schemathesis`) drives the running API from its own `/openapi.json`, unauthenticated and
//! with a token, over anvil, Postgres, the indexer and an IPFS node. No answer may be a 5xx (except
//! 503 `not-configured` from a provider this stack leaves unconfigured on purpose: card payments,
//! GitHub, the registrar, Fly, Arweave) or a status the document does not list for the route.
//! The run is deterministic (bounded examples, no randomness), so a failure reproduces. The live
//! stream (`/v1/stream`) is left out: it never ends, so a fuzzer can only time out on it.

use std::{path::PathBuf, process::Command};

use decentraspace_tests::{
    IndexerTask, TestApi, TestChain, TestDb, TestIpfs, api_config, indexer_config, repo_root,
};

/// Examples per operation and mode.
const MAX_EXAMPLES: &str = "15";

/// The schemathesis executable: `SCHEMATHESIS`, or where `make schemathesis` puts it.
fn schemathesis() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("SCHEMATHESIS") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(std::env::var("HOME")?)
            .join(".cache/decentraspace/tools/venv/bin/schemathesis"),
    };
    anyhow::ensure!(
        path.exists(),
        "schemathesis is not installed at {}: run `make schemathesis` (make test does), or set SCHEMATHESIS",
        path.display()
    );
    Ok(path)
}

/// Runs schemathesis against `base`, with `headers`; its report on failure.
fn fuzz(base: &str, headers: &[String], label: &str) -> anyhow::Result<()> {
    let hooks = repo_root().join("tools/schemathesis");
    let report = std::env::temp_dir().join(format!("schemathesis-{label}-{}", std::process::id()));
    let mut command = Command::new(schemathesis()?);
    // Its cache and reports go to a temporary folder, not into the checkout.
    std::fs::create_dir_all(&report)?;
    command
        .current_dir(&report)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &hooks)
        .env("NO_COLOR", "1")
        .args(["run", &format!("{base}/openapi.json")])
        .args(["--checks", "no_server_error,status_code_conformance,content_type_conformance"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", MAX_EXAMPLES, "--generation-deterministic"])
        .args(["--workers", "2", "--request-timeout", "30", "--no-color"])
        // The live stream never ends: a fuzzer can only time out on it.
        .args(["--exclude-path", "/v1/stream"])
        .arg("--report-dir")
        .arg(&report);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command.output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "schemathesis ({label}) found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A run that tested nothing would pass: insist it covered every operation.
    let summary = stdout.rsplit_once("SUMMARY").map_or(stdout.as_ref(), |(_, s)| s);
    eprintln!("schemathesis ({label}):{summary}");
    // "Selected: 70/71" (all but the stream), then "Tested: 70".
    let selected = summary.lines().find_map(|l| {
        let (selected, total) = l.trim().strip_prefix("Selected:")?.split_once('/')?;
        Some((selected.trim().parse::<usize>().ok()?, total.trim().parse::<usize>().ok()?))
    });
    let tested = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested:")?.trim().parse::<usize>().ok());
    anyhow::ensure!(
        matches!((selected, tested), (Some((s, t)), Some(n)) if n == s && s + 1 == t),
        "schemathesis ({label}) did not test every operation but the stream:\n{stdout}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_answers_what_its_document_says() -> anyhow::Result<()> {
    let chain = TestChain::start().await?;
    let db = TestDb::create().await?;
    let _indexer = IndexerTask::start(indexer_config(&chain, &db, 0)).await?;
    let ipfs = TestIpfs::start().await?;
    let mut config = api_config(&chain, &db);
    config.ipfs_api_url = Some(ipfs.api_url.clone());
    config.ipfs_gateway_url = ipfs.gateway_url.clone();
    let api = TestApi::start_with(config).await?;
    let session = api.login_registered(&chain.user(10)).await?;

    let base = api.base.clone();
    let token = session.access.clone();
    tokio::task::spawn_blocking(move || {
        fuzz(&base, &[], "anonymous")?;
        fuzz(&base, &[format!("Authorization: Bearer {token}")], "signed-in")
    })
    .await??;
    Ok(())
}
