//! The etcd v3 API (`--etcd-listen`) driven by etcd's own tools: Debian's
//! `etcdctl` (3.4) against a 3-node cluster, and the Rust `etcd-client`
//! crate, including concurrent compare-and-swap Txns from all three nodes on
//! one counter.
//!
//! Where etcdctl's output differs from what a real etcd prints, the check
//! says why. Without etcdctl the etcdctl test fails under CI (`CI=true`)
//! and is skipped, saying so, elsewhere.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use trireme_tests::{wait_for, Cluster};

const READY: Duration = Duration::from_secs(30);

/// Starts a 3-node cluster whose nodes serve the etcd API on free ports
/// (port 0), and returns it with each node's etcd endpoint, read from the
/// line the node logs when it binds.
async fn cluster() -> Result<(Cluster, Vec<String>)> {
    let c = Cluster::start(3, &["--etcd-listen", "127.0.0.1:0"])?;
    let mut endpoints = Vec::new();
    for n in &c.nodes {
        let log = n.log.clone();
        let ep = wait_for("the etcd listener's address in the log", READY, || {
            let log = log.clone();
            async move { Ok(etcd_addr(&std::fs::read_to_string(&log)?)) }
        })
        .await
        .with_context(|| c.logs())?;
        endpoints.push(ep);
    }
    c.wait_leader(&[1, 2, 3], READY).await?;
    Ok((c, endpoints))
}

/// The address in the "serving the etcd v3 API" log line (ANSI colours and all).
fn etcd_addr(log: &str) -> Option<String> {
    let line = log
        .lines()
        .find(|l| l.contains("serving the etcd v3 API"))?;
    let at = line.find("127.0.0.1:")?;
    let port: String = line[at + 10..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some(format!("127.0.0.1:{port}"))
}

/// Whether etcdctl is there; fails under CI, skips (saying why) elsewhere.
fn have_etcdctl() -> Result<bool> {
    let found = Command::new("etcdctl")
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Ok(true);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        bail!("etcdctl is not installed (Debian's etcd-client; .ci/run installs it)");
    }
    eprintln!("SKIPPED: etcdctl not found (apt-get install etcd-client); CI=true makes this fail");
    Ok(false)
}

