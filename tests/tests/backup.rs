//! Backup and restore on the real binaries: `trireme snapshot save` under a
//! running write load, `trireme snapshot status`, a new 3-node cluster seeded
//! with `trireme-server --restore`, and the refusals (a truncated or altered
//! file, a data dir already in use) that must start nothing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use trireme_client::proto::{CommitRequest, Mutation};
use trireme_client::{Client, ReadConsistency, ScanSpec, Versioned};
use trireme_tests::{bin, wait_for, Cluster};

const READY: Duration = Duration::from_secs(30);

/// Every pair of the whole key space at snapshot `at` (page by page), with versions.
async fn scan_all(client: &Client, at: Option<u64>) -> Result<(Vec<Versioned>, u64)> {
    let mut out: Vec<Versioned> = Vec::new();
    let mut seqno = at;
    loop {
        let start = match out.last() {
            Some(last) => {
                let mut k = last.key.clone();
                k.push(0);
                k
            }
            None => Vec::new(),
        };
        let spec = ScanSpec::range(start, Vec::new());
        let (page, more, served) = client
            .scan_pinned(&spec, ReadConsistency::Linearizable, seqno)
            .await?;
        seqno.get_or_insert(served);
        out.extend(page);
        if !more {
            return Ok((out, seqno.expect("set")));
        }
    }
}

