//! Versioned formats and the replicated parameters that decide verdicts.
//!
//! - `cert_window` is cluster state: fixed at bootstrap by the first leader's
//!   flag, followed (with a warning) by a node started with another value,
//!   changed through the log by `trireme config set`, kept across restarts of
//!   every node and handed to a node that joins by snapshot.
//! - A peer message in a newer format version, or with a tag this version does
//!   not know, is refused with an error that names both versions.
//! - A data directory written by format version 1 (`tests/fixtures/datadir-v1`,
//!   made by `generate_datadir_v1_fixture`) keeps opening and reads back its keys.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use trireme_client::{Client, Error, Isolation, ReadConsistency};
use trireme_proto::v1::raft_client::RaftClient;
use trireme_proto::v1::RaftMessage;
use trireme_server::{Config, Node};
use trireme_tests::inproc::InProcCluster;
use trireme_tests::{wait_for, Cluster};

const READY: Duration = Duration::from_secs(30);

/// `cert_window` lives in the replicated state: a change made with
/// `trireme config set` goes through the log, survives a restart of every
/// node and decides every node's verdict; a snapshot carries it to a joiner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_set_goes_through_the_log_and_survives_a_restart() -> Result<()> {
    // Small snapshots, so that a joining node gets the state by snapshot.
    let mut cluster = Cluster::start(
        3,
        &[
            "--cert-window",
            "1000",
            "--snapshot-every-entries",
            "40",
            "--log-retain-entries",
            "4",
        ],
    )?;
    let ids = [1, 2, 3];
    cluster.wait_leader(&ids, READY).await?;

    eprintln!("phase: the first leader's flag becomes the cluster's cert_window");
    for id in ids {
        let c = cluster.client_only(id)?;
        let endpoint = cluster.endpoints()[(id - 1) as usize].clone();
        let cfg = wait_for("the bootstrap parameters", READY, || async {
            let cfg = c.config_of(&endpoint).await?;
            Ok((cfg.since_seqno > 0).then_some(cfg))
        })
        .await?;
        ensure!(cfg.cert_window == 1000, "node {id}: {cfg:?}");
    }

    eprintln!("phase: a node restarted with another flag warns and follows the cluster");
    cluster.node(3).set_flags(&[("--cert-window", "500")]);
    cluster.restart(3)?;
    let log3 = cluster.node(3).log.clone();
    wait_for("node 3's warning", READY, || async {
        let text = std::fs::read_to_string(&log3)?;
        Ok(text
            .contains("started with cert_window 500 but the cluster's is 1000")
            .then_some(()))
    })
    .await
    .with_context(|| cluster.logs())?;
    let endpoint3 = cluster.endpoints()[2].clone();
    let cfg = wait_for("node 3 to answer", READY, || async {
        Ok(Some(cluster.client_only(3)?.config_of(&endpoint3).await?))
    })
    .await?;
    ensure!(
        (cfg.cert_window, cfg.node_cert_window) == (1000, 500),
        "{cfg:?}"
    );
    cluster.wait_leader(&ids, READY).await?;

    let client = cluster.client(1)?;
    client.put("k", "0").await?;
    let lag = 30;

    eprintln!("phase: a snapshot {lag} seqnos old commits under the window of 1000");
    let old = client.begin(Isolation::Snapshot).await?;
    ensure!(old.get("k").await? == Some(b"0".to_vec()));
    for i in 0..lag {
        client.put(format!("filler{i}"), "x").await?;
    }
    old.put("k", "1")?;
    old.commit()
        .await
        .context("a lag of 30 within a window of 1000")?;

    eprintln!("phase: trireme config set cert_window 20");
    let out = cluster.cli(2, &["config", "set", "cert_window", "20"])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && stdout.starts_with("cert_window 20 (since seqno "),
        "config set: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster.cli(1, &["config", "set", "cert_window", "3"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("must be at least 16"),
        "too small a window: {stderr}"
    );
    let stale = client.begin(Isolation::Snapshot).await?;
    ensure!(stale.get("k").await? == Some(b"1".to_vec()));
    for i in 0..lag {
        client.put(format!("filler{i}"), "y").await?;
    }

    eprintln!("phase: every node restarts and keeps cert_window 20");
    for id in ids {
        cluster.restart(id)?;
    }
    cluster.wait_leader(&ids, READY).await?;
    let out = cluster.cli(1, &["config", "get"])?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(out.status.success(), "config get: {stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    ensure!(lines.len() == 3, "one line per node: {stdout}");
    for (line, endpoint) in lines.iter().zip(cluster.endpoints()) {
        ensure!(
            line.starts_with(&format!("{endpoint}: cert_window 20 (since seqno ")),
            "{stdout}"
        );
    }

    eprintln!("phase: the same lag is now snapshot_too_old on every node");
    stale.put("k", "2")?;
    match stale.commit().await {
        Err(Error::Aborted { kind, .. }) if kind == "snapshot_too_old" => {}
        other => bail!("a lag of {lag} past a window of 20 gave {other:?}"),
    }
    cluster.wait_converged(&ids, READY).await?;
    for id in ids {
        let s = cluster.status(id).await?;
        let too_old = s.cert_failures_by_reason.get("snapshot_too_old").copied();
        ensure!(
            too_old == Some(1),
            "node {id}: {:?}",
            s.cert_failures_by_reason
        );
    }
    let v = client.get("k", ReadConsistency::Linearizable).await?;
    ensure!(
        v.map(|v| v.value) == Some(b"1".to_vec()),
        "the aborted write is absent"
    );

    eprintln!("phase: a node that joins by snapshot gets cert_window 20");
    for i in 0..100 {
        client.put(format!("more{i}"), "z").await?;
    }
    // A joiner is sent a snapshot only once the entries it lacks are gone:
    // wait until every node has purged past the first snapshots (retention
    // runs once a second, so a join right after the writes would still find
    // the whole log and be caught up by replay).
    for id in ids {
        wait_for(
            "the log to be purged behind the snapshots",
            READY,
            || async {
                let s = cluster.status(id).await?;
                Ok((s.log_first_index > 40).then_some(()))
            },
        )
        .await?;
    }
    let joined = cluster.join_node(1, &["--cert-window", "700"])?;
    let endpoint = cluster.endpoints()[(joined - 1) as usize].clone();
    let cfg = wait_for("the joiner to apply the parameters", READY, || async {
        let Ok(c) = cluster.client_only(joined)?.config_of(&endpoint).await else {
            return Ok(None);
        };
        Ok((c.since_seqno > 0).then_some(c))
    })
    .await
    .with_context(|| cluster.logs())?;
    ensure!(
        (cfg.cert_window, cfg.node_cert_window) == (20, 700),
        "{cfg:?}"
    );
    let s = cluster.status(joined).await?;
    ensure!(
        s.snapshots_received >= 1,
        "joined without a snapshot: {s:?}"
    );
    Ok(())
}

