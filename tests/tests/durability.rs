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
        .args([
            "--listen",
            &addr,
            "--peer-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
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

/// Microseconds since the epoch, from strace's `-ttt` `SECS.MICROS` stamp.
fn stamp_micros(s: &str) -> Option<u64> {
    let (secs, micros) = s.split_once('.')?;
    Some(secs.parse::<u64>().ok()? * 1_000_000 + micros.parse::<u64>().ok()?)
}

/// One syscall of a `strace -f -ttt -yy` trace: when it started and when it
/// returned (the `resumed` line of an `<unfinished ...>` one), its name, its
/// argument text (buffers included) and whether it returned an error.
#[derive(Debug)]
struct Call {
    start: u64,
    end: u64,
    name: String,
    text: String,
    failed: bool,
}

/// The non-negative value a syscall line returned, if it shows one.
fn returned(text: &str) -> Option<u64> {
    text.rsplit_once(") = ")?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn parse_trace(trace: &str) -> Vec<Call> {
    let mut calls: Vec<Call> = Vec::new();
    // pid -> index of its unfinished call.
    let mut open = std::collections::HashMap::<String, usize>::new();
    for line in trace.lines() {
        let mut parts = line.splitn(3, ' ');
        let (Some(pid), Some(ts)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(ts) = stamp_micros(ts) else { continue };
        let rest = parts.next().unwrap_or("").trim_start();
        let ret_failed = |r: &str| {
            r.rsplit_once(") = ")
                .is_some_and(|(_, ret)| ret.trim_start().starts_with('-'))
        };
        if let Some(resumed) = rest.strip_prefix("<... ") {
            if let Some(i) = open.remove(pid) {
                calls[i].end = ts;
                calls[i].failed = ret_failed(resumed);
                calls[i].text.push_str(resumed);
            }
            continue;
        }
        let Some((name, _)) = rest.split_once('(') else {
            continue;
        };
        let unfinished = rest.ends_with("<unfinished ...>");
        calls.push(Call {
            start: ts,
            end: ts,
            name: name.to_string(),
            text: rest.to_string(),
            failed: !unfinished && ret_failed(rest),
        });
        if unfinished {
            open.insert(pid.to_string(), calls.len() - 1);
        }
    }
    calls
}

/// Each acknowledgement follows the fdatasync that covers it, in order: the
/// write's distinct value is written to a log segment, then an fdatasync of
/// the log completes, then the node sends on the client's TCP connection,
/// and only then does the client hold the acknowledgement. A node that
/// acknowledged before (or without) the sync fails this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "flaky after the 2026-11-29 merge: the first value is sometimes not found in any traced log write (3 of ~30 runs, only late in a full run); run with --ignored; TESTING.md"]
async fn each_acknowledgement_is_sent_after_the_fdatasync_that_covers_it() -> Result<()> {
    ensure!(
        Command::new("strace").arg("-V").output().is_ok(),
        "strace is not installed (.ci/run installs it): this check cannot run"
    );
    let dir = tempfile::tempdir()?;
    let trace_path = dir.path().join("trace");
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut strace = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-ttt",
            "-yy",
            "-s",
            "65536",
            "-e",
            "trace=write,writev,pwrite64,pwritev,sendto,sendmsg,fdatasync,fsync",
            "-o",
        ])
        .arg(&trace_path)
        .arg(bin("trireme-server"))
        .args([
            "--listen",
            &addr,
            "--peer-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn strace")?;
    let nonce: u64 = rand::random();
    let result = async {
        let client = Client::new(vec![addr.clone()])?;
        wait_for("the node to serve", Duration::from_secs(20), || async {
            Ok(client.put("warmup", "x").await.ok())
        })
        .await?;
        // (value marker, when the client held the acknowledgement).
        let mut acks = Vec::new();
        for i in 0..20 {
            let marker = format!("durablev{i:03}n{nonce:x}");
            client.put(format!("ordered-{i}"), marker.clone()).await?;
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_micros() as u64;
            acks.push((marker, at));
        }
        // strace writes its log as the calls happen; the last ack's calls are in it
        // once its marker is.
        let last = acks.last().map(|a| a.0.clone()).unwrap_or_default();
        wait_for("strace to record the writes", Duration::from_secs(5), || async {
            Ok(std::fs::read_to_string(&trace_path)?.contains(&last).then_some(()))
        })
        .await?;
        let calls = parse_trace(&std::fs::read_to_string(&trace_path)?);
        let is_write = |c: &Call| matches!(c.name.as_str(), "write" | "writev" | "pwrite64" | "pwritev");
        for (marker, acked_at) in &acks {
            let logged = calls
                .iter()
                .find(|c| is_write(c) && c.text.contains("raft-log/log-") && c.text.contains(marker.as_str()))
                .with_context(|| format!("{marker}: no write of it to a log segment"))?;
            ensure!(!logged.failed, "{marker}: its log write failed: {}", logged.text);
            let sync = calls
                .iter()
                .find(|c| {
                    matches!(c.name.as_str(), "fdatasync" | "fsync")
                        && c.text.contains("raft-log/log-")
                        && c.start >= logged.end
                        && !c.failed
                })
                .with_context(|| format!("{marker}: no fdatasync of the log after its write"))?;
            ensure!(
                sync.end < *acked_at,
                "{marker}: acknowledged at {acked_at} before the fdatasync covering it returned at {}",
                sync.end
            );
            let sent = calls
                .iter()
                .find(|c| {
                    (is_write(c) || c.name.starts_with("send"))
                        && c.text.contains("TCP")
                        && c.start >= sync.end
                })
                .with_context(|| format!("{marker}: nothing sent to a client after its fdatasync"))?;
            ensure!(
                sent.start <= *acked_at,
                "{marker}: the first send after its fdatasync ({}) came after the client held the ack ({acked_at})",
                sent.start
            );
            // Nothing of the answer may have left before the sync: no send to
            // a client between the write's log write and its sync.
            if let Some(before) = calls
                .iter()
                .filter(|c| (is_write(c) || c.name.starts_with("send")) && c.text.contains("TCP"))
                .filter(|c| c.start > logged.end && c.start < sync.end)
                // HTTP/2 PING and WINDOW_UPDATE frames (17 and 13 bytes) carry no answer.
                .find(|c| returned(&c.text).is_none_or(|n| n > 17))
            {
                bail!(
                    "{marker}: a send to a client between its log write and its fdatasync: {}",
                    before.text.chars().take(200).collect::<String>()
                );
            }
        }
        println!(
            "durability order: {} acknowledgements, each after log write -> fdatasync -> send",
            acks.len()
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
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
            "{e:#}\ntrace (first lines):\n{}",
            std::fs::read_to_string(&trace_path)
                .unwrap_or_default()
                .lines()
                .take(40)
                .map(|l| l.chars().take(300).collect::<String>())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}
