//! Leases on real processes: a key put with a short lease disappears on all
//! three nodes at the same seqno; a kept-alive lease outlives several TTLs;
//! revoke deletes its keys at once; attaching a key to an unknown lease is
//! refused; killing the leader does not expire a lease early; the CLI's
//! `lease` commands and `put --lease`.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::StreamExt;
use trireme_client::{
    Client, ReadConsistency, WatchEvent, WatchMessage, WatchOptions, WatchTarget,
};
use trireme_tests::{wait_for, Cluster};

const READY: Duration = Duration::from_secs(30);
const DEADLINE: Duration = Duration::from_secs(60);

type Watch =
    std::pin::Pin<Box<dyn futures::Stream<Item = trireme_client::Result<WatchMessage>> + Send>>;

fn watch_from(client: &Client, prefix: &str, start: u64) -> Watch {
    Box::pin(client.watch(
        WatchTarget::Prefix(prefix.as_bytes().to_vec()),
        WatchOptions {
            start_seqno: Some(start),
            prev_value: false,
            progress_interval: Some(Duration::from_millis(200)),
        },
    ))
}

/// Reads `w` until a delete of `key` arrives; returns every event seen up to it.
async fn until_deleted(w: &mut Watch, key: &[u8]) -> Result<Vec<WatchEvent>> {
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        loop {
            match w.next().await {
                None => bail!("the watch ended"),
                Some(Err(e)) => bail!("the watch failed: {e}"),
                Some(Ok(WatchMessage::Events { events, .. })) => {
                    let done = events.iter().any(|e| e.key == key && e.value.is_none());
                    seen.extend(events);
                    if done {
                        return Ok(seen);
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .context("waiting for the lease's key to be deleted")?
}

/// The seqno of the delete of `key` among `events`.
fn delete_seqno(events: &[WatchEvent], key: &[u8]) -> Option<u64> {
    events
        .iter()
        .find(|e| e.key == key && e.value.is_none())
        .map(|e| e.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_expire_everywhere_at_one_seqno_keep_alive_and_revoke() -> Result<()> {
    let cluster = Cluster::start(3, &[])?;
    cluster.wait_leader(&[1, 2, 3], READY).await?;
    let c1 = cluster.client_only(1)?;

    // A 2 s lease from node 1, a key attached to it and one that is not.
    let granted_at = Instant::now();
    let (id, ttl) = c1.lease_grant(2, 0).await?;
    ensure!(id > 0 && ttl == 2, "granted {id} with TTL {ttl}");
    let put = c1
        .put_with_lease(b"l/short".to_vec(), b"v".to_vec(), id)
        .await?;
    c1.put(b"l/plain".to_vec(), b"v".to_vec()).await?;
    let info = c1
        .lease_time_to_live(id, true)
        .await?
        .context("the lease exists")?;
    ensure!(
        info.keys == vec![b"l/short".to_vec()],
        "attached keys {:?}",
        info.keys
    );
    ensure!(
        info.granted_ttl == 2 && (1..=2).contains(&info.remaining_ttl),
        "{info:?}"
    );

    // Every node's watch sees the delete, at the same seqno.
    let mut deletes = Vec::new();
    for node in 1..=3u64 {
        let mut w = watch_from(&cluster.client_only(node)?, "l/", put);
        let events = until_deleted(&mut w, b"l/short").await?;
        let seqno = delete_seqno(&events, b"l/short").context("a delete")?;
        ensure!(
            !events
                .iter()
                .any(|e| e.key == b"l/plain" && e.value.is_none()),
            "node {node} deleted the key without a lease: {events:?}"
        );
        deletes.push(seqno);
    }
    ensure!(
        granted_at.elapsed() >= Duration::from_secs(2),
        "the lease expired before its TTL: {:?}",
        granted_at.elapsed()
    );
    ensure!(
        deletes.iter().all(|s| *s == deletes[0]) && deletes[0] > put,
        "the delete's seqno per node: {deletes:?} (put at {put})"
    );
    for node in 1..=3u64 {
        let c = cluster.client_only(node)?;
        ensure!(c
            .get(b"l/short", ReadConsistency::Linearizable)
            .await?
            .is_none());
        ensure!(c
            .get(b"l/plain", ReadConsistency::Linearizable)
            .await?
            .is_some());
    }
    ensure!(
        !c1.lease_list().await?.contains(&id),
        "the lease is still listed"
    );
    ensure!(c1.lease_time_to_live(id, false).await?.is_none());
    ensure!(
        c1.lease_keep_alive(id).await? == 0,
        "a keep-alive found the expired lease"
    );

    // A kept-alive lease (keep-alives through node 3, the key put through
    // node 2) outlives several TTLs.
    let (c2, c3) = (cluster.client_only(2)?, cluster.client_only(3)?);
    let (kept, _) = c2.lease_grant(2, 4242).await?;
    ensure!(kept == 4242, "asked for id 4242, got {kept}");
    c2.put_with_lease(b"l/kept".to_vec(), b"v".to_vec(), kept)
        .await?;
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        ensure!(
            c3.lease_keep_alive(kept).await? == 2,
            "keep-alive lost the lease"
        );
        ensure!(
            c1.get(b"l/kept", ReadConsistency::Linearizable)
                .await?
                .is_some(),
            "a kept-alive lease's key disappeared"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Revoke (from node 1) deletes its keys at once, on every node.
    let revoked = c1.lease_revoke(kept).await?;
    for node in 1..=3u64 {
        let c = cluster.client_only(node)?;
        ensure!(
            c.get(b"l/kept", ReadConsistency::Linearizable)
                .await?
                .is_none(),
            "node {node} still has the revoked lease's key"
        );
    }
    ensure!(c3.lease_time_to_live(kept, false).await?.is_none());
    let err = c1.lease_revoke(kept).await.expect_err("revoked twice");
    ensure!(err.to_string().contains("lease 4242 not found"), "{err}");
    ensure!(revoked > put);

    // Attaching to a lease that does not exist is refused, with nothing written.
    let err = c2
        .put_with_lease(b"l/orphan".to_vec(), b"v".to_vec(), 999)
        .await
        .expect_err("a put with an unknown lease");
    ensure!(err.to_string().contains("lease 999 not found"), "{err}");
    ensure!(c2
        .get(b"l/orphan", ReadConsistency::Linearizable)
        .await?
        .is_none());
    // A lease id in use, a TTL out of range.
    c1.lease_grant(30, 77).await?;
    let err = c3.lease_grant(30, 77).await.expect_err("id 77 twice");
    ensure!(err.to_string().contains("lease 77 already exists"), "{err}");
    let err = c3.lease_grant(0, 0).await.expect_err("TTL 0");
    ensure!(err.to_string().contains("out of range"), "{err}");
    ensure!(c1.lease_list().await? == vec![77], "leases left");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_does_not_expire_a_lease_early() -> Result<()> {
    let mut cluster = Cluster::start(3, &[])?;
    let leader = cluster.wait_leader(&[1, 2, 3], READY).await?;
    let follower = if leader == 1 { 2 } else { 1 };
    let other = 6 - leader - follower;
    let c = cluster.client_only(follower)?;
    // 6 s: longer than an election (timeouts of 0.5-1 s).
    let (id, _) = c.lease_grant(6, 0).await?;
    c.put_with_lease(b"f/k".to_vec(), b"v".to_vec(), id).await?;
    // Kept alive through the follower (forwarded to the leader), then the
    // leader dies at once: its deadline is lost with it.
    ensure!(c.lease_keep_alive(id).await? == 6);
    cluster.kill(leader)?;
    let killed = Instant::now();
    let new_leader = cluster.wait_leader(&[follower, other], READY).await?;
    ensure!(new_leader != leader);
    // The new leader gives the lease a whole TTL from when it took over:
    // the key lives at least 6 s after the kill.
    let survivors = [cluster.client_only(follower)?, cluster.client_only(other)?];
    while killed.elapsed() < Duration::from_millis(5_800) {
        for s in &survivors {
            ensure!(
                s.get(b"f/k", ReadConsistency::Local).await?.is_some(),
                "the lease expired {:?} after the leader was killed (TTL 6 s)",
                killed.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And it does expire, without keep-alives, on both survivors.
    for s in &survivors {
        wait_for("the lease's key to be deleted", DEADLINE, || async {
            Ok(s.get(b"f/k", ReadConsistency::Linearizable)
                .await?
                .is_none()
                .then_some(()))
        })
        .await?;
    }
    ensure!(killed.elapsed() >= Duration::from_secs(6));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_grants_attaches_shows_keeps_alive_lists_and_revokes() -> Result<()> {
    let cluster = Cluster::start(3, &[])?;
    cluster.wait_leader(&[1, 2, 3], READY).await?;
    let run = |first: u64, args: &[&str]| -> Result<(i32, String, String)> {
        let out = cluster.cli(first, args)?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (code, out, err) = run(1, &["lease", "grant", "30", "--id", "77"])?;
    ensure!(
        code == 0 && out == "lease 77 granted with TTL 30s\n",
        "{code} {out} {err}"
    );
    let (code, out, err) = run(2, &["put", "c/k", "v", "--lease", "77"])?;
    ensure!(code == 0 && out.starts_with("OK "), "{code} {out} {err}");
    let (code, out, err) = run(3, &["lease", "timetolive", "77", "--keys"])?;
    ensure!(
        code == 0
            && out.starts_with("lease 77 granted with TTL 30s, remaining ")
            && out.ends_with(", attached keys [c/k]\n"),
        "{code} {out} {err}"
    );
    let (code, out, err) = run(2, &["lease", "keep-alive", "77", "--once"])?;
    ensure!(
        code == 0 && out == "lease 77 kept alive with TTL 30s\n",
        "{code} {out} {err}"
    );
    let (code, out, err) = run(1, &["lease", "list"])?;
    ensure!(code == 0 && out == "77\n", "{code} {out} {err}");
    let (code, out, err) = run(1, &["--json", "lease", "timetolive", "77"])?;
    let v: serde_json::Value = serde_json::from_str(out.trim()).context(out.clone())?;
    ensure!(
        code == 0 && v["id"] == 77 && v["granted_ttl"] == 30,
        "{code} {out} {err}"
    );
    let (code, _, err) = run(1, &["put", "c/x", "v", "--lease", "99"])?;
    ensure!(
        code != 0 && err.contains("lease 99 not found"),
        "{code} {err}"
    );
    let (code, out, err) = run(3, &["lease", "revoke", "77"])?;
    ensure!(
        code == 0 && out.starts_with("lease 77 revoked at seqno "),
        "{code} {out} {err}"
    );
    let (code, out, _) = run(1, &["get", "c/k"])?;
    ensure!(
        code == 1 && out.is_empty(),
        "the revoked lease's key: {code} {out}"
    );
    let (code, _, err) = run(2, &["lease", "timetolive", "77"])?;
    ensure!(
        code == 1 && err.contains("lease 77 not found"),
        "{code} {err}"
    );
    let (code, _, err) = run(2, &["lease", "keep-alive", "77", "--once"])?;
    ensure!(
        code == 1 && err.contains("lease 77 not found"),
        "{code} {err}"
    );
    let (code, out, _) = run(1, &["lease", "list"])?;
    ensure!(code == 0 && out.is_empty(), "{out}");
    Ok(())
}
