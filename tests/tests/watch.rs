//! Watch on real processes: a prefix watched on node 2 while nodes 1 and 3
//! write; a watch resumed on another node after its node was killed; a
//! watch from below the history horizon; the CLI's `watch`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use trireme_client::{Client, Error, WatchEvent, WatchMessage, WatchOptions, WatchTarget};
use trireme_tests::{bin, Cluster};

const READY: Duration = Duration::from_secs(30);
const DEADLINE: Duration = Duration::from_secs(60);

type Watch =
    std::pin::Pin<Box<dyn futures::Stream<Item = trireme_client::Result<WatchMessage>> + Send>>;

fn watch(client: &Client, prefix: &str, start: Option<u64>) -> Watch {
    Box::pin(client.watch(
        WatchTarget::Prefix(prefix.as_bytes().to_vec()),
        WatchOptions {
            start_seqno: start,
            prev_value: true,
            progress_interval: Some(Duration::from_millis(200)),
        },
    ))
}

/// A change as the test expects it: seqno, key, new value, previous value.
type Expected = (u64, Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>);

/// Reads the watch until `want` events arrived (checking the messages'
/// seqnos never go back), within the deadline.
async fn collect(w: &mut Watch, want: usize, seen: &mut Vec<WatchEvent>) -> Result<u64> {
    let mut last = 0;
    tokio::time::timeout(DEADLINE, async {
        while seen.len() < want {
            match w.next().await {
                None => bail!("the watch ended"),
                Some(Err(e)) => return Err(anyhow::Error::new(e).context("the watch failed")),
                Some(Ok(msg)) => {
                    ensure!(
                        msg.seqno() >= last,
                        "seqno went back: {} after {last}",
                        msg.seqno()
                    );
                    last = msg.seqno();
                    if let WatchMessage::Events { events, seqno } = msg {
                        for e in &events {
                            ensure!(
                                e.version <= seqno,
                                "event {e:?} above its message's seqno {seqno}"
                            );
                        }
                        seen.extend(events);
                    }
                }
            }
        }
        Ok(last)
    })
    .await
    .context("waiting for watch events")?
}

