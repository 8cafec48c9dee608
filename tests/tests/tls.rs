//! TLS on the real binaries: a 3-node cluster with mutual TLS on both ports
//! and client certificates required, certificates made by the
//! `trireme-server certs` library.
//!
//! - ordinary work passes through every node (writes, reads, a transaction,
//!   the CLI);
//! - a client without a certificate, with one from another CA, with an
//!   expired one, trusting another CA, or speaking plaintext to the TLS port
//!   is refused with a message that says which;
//! - a process holding node 3's certificate cannot send Raft messages as
//!   node 2, and a non-member holding a valid certificate of the cluster CA
//!   cannot append entries, vote or forward write sets (PERMISSION_DENIED
//!   naming both ids; nothing is applied);
//! - a certificate replaced on disk and announced with SIGHUP is served to
//!   new connections (its serial changes) on both ports, and the cluster
//!   keeps working.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::Vote;
use trireme_client::{Client, ClientOptions, ClientTls, Isolation, ReadConsistency};
use trireme_proto::v1::raft_client::RaftClient;
use trireme_server::group::network::encode;
use trireme_server::group::types::TypeConfig;
use trireme_server::tls::certs::{self, Validity};
use trireme_server::tls::connect;
use trireme_server::txn::{Mutation, WriteSet};
use trireme_tests::{wait_for, Cluster};

const READY: Duration = Duration::from_secs(30);

/// A client of node 1 only with these TLS settings, and a short deadline.
fn client_with(cluster: &Cluster, tls: Option<ClientTls>) -> Result<Client> {
    Ok(Client::with_options(
        vec![cluster.nodes[0].addr.clone()],
        ClientOptions {
            timeout: Duration::from_secs(3),
            tls,
            ..ClientOptions::default()
        },
    )?)
}