/// Sends `payload` as a raw peer message to `addr`'s `Forward` and `AppendEntries`.
async fn send_raw(addr: &str, payload: Vec<u8>) -> Result<Vec<tonic::Status>> {
    let mut client = RaftClient::connect(format!("http://{addr}")).await?;
    let msg = RaftMessage {
        payload,
        ..Default::default()
    };
    let mut out = Vec::new();
    match client.forward(msg.clone()).await {
        Ok(r) => bail!("forward accepted a bad message: {r:?}"),
        Err(s) => out.push(s),
    }
    match client.append_entries(msg).await {
        Ok(r) => bail!("append_entries accepted a bad message: {r:?}"),
        Err(s) => out.push(s),
    }
    Ok(out)
}

fn envelope(version: u16, tag: u16, body: &[u8]) -> Vec<u8> {
    let mut out = b"TRRM".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// A hand-made peer message in format version 9, one with an unknown tag and
/// one without the header are each refused with an error saying why; the node
/// stays up and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_messages_in_a_newer_format_are_refused_naming_both_versions() -> Result<()> {
    let cluster = InProcCluster::start(1, |_| {}).await?;
    cluster.wait_leader(READY).await?;
    let addr = cluster.nodes[&1].peer_addr.clone();
    let version = trireme_server::codec::FORMAT_VERSION;

    for status in send_raw(&addr, envelope(9, 70, b"whatever")).await? {
        let m = status.message();
        ensure!(status.code() == tonic::Code::InvalidArgument, "{status:?}");
        ensure!(
            m.contains("format version 9") && m.contains(&format!("version {version}")),
            "{m}"
        );
    }
    for status in send_raw(&addr, envelope(version, 999, b"")).await? {
        ensure!(status.message().contains("unknown tag 999"), "{status:?}");
    }
    // A well-formed envelope holding another message is not misread.
    for status in send_raw(&addr, envelope(version, 66, b"")).await? {
        ensure!(status.message().contains("VoteRequest"), "{status:?}");
    }
    for status in send_raw(&addr, b"not a trireme message".to_vec()).await? {
        ensure!(
            status.message().contains("not in a Trireme format"),
            "{status:?}"
        );
    }
    let client = cluster.client(1)?;
    client.put("still", "up").await?;
    cluster.shutdown().await
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/datadir-v1")
}