/// Events are in (seqno, key) order with no (seqno, key) twice.
fn check_order(events: &[WatchEvent]) -> Result<()> {
    for pair in events.windows(2) {
        ensure!(
            (pair[0].version, &pair[0].key) < (pair[1].version, &pair[1].key),
            "out of order or repeated: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prefix_watched_on_one_node_sees_every_write_of_the_others_in_order() -> Result<()> {
    let cluster = Cluster::start(3, &[])?;
    cluster.wait_leader(&[1, 2, 3], READY).await?;
    let watcher = cluster.client_only(2)?;
    let mut w = watch(&watcher, "w/", None);
    // The first message says where the watch starts.
    let start = match tokio::time::timeout(DEADLINE, w.next()).await? {
        Some(Ok(WatchMessage::Progress { seqno })) => seqno,
        other => bail!("expected the start notice, got {other:?}"),
    };

    // Writes on nodes 1 and 3: puts, overwrites, deletes, and keys outside.
    let (c1, c3) = (cluster.client_only(1)?, cluster.client_only(3)?);
    let mut expected: Vec<Expected> = Vec::new();
    let mut current: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for i in 0..40u32 {
        let client = if i % 2 == 0 { &c1 } else { &c3 };
        let key = format!("w/k{}", i % 7).into_bytes();
        client.put(b"other/x".to_vec(), b"ignored".to_vec()).await?;
        if i % 5 == 4 {
            let seqno = client.delete(key.clone(), None).await?;
            let prev = current.remove(&key);
            expected.push((seqno, key, None, prev));
        } else {
            let value = format!("v{i}").into_bytes();
            let seqno = client.put(key.clone(), value.clone()).await?;
            let prev = current.insert(key.clone(), value.clone());
            expected.push((seqno, key, Some(value), prev));
        }
    }
    let mut seen = Vec::new();
    collect(&mut w, expected.len(), &mut seen).await?;
    check_order(&seen)?;
    ensure!(
        seen.iter().all(|e| e.version > start),
        "an event at or below the start {start}"
    );
    let got: Vec<_> = seen
        .iter()
        .map(|e| {
            (
                e.version,
                e.key.clone(),
                e.value.clone(),
                e.prev.as_ref().map(|(_, v)| v.clone()),
            )
        })
        .collect();
    ensure!(
        got == expected,
        "watch saw\n{got:?}\nexpected\n{expected:?}"
    );
    // Idle: progress notifications carry the node's applied seqno.
    let last = expected.last().map(|e| e.0).unwrap_or(0);
    let progress = tokio::time::timeout(DEADLINE, async {
        loop {
            match w.next().await {
                Some(Ok(WatchMessage::Progress { seqno })) if seqno >= last => return Ok(seqno),
                Some(Ok(WatchMessage::Progress { .. })) => {}
                other => bail!("expected progress, got {other:?}"),
            }
        }
    })
    .await??;
    ensure!(progress >= last);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_resumes_on_another_node_without_loss_or_repeat() -> Result<()> {
    let mut cluster = Cluster::start(3, &[])?;
    cluster.wait_leader(&[1, 2, 3], READY).await?;
    let writer = cluster.client(1)?;
    let first = writer.put("r/0", "0").await?;
    // Watch from node 3 first (the client fails over to 1 and 2).
    let watcher = cluster.client(3)?;
    let mut w = watch(&watcher, "r/", Some(first));
    let mut seen = Vec::new();
    collect(&mut w, 1, &mut seen).await?;

    // Keep writing while node 3 dies.
    let writes = tokio::spawn({
        let writer = cluster.client(1)?;
        async move {
            let mut seqnos = Vec::new();
            for i in 1..=60u32 {
                seqnos.push(writer.put(format!("r/{i}"), i.to_string()).await?);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(seqnos)
        }
    });
    collect(&mut w, 10, &mut seen).await?;
    cluster.kill(3)?;
    let seqnos = writes.await??;
    collect(&mut w, 61, &mut seen).await?;
    check_order(&seen)?;
    let keys: Vec<String> = seen
        .iter()
        .map(|e| String::from_utf8_lossy(&e.key).into_owned())
        .collect();
    let want: Vec<String> = (0..=60).map(|i| format!("r/{i}")).collect();
    ensure!(keys == want, "resumed watch saw {keys:?}");
    let versions: Vec<u64> = seen.iter().skip(1).map(|e| e.version).collect();
    ensure!(
        versions == seqnos,
        "versions {versions:?} != write seqnos {seqnos:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_below_the_history_horizon_fails_as_compacted() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("gc.toml");
    std::fs::write(&config, "cert_window = 16\ngc_interval_ms = 50\n")?;
    let config = config.display().to_string();
    let cluster = Cluster::start(3, &["--config", &config])?;
    cluster.wait_leader(&[1, 2, 3], READY).await?;
    let client = cluster.client_only(1)?;
    let mut last = 0;
    for i in 0..80u32 {
        last = client.put(format!("c/{}", i % 3), i.to_string()).await?;
    }
    // Once GC has run, seqno 1 is gone: a clear error naming the horizon.
    let horizon = trireme_tests::wait_for("a compacted error", DEADLINE, || {
        let client = client.clone();
        async move {
            let mut w = watch(&client, "c/", Some(1));
            match tokio::time::timeout(DEADLINE, w.next()).await? {
                Some(Err(Error::Compacted { horizon, message })) => {
                    ensure!(
                        message.contains(&format!("compacted at seqno {horizon}")),
                        "{message}"
                    );
                    Ok(Some(horizon))
                }
                Some(Ok(_)) => Ok(None),
                other => bail!("expected compacted, got {other:?}"),
            }
        }
    })
    .await?;
    ensure!(
        horizon > 1 && horizon < last,
        "horizon {horizon}, last write {last}"
    );
    // From the horizon + 1, every later change arrives, none below it. The
    // horizon may still rise meanwhile (GC runs every 50 ms, and a follower
    // catching up raises it): a watch that starts above a horizon that has
    // since moved fails as compacted again, naming the new one, before any
    // event; it is then started above that one.
    let mut horizon = horizon;
    let mut w = watch(&client, "c/", Some(horizon + 1));
    let mut seen: Vec<WatchEvent> = Vec::new();
    while seen.last().is_none_or(|e| e.version < last) {
        let n = seen.len() + 1;
        if let Err(e) = collect(&mut w, n, &mut seen).await {
            match e.downcast_ref::<Error>() {
                Some(Error::Compacted { horizon: h, .. }) if seen.is_empty() && *h > horizon => {
                    horizon = *h;
                    w = watch(&client, "c/", Some(horizon + 1));
                }
                _ => return Err(e),
            }
        }
    }
    check_order(&seen)?;
    ensure!(
        seen.len() >= 2,
        "too few changes above the horizon: {seen:?}"
    );
    ensure!(seen.first().is_some_and(|e| e.version > horizon));
    ensure!(seen.last().is_some_and(|e| e.version == last));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_prints_one_change_a_line() -> Result<()> {
    let cluster = Cluster::start(3, &[])?;
    cluster.wait_leader(&[1, 2, 3], READY).await?;
    let client = cluster.client(1)?;
    let first = client.put("cli/a", "1").await?;
    client.put("cli/b", "two words").await?;
    client.delete("cli/a", None).await?;
    let mut eps = cluster.endpoints();
    eps.rotate_left(1);
    let mut child = Command::new(bin("trireme"))
        .arg("--endpoints")
        .arg(eps.join(","))
        .args([
            "watch",
            "--prefix",
            "cli/",
            "--from-seqno",
            &first.to_string(),
            "--limit",
            "4",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut got = Vec::new();
    for _ in 0..3 {
        let line = tokio::time::timeout(DEADLINE, lines.next_line()).await??;
        got.push(line.context("watch output ended")?);
    }
    let last = client.put("cli/c", "x\ny").await?;
    got.push(
        tokio::time::timeout(DEADLINE, lines.next_line())
            .await??
            .context("ended")?,
    );
    let status = tokio::time::timeout(DEADLINE, child.wait()).await??;
    ensure!(status.success(), "watch exited with {status}");
    ensure!(got[0] == format!("PUT {first} cli/a 1"), "{got:?}");
    ensure!(
        got[1].starts_with("PUT ") && got[1].ends_with(" cli/b two words"),
        "{got:?}"
    );
    ensure!(
        got[2].starts_with("DELETE ") && got[2].ends_with(" cli/a"),
        "{got:?}"
    );
    ensure!(got[3] == format!("PUT {last} cli/c x\\ny"), "{got:?}");

    // --json, binary-safe.
    let out = Command::new(bin("trireme"))
        .arg("--endpoints")
        .arg(eps.join(","))
        .args([
            "--json",
            "watch",
            "cli/c",
            "--from-seqno",
            &last.to_string(),
            "--limit",
            "1",
        ])
        .output();
    let out = tokio::time::timeout(DEADLINE, out).await??;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("json: {}", String::from_utf8_lossy(&out.stdout)))?;
    ensure!(
        v["type"] == "put" && v["key"] == "cli/c" && v["value"] == "x\ny" && v["seqno"] == last,
        "{v}"
    );
    Ok(())
}
