//! Durable acknowledgement, checked from outside with strace: every
//! acknowledged write is covered by an fdatasync of the Raft log, and
//! concurrent writes share fdatasyncs (group commit).

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use trireme_client::Client;
use trireme_tests::{bin, free_port, wait_for};

/// Counts `fdatasync`/`fsync` calls on the Raft log's segment files in an strace output.
fn log_syncs(trace: &str) -> usize {
    trace
        .lines()
        .filter(|l| {
            (l.contains("fdatasync(") || l.contains("fsync("))
                && l.contains("raft-log/log-")
                && l.contains("= 0")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_follows_an_fdatasync_of_the_log() -> Result<()> {
    ensure!(
        Command::new("strace").arg("-V").output().is_ok(),
        "strace is not installed (.ci/run installs it): this check cannot run"
    );
    let dir = tempfile::tempdir()?;
    let trace_path = dir.path().join("trace");
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-y", "-e", "trace=fdatasync,fsync", "-o"])
        .arg(&trace_path)
        .arg(bin("trireme-server"))
        .args(["--listen", &addr, "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn strace")?;
    let result = async {
        let client = Client::new(vec![addr.clone()])?;
        wait_for("the node to serve", Duration::from_secs(20), || async { Ok(client.put("warmup", "x").await.ok()) }).await?;
        let before = log_syncs(&std::fs::read_to_string(&trace_path)?);

        // Sequential writes: no two can share a sync, so each ack needs its own.
        let sequential = 20;
        for i in 0..sequential {
            client.put(format!("seq-{i}"), "v").await?;
        }
        let after_seq = wait_for("strace to record the syncs", Duration::from_secs(5), || async {
            let n = log_syncs(&std::fs::read_to_string(&trace_path)?);
            Ok((n >= before + sequential).then_some(n))
        })
        .await?;

        // Concurrent writes: group commit covers many with one sync.
        let concurrent = 200;
        let mut tasks = Vec::new();
        for i in 0..concurrent {
            let client = client.clone();
            tasks.push(tokio::spawn(async move { client.put(format!("conc-{i}"), "v").await }));
        }
        for t in tasks {
            t.await??;
        }
        let after_conc = log_syncs(&std::fs::read_to_string(&trace_path)?);
        let shared = after_conc - after_seq;
        println!("log syncs: {sequential} sequential writes -> {} syncs; {concurrent} concurrent writes -> {shared} syncs", after_seq - before);
        ensure!(shared < concurrent / 2, "group commit: {concurrent} concurrent writes took {shared} log syncs");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    // strace -f detaches on exit; stop the server itself: it is strace's child.
    let children = std::fs::read_to_string(format!(
        "/proc/{}/task/{}/children",
        strace.id(),
        strace.id()
    ))
    .unwrap_or_default();
    for pid in children.split_whitespace() {
        Command::new("kill").arg("-KILL").arg(pid).status()?;
    }
    strace.kill().ok();
    strace.wait()?;
    if let Err(e) = result {
        bail!(
            "{e:#}\ntrace:\n{}",
            std::fs::read_to_string(&trace_path)
                .unwrap_or_default()
                .lines()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}
