//! A run's output, read as lines from its stdout and stderr while it runs.

use tokio::{
    io::{AsyncRead, AsyncReadExt},
    process::Child,
    sync::mpsc,
    task::JoinHandle,
};

/// The longest line passed on; the rest of a longer one is dropped and the cut marked.
pub const MAX_LINE: usize = 4096;

/// Starts reading the child's stdout and stderr into `lines`.
pub(crate) fn pump(child: &mut Child, lines: mpsc::Sender<String>) -> Vec<JoinHandle<()>> {
    let mut pumps = Vec::with_capacity(2);
    if let Some(stdout) = child.stdout.take() {
        pumps.push(tokio::spawn(read_lines(stdout, lines.clone())));
    }
    if let Some(stderr) = child.stderr.take() {
        pumps.push(tokio::spawn(read_lines(stderr, lines)));
    }
    pumps
}

/// Waits until the readers have passed on all the output (the pipes close once every process
/// of the run is gone).
pub(crate) async fn drain(pumps: Vec<JoinHandle<()>>) {
    for pump in pumps {
        let _ = pump.await;
    }
}

/// Splits a stream into lines of at most [`MAX_LINE`] bytes, without ever holding more than
/// that of a line, however long it runs without a newline.
async fn read_lines(mut from: impl AsyncRead + Unpin, to: mpsc::Sender<String>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut line = Vec::with_capacity(256);
    let mut cut = false;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &byte in &buf[..n] {
            if byte == b'\n' {
                send(&to, &mut line, &mut cut).await;
            } else if line.len() < MAX_LINE {
                line.push(byte);
            } else {
                cut = true;
            }
        }
    }
    if !line.is_empty() || cut {
        send(&to, &mut line, &mut cut).await;
    }
}

async fn send(to: &mpsc::Sender<String>, line: &mut Vec<u8>, cut: &mut bool) {
    let mut text = String::from_utf8_lossy(line).trim_end_matches('\r').to_owned();
    if *cut {
        text.push_str(" [line cut]");
    }
    line.clear();
    *cut = false;
    // Nobody listening is no reason to stop the run.
    let _ = to.send(text).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8]) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(16);
        let input = input.to_vec();
        let reader = tokio::spawn(async move { read_lines(input.as_slice(), tx).await });
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        reader.await.expect("reader");
        lines
    }

    #[tokio::test]
    async fn output_is_cut_into_bounded_lines() {
        assert_eq!(lines_of(b"one\r\ntwo\n\nthree").await, ["one", "two", "", "three"]);
        let long = vec![b'x'; MAX_LINE + 10];
        let lines = lines_of(&[long.as_slice(), b"\nnext\n"].concat()).await;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], format!("{} [line cut]", "x".repeat(MAX_LINE)));
        assert_eq!(lines[1], "next");
    }
}
