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
        // strace can lag behind the node on a loaded machine (see below).
        let after_seq = wait_for("strace to record the syncs", Duration::from_secs(30), || async {
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

/// The lines of `trace` that strace has finished writing.
fn complete_lines(trace: &str) -> &str {
    trace.rfind('\n').map_or("", |end| &trace[..end])
}

/// Splits a `strace -f -ttt` line into its pid, its stamp and the rest.
/// strace pads the pid to five columns (`%-5u `), so a pid below 10000 is
/// followed by more than one space: the fields are separated by runs of spaces.
fn split_line(line: &str) -> Option<(&str, u64, &str)> {
    let (pid, rest) = line.trim_start().split_once(' ')?;
    let (ts, rest) = rest.trim_start().split_once(' ')?;
    pid.parse::<u32>().ok()?;
    Some((pid, stamp_micros(ts)?, rest.trim_start()))
}

/// The calls of a trace. A line whose pid and stamp cannot be read is an
/// error, not skipped: a format this parser misreads must fail the test, not
/// hide the calls it cannot see (it once hid every call of threads whose ids
/// were below 10000). Only a last line still being written may be cut short.
fn parse_trace(trace: &str) -> Result<Vec<Call>> {
    let mut calls: Vec<Call> = Vec::new();
    // pid -> index of its unfinished call.
    let mut open = std::collections::HashMap::<String, usize>::new();
    for line in complete_lines(trace).lines() {
        let (pid, ts, rest) = split_line(line)
            .with_context(|| format!("a trace line without pid and stamp: {line:.200}"))?;
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
    Ok(calls)
}

/// Whether `calls` hold a log write of `marker`, then a log sync, then a send
/// on a TCP socket (whatever their order relative to any acknowledgement).
fn sequence_recorded(calls: &[Call], marker: &str) -> bool {
    let is_write =
        |c: &Call| matches!(c.name.as_str(), "write" | "writev" | "pwrite64" | "pwritev");
    let Some(logged) = calls
        .iter()
        .find(|c| is_write(c) && c.text.contains("raft-log/log-") && c.text.contains(marker))
    else {
        return false;
    };
    let Some(sync) = calls.iter().find(|c| {
        matches!(c.name.as_str(), "fdatasync" | "fsync")
            && c.text.contains("raft-log/log-")
            && c.start >= logged.end
    }) else {
        return false;
    };
    calls.iter().any(|c| {
        (is_write(c) || c.name.starts_with("send")) && c.text.contains("TCP") && c.start >= sync.end
    })
}

/// strace pads pids to five columns: threads with ids below 10000 (any
/// process once pids wrap around, `kernel.pid_max` is 32768 here) have their
/// calls after several spaces, and they must be read like the others; a line
/// the parser cannot read is an error; a last line being written is left out.
#[test]
fn trace_lines_of_short_and_long_pids_are_all_read() -> Result<()> {
    let trace = concat!(
        "13    1796007491.827077 write(11</d/raft-log/log-0.seg>, \"durablev000\", 11) = 11\n",
        "123456 1796007491.827183 fdatasync(11</d/raft-log/log-0.seg> <unfinished ...>\n",
        "9     1796007491.827200 sendto(7<TCP:[1->2]>, \"ack\", 3, 0, NULL, 0) = 3\n",
        "123456 1796007491.828000 <... fdatasync resumed>) = 0\n",
        "20001 1796007491.829000 write(11</d/raft-log/log-0.seg>, \"x\", 1) = -1 EIO (Input/output error)\n",
        "13    1796007491.830000 --- SIGCHLD {si_signo=SIGCHLD} ---\n",
        "13    1796007491.831000 write(11</d/raft-log/log-0.seg>, \"cut sh",
    );
    let calls = parse_trace(trace)?;
    let summary: Vec<_> = calls
        .iter()
        .map(|c| (c.name.as_str(), c.start, c.end, c.failed))
        .collect();
    assert_eq!(
        summary,
        [
            ("write", 1796007491827077, 1796007491827077, false),
            ("fdatasync", 1796007491827183, 1796007491828000, false),
            ("sendto", 1796007491827200, 1796007491827200, false),
            ("write", 1796007491829000, 1796007491829000, true),
        ]
    );
    assert!(calls[0].text.contains("durablev000"));
    let err = parse_trace("13    1796007491.8 write(1, \"a\", 1) = 1\nwrite(1, \"b\", 1) = 1\n")
        .expect_err("a line without pid and stamp is an error");
    assert!(
        format!("{err:#}").contains("without pid and stamp"),
        "{err:#}"
    );
    Ok(())
}

/// Each acknowledgement follows the fdatasync that covers it, in order: the
/// write's distinct value is written to a log segment, then an fdatasync of
/// the log completes, then the node sends on the client's TCP connection,
/// and only then does the client hold the acknowledgement. A node that
/// acknowledged before (or without) the sync fails this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
        // strace writes a call's line when it gets to it, which lags behind the
        // node when the machine is loaded: wait until the last value's log
        // write, a log sync after it and a send after that are all in the trace
        // (it once failed with the send not yet written when only the write was
        // waited for). How long strace takes is not what this test checks.
        let last = acks.last().map(|a| a.0.clone()).unwrap_or_default();
        wait_for("strace to record the last write, its sync and a send", Duration::from_secs(30), || async {
            let calls = parse_trace(&std::fs::read_to_string(&trace_path)?)?;
            Ok(sequence_recorded(&calls, &last).then_some(()))
        })
        .await?;
        let calls = parse_trace(&std::fs::read_to_string(&trace_path)?)?;
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