/// What the generator writes and the fixture test expects back.
const FIXTURE_KEYS: &[(&str, Option<&str>)] = &[
    ("fixture/a", Some("alpha-2")),
    ("fixture/b", None),
    ("fixture/c", Some("gamma")),
    ("fixture/d", Some("delta")),
];
const FIXTURE_CERT_WINDOW: u64 = 777;

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Starts a single node on `data_dir`, serving on a port-0 listener.
async fn start_on(
    data_dir: &Path,
    cert_window: u64,
) -> Result<(
    std::sync::Arc<Node>,
    String,
    tokio::sync::oneshot::Sender<()>,
)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let peer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let config = Config {
        node_id: 1,
        listen: addr.clone(),
        peer_listen: peer_listener.local_addr()?.to_string(),
        data_dir: data_dir.to_path_buf(),
        snapshot_every_entries: 5,
        log_retain_entries: 2,
        cert_window,
        ..Config::default()
    };
    let node = Node::start(config).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn({
        let node = node.clone();
        async move {
            let _ = trireme_server::server::serve(node, listener, peer_listener, async {
                let _ = stop_rx.await;
            })
            .await;
        }
    });
    Ok((node, addr, stop_tx))
}

/// Writes `tests/fixtures/datadir-v1` (run it by hand when the format version
/// changes, then keep the old fixture too):
/// `TRIREME_WRITE_FIXTURE=1 cargo test -p trireme-tests --test formats -- --ignored generate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the checked-in fixture; run by hand"]
async fn generate_datadir_v1_fixture() -> Result<()> {
    ensure!(
        std::env::var_os("TRIREME_WRITE_FIXTURE").is_some(),
        "set TRIREME_WRITE_FIXTURE=1 to overwrite {}",
        fixture_dir().display()
    );
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("node1");
    let (node, addr, stop_tx) = start_on(&data, FIXTURE_CERT_WINDOW).await?;
    let client = Client::new(vec![addr])?;
    wait_for("the node to take writes", READY, || async {
        Ok(client.put("fixture/a", "alpha-1").await.ok())
    })
    .await?;
    client.put("fixture/b", "beta").await?;
    client.put("fixture/c", "gamma").await?;
    client.delete("fixture/b", None).await?;
    client.put("fixture/a", "alpha-2").await?;
    let t = client.begin(Isolation::Serializable).await?;
    ensure!(t.get("fixture/c").await? == Some(b"gamma".to_vec()));
    t.put("fixture/d", "delta")?;
    t.commit().await?;
    // Enough entries for a snapshot file and a purged log prefix.
    wait_for("a snapshot", READY, || async {
        Ok(node.raft_metrics().snapshot.map(|_| ()))
    })
    .await?;
    let _ = stop_tx.send(());
    node.shutdown().await?;
    drop(node);
    let out = fixture_dir();
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    copy_dir(&data, &out)?;
    Ok(())
}

/// The checked-in data directory of format version 1 opens, reads back the
/// keys it was written with and the cluster's cert_window, and takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v1_fixture_data_dir_keeps_opening() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("node1");
    copy_dir(&fixture_dir(), &data).context("copy the fixture")?;
    // Another flag than the fixture's: the window read back is the stored one.
    let (node, addr, stop_tx) = start_on(&data, 5000).await?;
    let client = Client::new(vec![addr.clone()])?;
    for (key, want) in FIXTURE_KEYS {
        let got = wait_for("the fixture's node to answer", READY, || async {
            Ok(Some(client.get(key, ReadConsistency::Linearizable).await?))
        })
        .await?;
        let got = got.map(|v| String::from_utf8_lossy(&v.value).to_string());
        ensure!(got.as_deref() == *want, "{key}: {got:?}, expected {want:?}");
    }
    let cfg = client.config_of(&addr).await?;
    ensure!(
        cfg.cert_window == FIXTURE_CERT_WINDOW && cfg.since_seqno > 0,
        "{cfg:?}"
    );
    client.put("fixture/e", "epsilon").await?;
    let _ = stop_tx.send(());
    node.shutdown().await?;
    Ok(())
}
