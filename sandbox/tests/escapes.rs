//! The sandbox against real bubblewrap and the host's cgroups: what a build may do, and each way
//! out of it refused.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use decentraspace_sandbox::{Limit, Limits, Outcome, Run, Sandbox};
use tokio::sync::mpsc;

const MIB: u64 = 1 << 20;

fn limits() -> Limits {
    Limits {
        wall: Duration::from_secs(60),
        cpu: Duration::from_secs(60),
        memory_bytes: 512 * MIB,
        processes: 64,
        disk_bytes: 64 * MIB,
        tmp_bytes: 16 * MIB,
    }
}

async fn sandbox() -> Sandbox {
    Sandbox::new("/usr/bin/bwrap")
        .await
        .expect("bubblewrap and cgroups (make test installs bubblewrap)")
}

/// Runs `command` in `dir` and gives back how it ended and its output.
async fn run_in(
    dir: &Path,
    command: &str,
    env: &[(String, String)],
    limits: Limits,
) -> (Outcome, Vec<String>) {
    let (tx, mut rx) = mpsc::channel(1024);
    let collect = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        lines
    });
    let run =
        Run { dir, workdir: Path::new(""), command, env, limits, registry: None, cache: None };
    let finished = sandbox().await.run(run, tx).await.expect("the run starts");
    (finished.outcome, collect.await.expect("lines"))
}

async fn run(command: &str, limits: Limits) -> (Outcome, Vec<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (outcome, lines) = run_in(dir.path(), command, &[], limits).await;
    (outcome, lines, dir)
}

#[tokio::test]
async fn a_build_runs_node_in_its_folder_and_its_output_streams_line_by_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("build.js"), "require('fs').mkdirSync('dist'); require('fs').writeFileSync('dist/index.html', '<h1>hi</h1>'); console.log('built'); console.error('a warning')").expect("write");
    let env = [("SITE_TITLE".to_owned(), "hello world".to_owned())];
    let (outcome, lines) = run_in(
        dir.path(),
        "node build.js && echo \"$SITE_TITLE\" && pwd && id -u && exit 3",
        &env,
        limits(),
    )
    .await;
    assert_eq!(outcome, Outcome::Exited(3), "{lines:?}");
    assert!(
        lines.contains(&"built".to_owned()) && lines.contains(&"a warning".to_owned()),
        "{lines:?}"
    );
    assert!(lines.contains(&"hello world".to_owned()), "{lines:?}");
    assert!(
        lines.contains(&"/build".to_owned()) && lines.contains(&"1000".to_owned()),
        "{lines:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dist/index.html")).expect("output"),
        "<h1>hi</h1>"
    );
}

#[tokio::test]
async fn lines_arrive_while_the_build_still_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, mut rx) = mpsc::channel(16);
    let sandbox = sandbox().await;
    let path = dir.path().to_owned();
    let running = tokio::spawn(async move {
        let run = Run {
            dir: &path,
            workdir: Path::new(""),
            command: "echo first; sleep 30",
            env: &[],
            limits: limits(),
            registry: None,
            cache: None,
        };
        sandbox.run(run, tx).await
    });
    let first = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
    assert_eq!(first.expect("a line before the build ends").as_deref(), Some("first"));
    assert!(!running.is_finished(), "the build was still sleeping");
    running.abort();
}

#[tokio::test]
async fn the_environment_of_the_api_does_not_reach_the_build() {
    // The test runner gives this process variables of its own, as the API has its keys.
    let own = std::env::var("CARGO_MANIFEST_DIR").expect("the runner sets CARGO_MANIFEST_DIR");
    let (outcome, lines, _dir) = run("env", limits()).await;
    assert_eq!(outcome, Outcome::Exited(0));
    let names: Vec<&str> = lines.iter().filter_map(|l| l.split_once('=').map(|(n, _)| n)).collect();
    assert!(!lines.iter().any(|l| l.contains(&own)), "{lines:?}");
    for name in &names {
        assert!(
            ["PATH", "HOME", "CI", "PWD", "SHLVL", "_"].contains(name),
            "unexpected variable {name}: {lines:?}"
        );
    }
}

#[tokio::test]
async fn files_outside_the_source_cannot_be_read() {
    let outside = tempfile::tempdir().expect("tempdir");
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "do not read").expect("write");
    let command = format!(
        "cat {} /etc/passwd /proc/1/environ /root/.bashrc 2>&1; ls /home /var /etc 2>&1; cat /proc/self/cgroup",
        secret.display()
    );
    let (outcome, lines, _dir) = run(&command, limits()).await;
    assert!(
        !lines.iter().any(|l| l.contains("do not read") || l.contains("root:x:0")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("No such file")), "{lines:?}");
    assert_eq!(outcome, Outcome::Exited(0));
}

