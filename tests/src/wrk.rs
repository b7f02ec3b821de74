//! `wrk`, the HTTP load generator the benchmarks drive (installed by their Makefile targets).

use std::process::Command;

use anyhow::{Context, bail};

/// One `wrk` run.
#[derive(Debug, Clone, Copy)]
pub struct WrkRun {
    /// Requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Non-2xx/3xx answers and socket errors.
    pub errors: u64,
    /// Bytes read per second (headers and bodies), in MB (10^6 bytes).
    pub mb_per_sec: f64,
    /// Requests completed (`N requests in …`).
    pub requests: u64,
}

/// Runs `wrk` (2 threads, `connections`, `seconds`, with an optional `header`) against `url`.
pub fn wrk(
    url: &str,
    header: Option<&str>,
    seconds: u64,
    connections: u64,
) -> anyhow::Result<WrkRun> {
    let mut command = Command::new("wrk");
    command.args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency"]);
    if let Some(header) = header {
        command.args(["-H", header]);
    }
    let output = command.arg(url).output().context("run wrk (`make bench-api` installs it)")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&output.stderr));
    }
    let field = |prefix: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
    };
    let ms = |v: Option<String>| -> anyhow::Result<f64> {
        let v = v.context("a latency percentile in wrk's output")?;
        let (number, unit) =
            v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let n: f64 = number.parse()?;
        Ok(match unit {
            "us" => n / 1_000.0,
            "ms" => n,
            "s" => n * 1_000.0,
            other => bail!("unknown unit {other:?}"),
        })
    };
    let rps: f64 = field("Requests/sec:").context("Requests/sec in wrk's output")?.parse()?;
    let requests: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").map(|(n, _)| n.trim().to_owned()))
        .context("`N requests in` in wrk's output")?
        .parse()?;
    // Non-2xx answers and socket errors (connect, read, write, timeout) both count.
    let non_2xx: u64 = field("Non-2xx or 3xx responses:").map_or(Ok(0), |v| v.parse())?;
    let socket: u64 = field("Socket errors:")
        .map(|v| {
            v.split(',').filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok()).sum()
        })
        .unwrap_or(0);
    // `Transfer/sec:  12.34MB` (binary units, as wrk prints them).
    let transfer = field("Transfer/sec:").context("Transfer/sec in wrk's output")?;
    let (number, unit) = transfer
        .split_at(transfer.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(transfer.len()));
    let scale = match unit {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        other => bail!("unknown transfer unit {other:?}"),
    };
    let mb_per_sec = number.parse::<f64>()? * scale / 1e6;
    Ok(WrkRun {
        rps,
        mb_per_sec,
        requests,
        p50_ms: ms(field("50%"))?,
        p99_ms: ms(field("99%"))?,
        errors: non_2xx + socket,
    })
}