/// The `key=value` JSON fields of `trireme snapshot status FILE --json`.
fn file_status(cluster: &Cluster, file: &Path) -> Result<serde_json::Value> {
    let out = cluster.cli(
        1,
        &["--json", "snapshot", "status", &file.display().to_string()],
    )?;
    ensure!(
        out.status.success(),
        "snapshot status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Starts `trireme-server --restore FILE` on `data_dir` and expects it to be
/// refused: a non-zero exit within the deadline, with `expect` in its stderr.
fn expect_refused(file: &Path, data_dir: &Path, expect: &str) -> Result<()> {
    let mut child = Command::new(bin("trireme-server"))
        .args(["--node-id", "1", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .arg("--restore")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > READY {
            child.kill().ok();
            child.wait()?;
            bail!("trireme-server --restore {} did not exit", file.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        !status.success() && status.code() == Some(1),
        "restoring {} should fail with exit 1: {status:?}\n{stderr}",
        file.display()
    );
    ensure!(
        stderr.contains(expect),
        "the refusal should say {expect:?}: {stderr}"
    );
    ensure!(
        !stdout.contains("listening"),
        "a refused restore started serving: {stdout}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_under_load_then_restore_into_a_new_three_node_cluster() -> Result<()> {
    // A wide certification window: the source can still be read at the
    // backup's seqno after the load, to compare.
    let flags = ["--cert-window", "1000000"];
    let source = Cluster::start(3, &flags)?;
    source.wait_leader(&[1, 2, 3], READY).await?;
    let client = source.client(1)?;
    // 30,000 keys of 200 bytes, some overwritten and deleted: a backup of
    // several 1 MiB chunks.
    for chunk in (0..30_000u32).collect::<Vec<_>>().chunks(1000) {
        let mutations = chunk
            .iter()
            .map(|i| Mutation {
                key: format!("data/{i:06}").into_bytes(),
                value: vec![b'a' + (i % 26) as u8; 200],
                delete: false,
                lease: 0,
            })
            .collect();
        client
            .commit(CommitRequest {
                mutations,
                ..Default::default()
            })
            .await?;
    }
    for i in (0..30_000u32).step_by(7) {
        if i % 2 == 0 {
            client.delete(format!("data/{i:06}"), None).await?;
        } else {
            client
                .put(format!("data/{i:06}"), format!("new-{i}"))
                .await?;
        }
        if i > 2000 {
            break;
        }
    }

    // A write load on every node while the backup streams.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let client = source.client(w + 1).expect("client");
            let (stop, acked) = (stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if client.put(format!("load/{w}/{i:06}"), "x").await.is_ok() {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    wait_for("the load to start", READY, || async {
        Ok((acked.load(Ordering::Relaxed) > 50).then_some(()))
    })
    .await?;
    let before = acked.load(Ordering::Relaxed);
    let file = source.dir.path().join("backup.trrm");
    let out = source.cli(2, &["snapshot", "save", &file.display().to_string()])?;
    ensure!(
        out.status.success(),
        "snapshot save failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let during = acked.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await?;
    }
    let saved = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(saved.starts_with("saved "), "{saved}");
    println!("{saved}writes acknowledged while saving: {during}");

    let st = file_status(&source, &file)?;
    let seqno = st["seqno"].as_u64().context("seqno")?;
    let keys = st["keys"].as_u64().context("keys")?;
    let checksum = st["checksum"].as_u64().context("checksum")?;
    ensure!(st["bytes"].as_u64().unwrap_or(0) > 3 << 20, "{st}");
    // The source at the backup's seqno (node 2, which it was saved from).
    let (at_seqno, _) = scan_all(&source.client_only(2)?, Some(seqno)).await?;
    ensure!(
        at_seqno.len() as u64 == keys,
        "{} keys at {seqno} on the source, {keys} in the file",
        at_seqno.len()
    );
    ensure!(
        at_seqno.iter().any(|v| v.key.starts_with(b"load/")),
        "the backup was taken while the load ran: it holds some of its writes"
    );

    // A new cluster from the file: node 1 restored, 2 and 3 join it.
    let mut restored = Cluster::start_restored(&file, &flags)?;
    restored
        .wait_leader(&[1], READY)
        .await
        .with_context(|| restored.logs())?;
    for _ in 0..2 {
        restored.join_node(1, &flags)?;
    }
    let c = restored
        .wait_converged(&[1, 2, 3], Duration::from_secs(60))
        .await
        .with_context(|| restored.logs())?;
    ensure!(
        c == checksum,
        "the restored cluster's checksum {c:#x} differs from the backup's {checksum:#x}"
    );
    for id in 1..=3 {
        let sum = restored.client_only(id)?.checksum().await?;
        ensure!(
            sum.keys == keys && sum.checksum == checksum && sum.seqno > seqno,
            "node {id}: {sum:?}; the backup: seqno {seqno}, {keys} keys, checksum {checksum:#x}"
        );
    }
    let (got, _) = scan_all(&restored.client(1)?, None).await?;
    ensure!(
        got == at_seqno,
        "the restored cluster's pairs differ from the source's at seqno {seqno}"
    );
    // It is a cluster: it takes writes, at seqnos after the backup's.
    let s = restored.client(3)?.put("after/restore", "yes").await?;
    ensure!(s > seqno, "a new write at seqno {s}, not after {seqno}");

    // A quiet source saved again: the file's checksum is the source's own.
    let quiet = source.dir.path().join("quiet.trrm");
    let out = source.cli(1, &["snapshot", "save", &quiet.display().to_string()])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = file_status(&source, &quiet)?;
    let now = source.client_only(1)?.checksum().await?;
    ensure!(
        st["seqno"].as_u64() == Some(now.seqno)
            && st["checksum"].as_u64() == Some(now.checksum)
            && st["keys"].as_u64() == Some(now.keys),
        "file {st}, source {now:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_or_altered_files_and_used_data_dirs_are_refused() -> Result<()> {
    let source = Cluster::start(1, &[])?;
    source.wait_leader(&[1], READY).await?;
    let client = source.client(1)?;
    for i in 0..500 {
        client.put(format!("k/{i:04}"), format!("v{i}")).await?;
    }
    let file = source.dir.path().join("good.trrm");
    let out = source.cli(1, &["snapshot", "save", &file.display().to_string()])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Saving onto an existing file is refused.
    let out = source.cli(1, &["snapshot", "save", &file.display().to_string()])?;
    ensure!(
        out.status.code() == Some(5)
            && String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{out:?}"
    );
    let good = std::fs::read(&file)?;
    let work = tempfile::tempdir()?;

    let truncated = work.path().join("truncated.trrm");
    std::fs::write(&truncated, &good[..good.len() * 2 / 3])?;
    let flipped = work.path().join("flipped.trrm");
    let mut bad = good.clone();
    let at = good.len() / 2;
    bad[at] ^= 0x04;
    std::fs::write(&flipped, &bad)?;

    for (path, cli_says, server_says) in [
        (&truncated, "truncated", "truncated"),
        (&flipped, "corrupt", "corrupt"),
    ] {
        let out = source.cli(1, &["snapshot", "status", &path.display().to_string()])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(5) && stderr.contains(cli_says),
            "snapshot status {}: {:?} {stderr}",
            path.display(),
            out.status
        );
        let data_dir = work.path().join("never-made");
        expect_refused(path, &data_dir, server_says)?;
        ensure!(
            !data_dir.exists(),
            "a refused restore left {}",
            data_dir.display()
        );
    }

    // A data dir in use is refused and left as it was.
    let used = &source.nodes[0].data_dir;
    let before: Vec<_> = std::fs::read_dir(used)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    expect_refused(&file, used, "is not empty")?;
    let after: Vec<_> = std::fs::read_dir(used)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    ensure!(
        before == after,
        "a refused restore changed {}",
        used.display()
    );
    ensure!(
        client
            .get("k/0499", ReadConsistency::Linearizable)
            .await?
            .is_some(),
        "the source still serves"
    );
    Ok(())
}