#[tokio::test]
async fn nothing_outside_the_source_can_be_written() {
    let outside = tempfile::tempdir().expect("tempdir");
    let target = outside.path().join("planted");
    let command = format!(
        "touch /usr/planted; echo x > {}; mkdir /planted; echo x > ../planted; ls -d /build/../planted; echo done",
        target.display()
    );
    let (outcome, lines, dir) = run(&command, limits()).await;
    assert_eq!(outcome, Outcome::Exited(0), "{lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("done"));
    assert!(
        !Path::new("/usr/planted").exists() && !target.exists() && !Path::new("/planted").exists()
    );
    assert!(!dir.path().parent().expect("parent").join("planted").exists());
    assert!(lines.iter().any(|l| l.contains("Read-only file system")), "{lines:?}");
}

/// A server on the host's loopback (as Postgres, the API and the IPFS node listen) that counts
/// the connections it gets.
async fn host_listener() -> (u16, tokio::task::JoinHandle<usize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = tokio::spawn(async move {
        let mut accepted = 0;
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), listener.accept()).await
        {
            accepted += 1;
        }
        accepted
    });
    (port, accepted)
}

#[tokio::test]
async fn the_build_has_no_network() {
    let (port, accepted) = host_listener().await;
    let script = format!(
        "const net = require('net'); \
         for (const host of ['127.0.0.1', '::1', '10.0.2.2', '1.1.1.1']) {{ \
           const s = net.connect({{ host, port: {port}, timeout: 2000 }}); \
           s.on('connect', () => console.log('connected', host)); \
           s.on('timeout', () => {{ console.log('timeout', host); s.destroy(); }}); \
           s.on('error', e => console.log('refused', host, e.code)); }}"
    );
    let (outcome, lines, _dir) = run(&format!("node -e \"{script}\""), limits()).await;
    assert_eq!(outcome, Outcome::Exited(0), "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("connected")), "{lines:?}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("refused") || l.starts_with("timeout")).count(),
        4,
        "{lines:?}"
    );
    assert_eq!(accepted.await.expect("listener"), 0, "the host's listener was reached");
}

#[tokio::test]
async fn a_fork_bomb_stops_at_the_process_limit_and_leaves_nothing_running() {
    let limits = Limits { processes: 32, wall: Duration::from_secs(30), ..limits() };
    // The command itself stays (the sleep), so the bomb grows until the sandbox stops it; a
    // command that exits at once ends its pid namespace, bomb and all, before any limit.
    let (outcome, _lines, dir) = run("bomb() { bomb | bomb & }; bomb; sleep 20", limits).await;
    assert_eq!(outcome, Outcome::Limit(Limit::Processes(32)));
    assert_no_process_in(dir.path());
}

#[tokio::test]
async fn an_endless_loop_is_stopped_at_the_time_limits() {
    let wall = Limits { wall: Duration::from_secs(2), ..limits() };
    let (outcome, _, dir) = run("while :; do sleep 0.1; done", wall).await;
    assert_eq!(outcome, Outcome::Limit(Limit::WallTime(Duration::from_secs(2))));
    assert_no_process_in(dir.path());

    let cpu = Limits { cpu: Duration::from_secs(1), ..limits() };
    let (outcome, _, dir) = run("while :; do :; done", cpu).await;
    assert_eq!(outcome, Outcome::Limit(Limit::CpuTime(Duration::from_secs(1))));
    assert_no_process_in(dir.path());
}