/// Runs etcdctl against one endpoint, with `stdin` as its input.
fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Result<Output> {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run etcdctl")?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .context("etcdctl stdin")?
            .write_all(input.as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

/// etcdctl's stdout, failing with its stderr if it failed.
fn ok(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let out = etcdctl(endpoint, args, stdin)?;
    ensure!(
        out.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The header revision of a `get -w json`.
fn revision_of(json: &str) -> Result<u64> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    v["header"]["revision"]
        .as_u64()
        .with_context(|| format!("no header revision in {json}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_put_get_del_prefix_txn_watch_members_status() -> Result<()> {
    if !have_etcdctl()? {
        return Ok(());
    }
    let (c, ep) = cluster().await?;
    let r = async {
        // put on one node, read on another (linearizable by default).
        assert_eq!(ok(&ep[0], &["put", "greeting", "hello"], None)?, "OK\n");
        assert_eq!(ok(&ep[1], &["get", "greeting"], None)?, "greeting\nhello\n");
        // A prefix written from all three nodes, read in key order from a fourth view.
        ok(&ep[2], &["put", "dir/b", "2"], None)?;
        ok(&ep[0], &["put", "dir/a", "1"], None)?;
        ok(&ep[1], &["put", "dir/c", "3"], None)?;
        ok(&ep[1], &["put", "dis", "not in the prefix"], None)?;
        assert_eq!(
            ok(&ep[2], &["get", "--prefix", "dir/"], None)?,
            "dir/a\n1\ndir/b\n2\ndir/c\n3\n"
        );
        assert_eq!(
            ok(&ep[0], &["get", "--prefix", "dir/", "--keys-only"], None)?,
            "dir/a\n\ndir/b\n\ndir/c\n\n"
        );
        assert_eq!(
            ok(&ep[0], &["get", "--prefix", "dir/", "--limit=2", "--order=DESCEND"], None)?,
            "dir/c\n3\ndir/b\n2\n"
        );
        // A limit still counts the whole range (etcdctl 3.4 has no --count-only).
        let limited = ok(&ep[1], &["get", "--prefix", "dir/", "--limit=1", "-w", "json"], None)?;
        let v: serde_json::Value = serde_json::from_str(&limited)?;
        assert_eq!((v["count"].as_u64(), v["more"].as_bool()), (Some(3), Some(true)), "{limited}");
        assert_eq!(v["kvs"].as_array().map(Vec::len), Some(1), "{limited}");
        // Delete prints how many keys went; the prefix delete takes the rest.
        assert_eq!(ok(&ep[1], &["del", "dir/a"], None)?, "1\n");
        assert_eq!(ok(&ep[2], &["get", "dir/a"], None)?, "");
        assert_eq!(ok(&ep[0], &["del", "--prefix", "dir/", "--prev-kv"], None)?, "2\ndir/b\n2\ndir/c\n3\n");
        assert_eq!(ok(&ep[1], &["get", "--prefix", "dir/"], None)?, "");
        assert_eq!(ok(&ep[1], &["get", "dis"], None)?, "dis\nnot in the prefix\n");

        // Reads at a past revision, and etcd's errors for a future one.
        ok(&ep[0], &["put", "hist", "one"], None)?;
        let r1 = revision_of(&ok(&ep[0], &["get", "hist", "-w", "json"], None)?)?;
        ok(&ep[1], &["put", "hist", "two"], None)?;
        assert_eq!(ok(&ep[2], &["get", "hist", &format!("--rev={r1}")], None)?, "hist\none\n");
        assert_eq!(ok(&ep[2], &["get", "hist"], None)?, "hist\ntwo\n");
        let future = etcdctl(&ep[2], &["get", "hist", "--rev=999999999"], None)?;
        ensure!(!future.status.success());
        ensure!(
            String::from_utf8_lossy(&future.stderr).contains("required revision is a future revision"),
            "{}",
            String::from_utf8_lossy(&future.stderr)
        );

        // txn with interactive input: compares, blank line, success ops,
        // blank line, failure ops, blank line.
        let absent = "value(\"t\") = \"x\"\n\nput t success\n\nput t failure\n\n";
        let out = ok(&ep[0], &["txn", "-i"], Some(absent))?;
        ensure!(out.ends_with("FAILURE\n\nOK\n"), "txn on an absent key: {out:?}");
        assert_eq!(ok(&ep[1], &["get", "t"], None)?, "t\nfailure\n");
        let holds = "value(\"t\") = \"failure\"\nmod(\"t\") > \"0\"\n\nput t second\nget greeting\n\nput t never\n\n";
        let out = ok(&ep[2], &["txn", "-i"], Some(holds))?;
        ensure!(
            out.ends_with("SUCCESS\n\nOK\n\ngreeting\nhello\n"),
            "txn whose compares hold: {out:?}"
        );
        assert_eq!(ok(&ep[0], &["get", "t"], None)?, "t\nsecond\n");
        // version("k") = "0" means "absent", as in etcd (a create-if-absent).
        let create = "version(\"fresh\") = \"0\"\n\nput fresh made\n\n\n";
        ensure!(ok(&ep[1], &["txn", "-i"], Some(create))?.contains("\nSUCCESS\n"));
        ensure!(ok(&ep[2], &["txn", "-i"], Some(create))?.contains("\nFAILURE\n"));

        // A watch on node 1 from a known revision while nodes 2 and 3 write:
        // every event, in order, with its content.
        let from = revision_of(&ok(&ep[0], &["get", "w/", "-w", "json"], None)?)? + 1;
        let mut watcher = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", ep[0]))
            .args(["watch", "--prefix", "w/", &format!("--rev={from}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = watcher.stdout.take().context("watch stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        ok(&ep[1], &["put", "w/a", "1"], None)?;
        ok(&ep[2], &["put", "w/b", "2"], None)?;
        ok(&ep[1], &["put", "outside", "x"], None)?;
        ok(&ep[2], &["del", "w/a"], None)?;
        ok(&ep[1], &["put", "w/a", "3"], None)?;
        // etcdctl prints a delete's key with an empty value line.
        let want = ["PUT", "w/a", "1", "PUT", "w/b", "2", "DELETE", "w/a", "", "PUT", "w/a", "3"];
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while got.len() < want.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => got.push(line?),
                Err(_) => break,
            }
        }
        watcher.kill().ok();
        watcher.wait()?;
        assert_eq!(got, want, "the watch's lines");

        // member list: every member; only a node's own etcd address is known
        // to it (a real etcd lists every member's client URLs).
        let members = ok(&ep[1], &["member", "list"], None)?;
        let lines: Vec<&str> = members.lines().collect();
        assert_eq!(lines.len(), 3, "{members}");
        for (i, line) in lines.iter().enumerate() {
            let id = i + 1;
            let fields: Vec<&str> = line.split(", ").collect();
            assert_eq!(fields[0], format!("{id:x}"), "{line}");
            assert_eq!(fields[1], "started");
            assert_eq!(fields[2], format!("node{id}"));
            assert_eq!(fields[3], format!("http://{}", c.nodes[i].peer_addr));
            let client = if id == 2 { format!("http://{}", ep[1]) } else { String::new() };
            assert_eq!(fields[4], client, "{line}");
            assert_eq!(fields[5], "false");
        }

        // endpoint status of every node: one leader, seen by all. The
        // version is the etcd API level served, not a Trireme version.
        let leader = c.wait_leader(&[1, 2, 3], READY).await?;
        let all = ep.join(",");
        let status = ok(&all, &["endpoint", "status", "-w", "json"], None)?;
        let v: serde_json::Value = serde_json::from_str(&status)?;
        let rows = v.as_array().context("status rows")?;
        assert_eq!(rows.len(), 3);
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row["Endpoint"], ep[i].as_str());
            let s = &row["Status"];
            assert_eq!(s["header"]["member_id"], (i + 1) as u64);
            assert_eq!(s["leader"], leader);
            assert_eq!(s["version"], "3.4.0");
        }

        // Leases through etcd's Lease service, each step on another node:
        // grant, attach a key, time-to-live with keys, keep-alive, list,
        // revoke (the key goes on every node), then expiry. etcdctl prints
        // lease ids in hex, as for a real etcd.
        let grant = ok(&ep[0], &["lease", "grant", "30"], None)?;
        let id = grant.split_whitespace().nth(1).context("lease id")?.to_string();
        assert_eq!(grant, format!("lease {id} granted with TTL(30s)\n"));
        let lease_flag = format!("--lease={id}");
        assert_eq!(ok(&ep[1], &["put", "leased", "v", &lease_flag], None)?, "OK\n");
        let ttl = ok(&ep[2], &["lease", "timetolive", &id, "--keys"], None)?;
        ensure!(
            ttl.starts_with(&format!("lease {id} granted with TTL(30s), remaining("))
                && ttl.ends_with("s), attached keys([leased])\n"),
            "{ttl}"
        );
        let kept = ok(&ep[1], &["lease", "keep-alive", "--once", &id], None)?;
        assert_eq!(kept, format!("lease {id} keepalived with TTL(30)\n"));
        let list = ok(&ep[2], &["lease", "list"], None)?;
        assert_eq!(list, format!("found 1 leases\n{id}\n"));
        assert_eq!(
            ok(&ep[2], &["lease", "revoke", &id], None)?,
            format!("lease {id} revoked\n")
        );
        for e in &ep {
            assert_eq!(ok(e, &["get", "leased"], None)?, "", "node {e} kept a revoked lease's key");
        }
        assert_eq!(
            ok(&ep[0], &["lease", "timetolive", &id], None)?,
            format!("lease {id} already expired\n")
        );
        let again = etcdctl(&ep[1], &["lease", "revoke", &id], None)?;
        ensure!(String::from_utf8_lossy(&again.stderr).contains("requested lease not found"));

        // Expiry: a 1 s lease's key disappears from every node once the
        // leader expires it (nobody keeps it alive).
        let short = ok(&ep[1], &["lease", "grant", "1"], None)?;
        let short = short.split_whitespace().nth(1).context("lease id")?.to_string();
        let short_flag = format!("--lease={short}");
        assert_eq!(ok(&ep[2], &["put", "brief", "v", &short_flag], None)?, "OK\n");
        for e in &ep {
            wait_for("the expired lease's key to go", READY, || async {
                Ok(ok(e, &["get", "brief"], None)?.is_empty().then_some(()))
            })
            .await?;
        }

        // A put naming an unknown lease gets etcd's words.
        let put_lease = etcdctl(&ep[0], &["put", "leased", "v", "--lease=1234"], None)?;
        ensure!(String::from_utf8_lossy(&put_lease.stderr).contains("requested lease not found"));
        Ok(())
    }
    .await;
    r.with_context(|| c.logs())
}

mod crate_client {
    use super::*;
    use etcd_client::{
        Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, LeaseGrantOptions,
        LeaseTimeToLiveOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
        WatchOptions,
    };

    async fn connect(ep: &str) -> Result<Client> {
        Ok(Client::connect([format!("http://{ep}")], None).await?)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd_client_crate_kv_txn_watch_and_a_contended_counter() -> Result<()> {
        let (c, ep) = cluster().await?;
        let r = async {
            let mut n1 = connect(&ep[0]).await?;
            let mut n2 = connect(&ep[1]).await?;
            let mut n3 = connect(&ep[2]).await?;

            // Put with prev_kv; the header's revision is the commit's seqno
            // and the key's mod_revision.
            let first = n1.put("k", "v1", None).await?;
            let rev1 = first.header().context("header")?.revision();
            let got = n2.get("k", None).await?;
            assert_eq!(got.kvs()[0].value(), b"v1");
            assert_eq!(got.kvs()[0].mod_revision(), rev1);
            let second = n3
                .put("k", "v2", Some(PutOptions::new().with_prev_key()))
                .await?;
            let prev = second.prev_key().context("prev_kv")?;
            assert_eq!((prev.value(), prev.mod_revision()), (&b"v1"[..], rev1));
            ensure!(second.header().context("header")?.revision() > rev1);

            // Ranges: prefix, limit with count, sort, from-key.
            for (i, node) in [&mut n1, &mut n2, &mut n3].into_iter().enumerate() {
                node.put(format!("p/{i}"), format!("{}", 9 - i), None)
                    .await?;
            }
            let all = n2.get("p/", Some(GetOptions::new().with_prefix())).await?;
            let keys: Vec<&[u8]> = all.kvs().iter().map(|kv| kv.key()).collect();
            assert_eq!(keys, [&b"p/0"[..], b"p/1", b"p/2"]);
            let limited = n3
                .get("p/", Some(GetOptions::new().with_prefix().with_limit(2)))
                .await?;
            assert_eq!(
                (limited.kvs().len(), limited.count(), limited.more()),
                (2, 3, true)
            );
            let by_value = n1
                .get(
                    "p/",
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_sort(SortTarget::Value, SortOrder::Ascend),
                    ),
                )
                .await?;
            let values: Vec<&[u8]> = by_value.kvs().iter().map(|kv| kv.value()).collect();
            assert_eq!(values, [&b"7"[..], b"8", b"9"]);
            let from = n1
                .get(
                    "p/1",
                    Some(GetOptions::new().with_from_key().with_keys_only()),
                )
                .await?;
            let keys: Vec<&[u8]> = from.kvs().iter().map(|kv| kv.key()).collect();
            assert_eq!(keys, [&b"p/1"[..], b"p/2"]);
            ensure!(from.kvs().iter().all(|kv| kv.value().is_empty()));

            // A Txn with a nested Txn and a Range inside, compares on mod
            // revision and value.
            let k_rev = n1.get("k", None).await?.kvs()[0].mod_revision();
            let inner = Txn::new()
                .when([Compare::value("p/0", CompareOp::Equal, "9")])
                .and_then([TxnOp::put("nested", "yes", None)])
                .or_else([TxnOp::put("nested", "no", None)]);
            let txn = Txn::new()
                .when([
                    Compare::mod_revision("k", CompareOp::Equal, k_rev),
                    Compare::value("k", CompareOp::Equal, "v2"),
                ])
                .and_then([
                    TxnOp::put("k", "v3", None),
                    TxnOp::get(
                        "p/",
                        Some(GetOptions::new().with_prefix().with_count_only()),
                    ),
                    TxnOp::txn(inner),
                ])
                .or_else([TxnOp::put("k", "lost", None)]);
            let resp = n2.txn(txn).await?;
            ensure!(resp.succeeded());
            let ops = resp.op_responses();
            assert_eq!(ops.len(), 3);
            match &ops[1] {
                TxnOpResponse::Get(g) => assert_eq!(g.count(), 3),
                other => bail!("expected a range answer, got {other:?}"),
            }
            match &ops[2] {
                TxnOpResponse::Txn(t) => ensure!(t.succeeded()),
                other => bail!("expected a txn answer, got {other:?}"),
            }
            assert_eq!(n3.get("k", None).await?.kvs()[0].value(), b"v3");
            assert_eq!(n3.get("nested", None).await?.kvs()[0].value(), b"yes");
            // The same compare now fails: the failure branch runs.
            let stale = Txn::new()
                .when([Compare::mod_revision("k", CompareOp::Equal, k_rev)])
                .and_then([TxnOp::put("k", "stale", None)])
                .or_else([TxnOp::get("k", None)]);
            let resp = n1.txn(stale).await?;
            ensure!(!resp.succeeded());
            match &resp.op_responses()[0] {
                TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"v3"),
                other => bail!("expected a range answer, got {other:?}"),
            }

            // Watch on node 3 from a known revision while nodes 1 and 2 write.
            let start = n3
                .get("w/", None)
                .await?
                .header()
                .context("header")?
                .revision()
                + 1;
            let mut watch = n3
                .watch(
                    "w/",
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(start)
                            .with_prev_key(),
                    ),
                )
                .await?;
            let created = watch.message().await?.context("created")?;
            ensure!(created.created());
            n1.put("w/x", "1", None).await?;
            n2.put("w/x", "2", None).await?;
            n1.delete("w/x", None).await?;
            let mut events = Vec::new();
            tokio::time::timeout(Duration::from_secs(20), async {
                while events.len() < 3 {
                    let msg = watch.message().await?.context("the watch ended")?;
                    for e in msg.events() {
                        let kv = e.kv().context("event kv")?;
                        events.push((
                            e.event_type(),
                            kv.key().to_vec(),
                            kv.value().to_vec(),
                            kv.mod_revision(),
                            e.prev_kv().map(|p| p.value().to_vec()),
                        ));
                    }
                }
                anyhow::Ok(())
            })
            .await
            .context("watch events in time")??;
            assert_eq!(events[0].0, EventType::Put);
            assert_eq!((&events[0].2[..], &events[0].4), (&b"1"[..], &None));
            assert_eq!(
                (&events[1].2[..], &events[1].4),
                (&b"2"[..], &Some(b"1".to_vec()))
            );
            assert_eq!(events[2].0, EventType::Delete);
            assert_eq!(events[2].4, Some(b"2".to_vec()));
            ensure!(
                events[0].3 < events[1].3 && events[1].3 < events[2].3,
                "{events:?}"
            );

            // DeleteRange with prev_kv over a prefix.
            let del = n1
                .delete(
                    "p/",
                    Some(DeleteOptions::new().with_prefix().with_prev_key()),
                )
                .await?;
            assert_eq!(del.deleted(), 3);
            assert_eq!(del.prev_kvs().len(), 3);

            // Status and member list through the crate.
            let status = n2.status().await?;
            assert_eq!(status.header().context("header")?.member_id(), 2);
            let members = n1.member_list().await?;
            let ids: Vec<u64> = members.members().iter().map(|m| m.id()).collect();
            assert_eq!(ids, [1, 2, 3]);

            // The contended counter: 6 clients, two per node, each trying
            // compare-and-swap increments on mod_revision. Every success
            // must be counted exactly once in the final value.
            n1.put("counter", "0", None).await?;
            let mut tasks = Vec::new();
            for i in 0..6 {
                let ep = ep[i % 3].clone();
                tasks.push(tokio::spawn(async move {
                    let mut client = connect(&ep).await?;
                    let (mut ok, mut lost) = (0u64, 0u64);
                    for _ in 0..15 {
                        let got = client.get("counter", None).await?;
                        let kv = &got.kvs()[0];
                        let n: u64 = kv.value_str()?.parse()?;
                        let txn = Txn::new()
                            .when([Compare::mod_revision(
                                "counter",
                                CompareOp::Equal,
                                kv.mod_revision(),
                            )])
                            .and_then([TxnOp::put("counter", (n + 1).to_string(), None)]);
                        if client.txn(txn).await?.succeeded() {
                            ok += 1;
                        } else {
                            lost += 1;
                        }
                    }
                    anyhow::Ok((ok, lost))
                }));
            }
            let (mut successes, mut failures) = (0, 0);
            for t in tasks {
                let (ok, lost) = t.await??;
                successes += ok;
                failures += lost;
            }
            let final_value: u64 = n3.get("counter", None).await?.kvs()[0]
                .value_str()?
                .parse()?;
            eprintln!("counter: {successes} increments committed, {failures} lost a compare");
            assert_eq!(final_value, successes, "{failures} compare failures");
            ensure!(successes > 0);

            // Leases through the crate: grant with an id on node 1, attach on
            // node 2, keep alive over a stream on node 3, time-to-live with
            // keys, revoke; a second grant of the same id is refused.
            let granted = n1
                .lease_grant(60, Some(LeaseGrantOptions::new().with_id(77)))
                .await?;
            assert_eq!((granted.id(), granted.ttl()), (77, 60));
            let taken = n2
                .lease_grant(60, Some(LeaseGrantOptions::new().with_id(77)))
                .await;
            let err = taken
                .err()
                .context("a second grant of lease 77 succeeded")?
                .to_string();
            ensure!(err.contains("lease already exists"), "{err}");
            n2.put("lk", "v", Some(PutOptions::new().with_lease(77)))
                .await?;
            assert_eq!(n3.get("lk", None).await?.kvs()[0].lease(), 77);
            let (mut keeper, mut replies) = n3.lease_keep_alive(77).await?;
            keeper.keep_alive().await?;
            let reply = replies.message().await?.context("a keep-alive reply")?;
            assert_eq!((reply.id(), reply.ttl()), (77, 60));
            let ttl = n1
                .lease_time_to_live(77, Some(LeaseTimeToLiveOptions::new().with_keys()))
                .await?;
            assert_eq!((ttl.granted_ttl(), ttl.keys()), (60, &[b"lk".to_vec()][..]));
            ensure!((1..=60).contains(&ttl.ttl()), "remaining {}", ttl.ttl());
            let leases = n2.leases().await?;
            let ids: Vec<i64> = leases.leases().iter().map(|l| l.id()).collect();
            assert_eq!(ids, [77]);
            n2.lease_revoke(77).await?;
            assert_eq!(n1.get("lk", None).await?.count(), 0);
            assert_eq!(n3.lease_time_to_live(77, None).await?.ttl(), -1);
            keeper.keep_alive().await?;
            let reply = replies.message().await?.context("a keep-alive reply")?;
            assert_eq!(
                (reply.id(), reply.ttl()),
                (77, 0),
                "a revoked lease kept alive"
            );
            // Grants out of range are refused with etcd's words or the limit.
            let huge = n3.lease_grant(9_000_000_001, None).await;
            let err = huge
                .err()
                .context("a TTL over etcd's maximum was granted")?
                .to_string();
            ensure!(err.contains("too large lease TTL"), "{err}");
            let negative = n1
                .lease_grant(10, Some(LeaseGrantOptions::new().with_id(-5)))
                .await;
            let err = negative
                .err()
                .context("a negative lease id was granted")?
                .to_string();
            ensure!(err.contains("negative"), "{err}");
            assert_eq!(
                n2.leases().await?.leases().len(),
                0,
                "a refused grant left a lease"
            );
            Ok(())
        }
        .await;
        r.with_context(|| c.logs())
    }
}
