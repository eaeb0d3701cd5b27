//! Starting a keeper process and waiting for its `READY <pid>` line.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use super::RuntimeError;
use crate::reaper::KnownChildren;

/// How long a keeper may take to build the sprite and print its first line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `keeper_bin --config config`, with stderr appended to `log`, and waits for its first
/// stdout line. On `READY <pid>` the child is handed to a background task that reaps it.
///
/// The keeper calls `setsid` itself and is never killed on drop: sprites must outlive wispd.
pub async fn start_keeper(
    keeper_bin: &Path,
    config: &Path,
    log: &Path,
    known: &Arc<KnownChildren>,
) -> Result<u32, RuntimeError> {
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| RuntimeError::io(format!("opening {}", log.display()), e))?;
    let mut child = Command::new(keeper_bin)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| RuntimeError::io(format!("starting {}", keeper_bin.display()), e))?;
    let pid = child.id().unwrap_or(0);
    known.insert(pid);
    let Some(stdout) = child.stdout.take() else {
        reap_in_background(child, pid, known.clone(), None);
        return Err(RuntimeError::KeeperStart("no stdout pipe".into()));
    };
    let mut lines = BufReader::new(stdout);
    let mut first = String::new();
    let read = tokio::time::timeout(START_TIMEOUT, lines.read_line(&mut first)).await;
    let outcome = match read {
        Err(_) => {
            // Stuck: it would hold the sprite's resources forever.
            let _ = child.start_kill();
            Err(format!("no answer within {} s", START_TIMEOUT.as_secs()))
        }
        Ok(Err(e)) => Err(format!("reading its stdout: {e}")),
        Ok(Ok(_)) => parse_first_line(&first),
    };
    reap_in_background(child, pid, known.clone(), Some(lines));
    match outcome {
        Ok(init_pid) => {
            tracing::info!(keeper_pid = pid, init_pid, "keeper ready");
            Ok(pid)
        }
        Err(msg) => {
            // Give an exiting keeper a moment to flush its last words to the log.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let tail = log_tail(log, 20);
            Err(RuntimeError::KeeperStart(if tail.is_empty() {
                msg
            } else {
                format!("{msg}; keeper log:\n{tail}")
            }))
        }
    }
}

/// `READY <pid>` → the sprite's init pid; `ERROR <msg>` or anything else → the message.
pub fn parse_first_line(line: &str) -> Result<i64, String> {
    let line = line.trim_end_matches(['\n', '\r']);
    if line.is_empty() {
        return Err("it exited without a word".into());
    }
    if let Some(rest) = line.strip_prefix("READY") {
        return rest
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("malformed READY line {line:?}"));
    }
    if let Some(msg) = line.strip_prefix("ERROR") {
        return Err(msg.trim().to_string());
    }
    Err(format!("unexpected first line {line:?}"))
}

/// Waits on the keeper (so it never lingers as a zombie) and drains its stdout (so it never
/// dies of SIGPIPE if it writes more).
fn reap_in_background(
    mut child: Child,
    pid: u32,
    known: Arc<KnownChildren>,
    stdout: Option<BufReader<tokio::process::ChildStdout>>,
) {
    tokio::spawn(async move {
        if let Some(mut out) = stdout {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink).await;
        }
        match child.wait().await {
            Ok(status) => tracing::info!(keeper_pid = pid, %status, "keeper exited"),
            Err(e) => tracing::warn!(keeper_pid = pid, "waiting for keeper: {e}"),
        }
        known.remove(pid);
    });
}

/// The last `n` lines of a log file, at most 4 KiB, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(4096);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_forms() {
        assert_eq!(parse_first_line("READY 42\n"), Ok(42));
        assert_eq!(
            parse_first_line("ERROR no cgroup\n"),
            Err("no cgroup".to_string())
        );
        assert!(parse_first_line("").is_err());
        assert!(parse_first_line("READY x").is_err());
        assert!(parse_first_line("hello").is_err());
    }

    #[test]
    fn tail_of_log() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.log");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&p, 2), "b\nc");
        assert_eq!(log_tail(&dir.path().join("none"), 2), "");
    }

    #[tokio::test]
    async fn reports_error_line_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("keeper.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'boom detail' >&2\necho 'ERROR cannot mount'\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let known = Arc::new(KnownChildren::default());
        let err = start_keeper(
            &script,
            &dir.path().join("cfg.json"),
            &dir.path().join("k.log"),
            &known,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("cannot mount"), "{err}");
        assert!(err.contains("boom detail"), "{err}");
    }
}