/// The error text of a read that must be refused.
async fn refused_read(client: &Client) -> String {
    match client.get("tls/a", ReadConsistency::Local).await {
        Ok(v) => panic!("the read was served: {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// A 3-node cluster with mutual TLS on both ports and client certificates
/// required, once it has a leader, and its certificates.
async fn tls_cluster() -> Result<(Cluster, trireme_tests::TlsFiles)> {
    let cluster = Cluster::start_tls(3, &[])?;
    let tls = cluster.tls.clone().expect("TLS on");
    cluster
        .wait_leader(&[1, 2, 3], READY)
        .await
        .with_context(|| cluster.logs())?;
    Ok((cluster, tls))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_cluster_works_and_refuses_strangers() -> Result<()> {
    let (cluster, tls) = tls_cluster().await?;

    // Ordinary work through every node.
    for id in 1..=3u64 {
        let client = cluster.client_only(id)?;
        wait_for("a write through each node", READY, || {
            let client = client.clone();
            async move {
                Ok(client
                    .put(format!("tls/n{id}"), format!("v{id}"))
                    .await
                    .ok())
            }
        })
        .await
        .with_context(|| cluster.logs())?;
    }
    let client = cluster.client(2)?;
    for id in 1..=3u64 {
        let got = client
            .get(format!("tls/n{id}"), ReadConsistency::Linearizable)
            .await?
            .context("a write is missing")?;
        ensure!(
            got.value == format!("v{id}").into_bytes(),
            "wrong value {got:?}"
        );
    }
    let (old, _) = client
        .transaction(Isolation::Serializable, |tx| async move {
            let old = tx.get("tls/n1").await?;
            tx.put("tls/n1", "moved")?;
            tx.put("tls/txn", "done")?;
            Ok(old)
        })
        .await?;
    ensure!(
        old.as_deref() == Some(&b"v1"[..]),
        "transaction read {old:?}"
    );
    let got = cluster
        .client(3)?
        .get("tls/txn", ReadConsistency::Linearizable)
        .await?
        .context("the transaction's write is missing")?;
    ensure!(got.value == b"done");
    // The CLI with --cacert --cert --key.
    let out = cluster.cli(1, &["get", "tls/txn"])?;
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("done"),
        "CLI over TLS: {out:?}"
    );

    // No client certificate: the server requires one. The client hears why
    // (the certificate is checked right after the handshake and the refusal
    // answered as a gRPC error, not as a TLS alert the client never reads).
    let no_cert = ClientTls::from_files(&tls.ca(), None, None)?;
    let e = refused_read(&client_with(&cluster, Some(no_cert))?).await;
    ensure!(
        e.contains("client certificate required") && e.contains("--client-cert-auth"),
        "no certificate: {e}"
    );

    // A certificate signed by another CA.
    let other = cluster.dir.path().join("other-ca");
    certs::init(&other, Validity::days(1))?;
    let (cert, key) = certs::client(&other, "mallory", Validity::days(1))?;
    let foreign = ClientTls::from_files(&tls.ca(), Some(&cert), Some(&key))?;
    let e = refused_read(&client_with(&cluster, Some(foreign))?).await;
    ensure!(
        e.contains("client certificate refused") && e.contains("UnknownIssuer"),
        "another CA's certificate: {e}"
    );

    // An expired certificate of the right CA.
    let (cert, key) = certs::client(&tls.dir, "expired", Validity::expired())?;
    let expired = ClientTls::from_files(&tls.ca(), Some(&cert), Some(&key))?;
    let e = refused_read(&client_with(&cluster, Some(expired))?).await;
    ensure!(
        e.contains("client certificate refused") && e.contains("expired"),
        "expired certificate: {e}"
    );
    // The CLI says the same.
    let out = std::process::Command::new(trireme_tests::bin("trireme"))
        .args([
            "--endpoints",
            &format!("https://{}", cluster.nodes[0].addr),
            "--cacert",
        ])
        .arg(tls.ca())
        .args(["get", "tls/txn"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("client certificate required"),
        "CLI without a certificate: {out:?}"
    );

    // The client does not trust the server's CA.
    let (cert, key) = tls.client_cert();
    let wrong_ca = ClientTls::from_files(&certs::ca_cert_path(&other), Some(&cert), Some(&key))?;
    let e = refused_read(&client_with(&cluster, Some(wrong_ca))?).await;
    ensure!(
        e.contains("invalid peer certificate") && e.contains("UnknownIssuer"),
        "server certificate of an unknown CA: {e}"
    );

    // Plaintext to the TLS port.
    let e = refused_read(&client_with(&cluster, None)?).await;
    ensure!(
        e.contains("requires TLS") && e.contains("plaintext"),
        "plaintext client: {e}"
    );
    // The same, from the CLI without --cacert.
    let out = std::process::Command::new(trireme_tests::bin("trireme"))
        .args(["--endpoints", &cluster.nodes[0].addr, "get", "tls/txn"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("requires TLS"),
        "CLI in plaintext: {out:?}"
    );
    // Each refusal is in node 1's log with its reason, and no key material is.
    let log = std::fs::read_to_string(&cluster.nodes[0].log)?;
    for reason in [
        "TLS client refused",
        "client certificate required",
        "UnknownIssuer",
        "expired",
        "plaintext",
    ] {
        ensure!(log.contains(reason), "node 1's log does not say {reason:?}");
    }
    ensure!(!log.contains("PRIVATE KEY"), "a key was logged");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_must_be_who_their_certificate_says() -> Result<()> {
    let cluster = Cluster::start_tls(3, &[])?;
    let tls = cluster.tls.clone().expect("TLS on");
    let leader = cluster
        .wait_leader(&[1, 2, 3], READY)
        .await
        .with_context(|| cluster.logs())?;
    let target = if leader == 1 { 2 } else { 1 };
    let peer_addr = cluster.nodes[(target - 1) as usize].peer_addr.clone();
    let leader_peer = cluster.nodes[(leader - 1) as usize].peer_addr.clone();

    // A process holding node 3's certificate claims to be node 2.
    let (cert, key) = tls.node(3);
    let as_node3 = || connect::client_config(&tls.ca(), Some((&cert, &key)));
    let mut raft = RaftClient::new(connect::channel(&peer_addr, as_node3()?)?);
    let vote: VoteRequest<u64> = VoteRequest::new(Vote::new(1_000, 2), None);
    let status = raft
        .vote(encode(&vote)?)
        .await
        .expect_err("a vote as another node was answered");
    ensure!(
        status.code() == tonic::Code::PermissionDenied
            && status.message().contains("node 2")
            && status.message().contains("node 3"),
        "vote as node 2 with node 3's certificate: {status:?}"
    );
    let append: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
        vote: Vote::new_committed(1_000, 2),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let status = raft
        .append_entries(encode(&append)?)
        .await
        .expect_err("an append as another node was answered");
    ensure!(
        status.code() == tonic::Code::PermissionDenied
            && status
                .message()
                .contains("AppendEntries claims to come from node 2")
            && status.message().contains("names node 3"),
        "append as node 2 with node 3's certificate: {status:?}"
    );
    let mut leader_raft = RaftClient::new(connect::channel(&leader_peer, as_node3()?)?);
    let forged = vec![WriteSet::blind(
        2,
        vec![Mutation::Put {
            key: b"hostile/as-node-2".to_vec(),
            value: b"x".to_vec(),
            lease: 0,
        }],
    )];
    let status = leader_raft
        .forward(encode(&forged)?)
        .await
        .expect_err("a forward as another node was answered");
    ensure!(
        status.code() == tonic::Code::PermissionDenied && status.message().contains("node 2"),
        "forward as node 2: {status:?}"
    );

    // A non-member with a valid certificate of the cluster CA: node 9.
    let (cert9, key9) = certs::node(&tls.dir, 9, &[], Validity::days(1))?;
    let as_node9 = || connect::client_config(&tls.ca(), Some((&cert9, &key9)));
    let mut raft = RaftClient::new(connect::channel(&peer_addr, as_node9()?)?);
    let append: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
        vote: Vote::new_committed(1_000, 9),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let status = raft
        .append_entries(encode(&append)?)
        .await
        .expect_err("a non-member's append was answered");
    ensure!(
        status.code() == tonic::Code::PermissionDenied
            && status.message().contains("node 9 is not a member"),
        "a non-member's append: {status:?}"
    );
    let status = raft
        .vote(encode(&VoteRequest::<u64>::new(Vote::new(1_000, 9), None))?)
        .await
        .expect_err("a non-member's vote was answered");
    ensure!(
        status.code() == tonic::Code::PermissionDenied,
        "a non-member's vote: {status:?}"
    );
    let mut leader_raft = RaftClient::new(connect::channel(&leader_peer, as_node9()?)?);
    let forged = vec![WriteSet::blind(
        9,
        vec![Mutation::Put {
            key: b"hostile/non-member".to_vec(),
            value: b"x".to_vec(),
            lease: 0,
        }],
    )];
    let status = leader_raft
        .forward(encode(&forged)?)
        .await
        .expect_err("a non-member's forward was answered");
    ensure!(
        status.code() == tonic::Code::PermissionDenied
            && status.message().contains("node 9 is not a member"),
        "a non-member's forward: {status:?}"
    );

    // Nothing was applied, and the cluster kept its leader and works.
    let client = cluster.client(leader)?;
    client.put("tls/after", "ok").await?;
    for key in ["hostile/as-node-2", "hostile/non-member"] {
        let got = client.get(key, ReadConsistency::Linearizable).await?;
        ensure!(got.is_none(), "{key} was applied: {got:?}");
    }
    let now = cluster.wait_leader(&[1, 2, 3], READY).await?;
    ensure!(
        now == leader,
        "a refused vote moved the leadership ({leader} -> {now})"
    );
    let log = std::fs::read_to_string(&cluster.nodes[(target - 1) as usize].log)?;
    ensure!(
        log.contains("peer refused"),
        "node {target}'s log does not record the refusals"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_on_sighup() -> Result<()> {
    let mut cluster = Cluster::start_tls(3, &[])?;
    let tls = cluster.tls.clone().expect("TLS on");
    cluster
        .wait_leader(&[1, 2, 3], READY)
        .await
        .with_context(|| cluster.logs())?;
    let (cert, key) = tls.client_cert();
    let probe = || connect::client_config(&tls.ca(), Some((&cert, &key)));
    let client_addr = cluster.nodes[0].addr.clone();
    let peer_addr = cluster.nodes[0].peer_addr.clone();
    let (peer_cert, peer_key) = tls.node(2);
    let peer_probe = || connect::client_config(&tls.ca(), Some((&peer_cert, &peer_key)));
    let before = connect::served_certificate(&client_addr, probe()?).await?;
    let before_peer = connect::served_certificate(&peer_addr, peer_probe()?).await?;
    ensure!(before.node_id == Some(1) && before == before_peer);

    // A new certificate for node 1 in the same files, then SIGHUP.
    certs::node(
        &tls.dir,
        1,
        &["localhost".into(), "127.0.0.1".into()],
        Validity::days(2),
    )?;
    // The files are read only on SIGHUP: until then the old one is served.
    let still = connect::served_certificate(&client_addr, probe()?).await?;
    ensure!(
        still.serial == before.serial,
        "served a new certificate before SIGHUP"
    );
    cluster.node(1).signal(1)?;
    let after = wait_for("node 1 to serve its new certificate", READY, || async {
        let c = connect::served_certificate(&client_addr, probe()?).await?;
        Ok((c.serial != before.serial).then_some(c))
    })
    .await
    .with_context(|| cluster.logs())?;
    ensure!(after.node_id == Some(1));
    let after_peer = connect::served_certificate(&peer_addr, peer_probe()?).await?;
    ensure!(
        after_peer.serial == after.serial,
        "the peer port serves {} after SIGHUP, the client port {}",
        after_peer.serial,
        after.serial
    );
    // Node 1 still works with its peers (new connections to and from it
    // present the new certificate) and with clients.
    cluster.restart(2)?;
    cluster
        .wait_leader(&[1, 2, 3], READY)
        .await
        .with_context(|| cluster.logs())?;
    let client = cluster.client_only(1)?;
    wait_for("a write through node 1 after the rotation", READY, || {
        let client = client.clone();
        async move { Ok(client.put("tls/rotated", "yes").await.ok()) }
    })
    .await?;
    cluster
        .wait_converged(&[1, 2, 3], READY)
        .await
        .with_context(|| cluster.logs())?;
    // A file that does not load leaves the old configuration in force.
    std::fs::write(tls.node(1).0, "not a certificate")?;
    cluster.node(1).signal(1)?;
    wait_for("node 1 to log the failed reload", READY, || async {
        let log = std::fs::read_to_string(&cluster.nodes[0].log)?;
        Ok(log.contains("certificate files not reloaded").then_some(()))
    })
    .await?;
    let kept = connect::served_certificate(&client_addr, probe()?).await?;
    ensure!(
        kept.serial == after.serial,
        "a bad file replaced the certificate"
    );
    Ok(())
}

/// With `--client-cert-auth` and auth on, a client certificate's CN is its
/// user: no password, no token. The harness's own certificate names `root`;
/// one naming a read-only user reads its prefix and nothing else, and one
/// naming no user is refused, each with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_names_its_user() -> Result<()> {
    use trireme_client::{proto, Error};
    let (cluster, tls) = tls_cluster().await?;
    let root = cluster.client(1)?;
    wait_for("a first write", READY, || {
        let root = root.clone();
        async move { Ok(root.put("cn/a", "1").await.ok()) }
    })
    .await
    .with_context(|| cluster.logs())?;
    root.put("other/x", "2").await?;
    root.user_add("root", "rootpw").await?;
    root.user_grant("root", "root").await?;
    root.role_add("cn-reader").await?;
    root.role_grant(
        "cn-reader",
        proto::Permission {
            kind: proto::PermissionKind::Read as i32,
            key: b"cn/".to_vec(),
            range_end: Vec::new(),
            prefix: true,
        },
    )
    .await?;
    root.user_add("reader", "unused").await?;
    root.user_grant("reader", "cn-reader").await?;
    root.auth_enable().await?;

    // root by its certificate alone: writes and reads anything.
    root.put("cn/b", "2").await.context("root by its CN")?;
    ensure!(root
        .get("other/x", ReadConsistency::Linearizable)
        .await?
        .is_some());

    // reader by its certificate: its prefix only.
    let dir = tls.ca().parent().context("certs dir")?.to_path_buf();
    let (cert, key) = certs::client(&dir, "reader", Validity::days(1))?;
    let reader = client_with(
        &cluster,
        Some(ClientTls::from_files(&tls.ca(), Some(&cert), Some(&key))?),
    )?;
    let got = reader.get("cn/a", ReadConsistency::Linearizable).await?;
    ensure!(
        got.map(|v| v.value) == Some(b"1".to_vec()),
        "reader reads cn/a"
    );
    match reader.get("other/x", ReadConsistency::Linearizable).await {
        Err(Error::PermissionDenied(m)) => ensure!(m.contains("other/x"), "{m}"),
        other => anyhow::bail!("reader outside its prefix: {other:?}"),
    }
    match reader.put("cn/c", "3").await {
        Err(Error::PermissionDenied(m)) => ensure!(m.contains("cn/c"), "{m}"),
        other => anyhow::bail!("reader writing: {other:?}"),
    }

    // A certificate from the cluster CA whose CN names no user.
    let (cert, key) = certs::client(&dir, "stranger", Validity::days(1))?;
    let stranger = client_with(
        &cluster,
        Some(ClientTls::from_files(&tls.ca(), Some(&cert), Some(&key))?),
    )?;
    match stranger.get("cn/a", ReadConsistency::Linearizable).await {
        Err(Error::Unauthenticated(m)) => ensure!(m.contains("\"stranger\" names no user"), "{m}"),
        other => anyhow::bail!("a CN naming no user: {other:?}"),
    }
    ensure!(
        root.get("cn/c", ReadConsistency::Linearizable)
            .await?
            .is_none(),
        "the refused write was applied"
    );
    Ok(())
}