#[tokio::test]
async fn memory_past_the_limit_is_refused() {
    let limits = Limits { memory_bytes: 128 * MIB, ..limits() };
    let grow = "node -e \"const a = []; for (let i = 0; i < 64; i++) a.push(Buffer.alloc(8 << 20, 1)); console.log('kept', a.length)\"";
    let (outcome, lines, _dir) = run(grow, limits).await;
    assert_eq!(outcome, Outcome::Limit(Limit::Memory(128 * MIB)), "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("kept")), "{lines:?}");
}

#[tokio::test]
async fn writing_past_the_disk_limit_is_stopped() {
    let limits = Limits { disk_bytes: 8 * MIB, ..limits() };
    // One large file is cut at the limit; many small ones are caught by measuring the folder.
    let (outcome, _, dir) = run("head -c 20000000 /dev/zero > big; echo wrote", limits).await;
    assert_eq!(outcome, Outcome::Limit(Limit::Disk(8 * MIB)));
    let cut = std::fs::metadata(dir.path().join("big")).map(|m| m.len()).unwrap_or(0);
    assert!(cut <= 8 * MIB + 512, "the file was cut just past the limit: {cut}");
    let many = "i=0; while :; do head -c 1000000 /dev/zero > f$i; i=$((i+1)); sleep 0.05; done";
    let (outcome, _, _dir) = run(many, limits).await;
    assert_eq!(outcome, Outcome::Limit(Limit::Disk(8 * MIB)));
    // /tmp is a tmpfs of its own size (16 MiB here): the third file of 6 MB does not fit.
    let fill = "for i in 1 2 3; do head -c 6000000 /dev/zero > /tmp/f$i && echo kept $i || echo full; done";
    let (outcome, lines, _dir) = run(fill, limits).await;
    assert_eq!(outcome, Outcome::Exited(0));
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("kept") || *l == "full").collect::<Vec<_>>(),
        ["kept 1", "kept 2", "full"],
        "{lines:?}"
    );
}

#[tokio::test]
async fn processes_left_in_the_background_are_ended_with_the_run() {
    let (outcome, _, dir) = run("(sleep 300 &) ; setsid sleep 300 & echo started", limits()).await;
    assert_eq!(outcome, Outcome::Exited(0));
    assert_no_process_in(dir.path());
}

#[tokio::test]
async fn a_working_folder_outside_the_source_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, _rx) = mpsc::channel(1);
    let run = Run {
        dir: dir.path(),
        workdir: Path::new("../etc"),
        command: "true",
        env: &[],
        limits: limits(),
        registry: None,
        cache: None,
    };
    let err = sandbox().await.run(run, tx).await.expect_err("refused");
    assert!(matches!(err, decentraspace_sandbox::SandboxError::Folder(_)), "{err:?}");
}

/// No process on the host has the run's folder as its working folder any more (every process of
/// a run starts in `/build`, which is that folder).
fn assert_no_process_in(dir: &Path) {
    let dir: PathBuf = dir.canonicalize().expect("canonical");
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        if let Ok(cwd) = std::fs::read_link(entry.path().join("cwd"))
            && cwd.starts_with(&dir)
        {
            panic!("process {:?} still runs in {}", entry.file_name(), dir.display());
        }
    }
}

/// A stand-in registry on the host's loopback: answers every request with `ok` and counts them.
async fn registry_server() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>)
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = served.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let n = conn.read(&mut request).await.unwrap_or(0);
                let host = String::from_utf8_lossy(&request[..n])
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("Host: ")
                            .or_else(|| l.strip_prefix("host: "))
                            .map(str::to_owned)
                    })
                    .unwrap_or_default();
                let body = format!("ok from the registry, asked as {host}");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, served)
}

#[tokio::test]
async fn a_run_given_a_registry_reaches_it_and_nothing_else() {
    let (registry, served) = registry_server().await;
    let (other, accepted) = host_listener().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = registry.port();
    let script = format!(
        "const http = require('http'), net = require('net'); \
         http.get('http://127.0.0.1:{port}/left-pad', r => {{ let b = ''; r.on('data', d => b += d); r.on('end', () => console.log(r.statusCode, b)); }}) \
           .on('error', e => console.log('registry failed', e.code)); \
         net.connect({{ host: '127.0.0.1', port: {other}, timeout: 2000 }}).on('connect', () => console.log('connected elsewhere')) \
           .on('error', e => console.log('elsewhere refused', e.code));"
    );
    let (tx, mut rx) = mpsc::channel(64);
    let command = format!("node -e \"{script}\"; echo exit $?");
    let run = Run {
        dir: dir.path(),
        workdir: Path::new(""),
        command: &command,
        env: &[],
        limits: limits(),
        registry: Some(registry),
        cache: None,
    };
    let finished = sandbox().await.run(run, tx).await.expect("the run starts");
    let mut lines = Vec::new();
    while let Some(line) = rx.recv().await {
        lines.push(line);
    }
    assert_eq!(finished.outcome, Outcome::Exited(0), "{lines:?}");
    assert!(
        lines.contains(&format!("200 ok from the registry, asked as 127.0.0.1:{port}")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("elsewhere refused")), "{lines:?}");
    assert!(!lines.iter().any(|l| l == "connected elsewhere"), "{lines:?}");
    assert_eq!(
        (finished.registry_connections, served.load(std::sync::atomic::Ordering::SeqCst)),
        (1, 1)
    );
    assert_eq!(accepted.await.expect("listener"), 0);
    assert_no_process_in(dir.path());
}
