//! Users and roles on real processes (issue 9 parts 3 and 4): enabling auth
//! needs a root user; with auth on, requests without credentials are
//! refused; a read-only user cannot write; a user limited to a prefix
//! cannot read outside it (get, scan, transaction read, watch) and can
//! inside; changes made on one node take effect on another; tokens survive
//! a leader kill; the auth state survives a full restart; the CLI works end
//! to end.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use futures::StreamExt;
use trireme_client::{
    proto, Client, ClientOptions, Credentials, Error, Isolation, ReadConsistency, WatchOptions,
    WatchTarget,
};
use trireme_tests::{wait_for, Cluster};

const READY: Duration = Duration::from_secs(20);
const LINEAR: ReadConsistency = ReadConsistency::Linearizable;

/// A client of `endpoints` (the first tried first) logged in as `user`.
fn as_user(endpoints: Vec<String>, user: &str, password: &str) -> Result<Client> {
    Ok(Client::with_options(
        endpoints,
        ClientOptions {
            credentials: Some(Credentials {
                user: user.into(),
                password: password.into(),
            }),
            ..ClientOptions::default()
        },
    )?)
}

fn prefix(kind: proto::PermissionKind, key: &str) -> proto::Permission {
    proto::Permission {
        kind: kind as i32,
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
        prefix: true,
    }
}

fn expect_unauthenticated<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) -> Result<()> {
    match r {
        Err(Error::Unauthenticated(m)) => {
            ensure!(!m.is_empty(), "{what}: empty message");
            Ok(())
        }
        other => bail!("{what}: expected UNAUTHENTICATED, got {other:?}"),
    }
}

fn expect_denied<T: std::fmt::Debug>(r: Result<T, Error>, what: &str, needle: &str) -> Result<()> {
    match r {
        Err(Error::PermissionDenied(m)) => {
            ensure!(m.contains(needle), "{what}: {m:?} does not name {needle:?}");
            Ok(())
        }
        other => bail!("{what}: expected PERMISSION_DENIED, got {other:?}"),
    }
}

/// Adds `root` (role root) through `admin` and turns auth on.
async fn enable_with_root(admin: &Client) -> Result<()> {
    admin.user_add("root", "rootpw").await?;
    admin.user_grant("root", "root").await?;
    admin.auth_enable().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_roles_are_enforced_on_every_node() -> Result<()> {
    let cluster = Cluster::start(3, &[])?;
    cluster.wait_leader(&[1, 2, 3], READY).await?;
    let open = cluster.client(1)?;
    open.put("app/a", "1").await?;
    open.put("other/x", "2").await?;

    // Enabling without a root user (or without its role) is refused.
    match open.auth_enable().await {
        Err(Error::InvalidInput(m)) => ensure!(m.contains("\"root\""), "{m}"),
        other => bail!("enable without root: {other:?}"),
    }
    open.user_add("root", "rootpw").await?;
    ensure!(
        open.auth_enable().await.is_err(),
        "root without the root role"
    );
    ensure!(!open.auth_status().await?, "still off");
    open.user_grant("root", "root").await?;
    open.auth_enable().await.with_context(|| cluster.logs())?;
    ensure!(open.auth_status().await?, "on");

    // No credentials: refused; status stays open.
    expect_unauthenticated(open.put("app/b", "x").await, "put without credentials")?;
    expect_unauthenticated(open.get("app/a", LINEAR).await, "get without credentials")?;
    expect_unauthenticated(open.user_list().await, "user list without credentials")?;
    open.status().await.context("status stays open")?;
    // A wrong password is refused.
    expect_unauthenticated(
        as_user(cluster.endpoints(), "root", "wrong")?
            .get("app/a", LINEAR)
            .await,
        "wrong password",
    )?;
    expect_unauthenticated(
        as_user(cluster.endpoints(), "nobody", "x")?
            .get("app/a", LINEAR)
            .await,
        "unknown user",
    )?;

    let root = as_user(cluster.endpoints(), "root", "rootpw")?;
    root.put("app/b", "3").await?;
    root.role_add("reader").await?;
    root.role_grant("reader", prefix(proto::PermissionKind::Read, ""))
        .await?;
    root.user_add("ro", "ropw").await?;
    root.user_grant("ro", "reader").await?;
    root.role_add("app").await?;
    root.role_grant("app", prefix(proto::PermissionKind::Readwrite, "app/"))
        .await?;
    root.user_add("alice", "alicepw").await?;
    root.user_grant("alice", "app").await?;
    ensure!(
        root.user_list().await? == vec!["alice", "ro", "root"],
        "users listed in order"
    );

    // Password guessing is braked per node and per name: after five wrong
    // passwords for alice on node 1, even the right one waits there (the
    // refusal names the wait and the limit); root and node 2 are not
    // affected; once the wait is over, alice logs in on node 1 again.
    let node1 = || vec![cluster.endpoints()[0].clone()];
    // A name no user can have is refused by the rule, before any check.
    match as_user(node1(), &"x".repeat(129), "pw")?
        .get("app/a", LINEAR)
        .await
    {
        Err(Error::InvalidInput(m)) if m.contains("1 to 128 bytes") => {}
        other => bail!("a 129-byte user name: {other:?}"),
    }
    for _ in 0..5 {
        expect_unauthenticated(
            as_user(node1(), "alice", "guess")?
                .get("app/a", LINEAR)
                .await,
            "a guessed password",
        )?;
    }
    match as_user(node1(), "alice", "alicepw")?
        .get("app/a", LINEAR)
        .await
    {
        Err(Error::Unauthenticated(m))
            if m.contains("too many failed authentications")
                && m.contains("5 in a row")
                && m.contains("try again in") => {}
        other => bail!("the sixth attempt was not braked: {other:?}"),
    }
    as_user(node1(), "root", "rootpw")?
        .get("app/a", LINEAR)
        .await?;
    // Node 2 may not have applied alice's creation yet: wait for it, and
    // it must let her in (its count for alice is its own).
    let node2 = || vec![cluster.endpoints()[1].clone()];
    wait_for("alice to log in on node 2", READY, || async move {
        Ok(as_user(node2(), "alice", "alicepw")?
            .get("app/a", LINEAR)
            .await
            .ok())
    })
    .await?;
    wait_for("alice's wait on node 1 to end", READY, || async move {
        Ok(as_user(node1(), "alice", "alicepw")?
            .get("app/a", LINEAR)
            .await
            .ok())
    })
    .await?;
    ensure!(root.user_get("alice").await? == vec!["app"]);

    // A read-only user reads everything and writes nothing.
    let ro = as_user(cluster.endpoints(), "ro", "ropw")?;
    let got = ro
        .get("other/x", LINEAR)
        .await?
        .context("ro reads other/x")?;
    ensure!(got.value == b"2");
    expect_denied(
        ro.put("app/a", "no").await,
        "ro put",
        "readwrite permission on key \"app/a\"",
    )?;
    expect_denied(ro.delete("other/x", None).await, "ro delete", "readwrite")?;
    expect_denied(
        ro.user_add("eve", "x").await,
        "ro user add",
        "role \"root\"",
    )?;
    ensure!(
        ro.get("app/a", LINEAR).await?.is_some(),
        "nothing was written"
    );
    ensure!(root.get("app/a", LINEAR).await?.context("app/a")?.value == b"1");

    // A user limited to app/ reads and writes inside it only.
    let alice = as_user(cluster.endpoints(), "alice", "alicepw")?;
    alice.put("app/c", "4").await?;
    ensure!(alice.get("app/c", LINEAR).await?.context("app/c")?.value == b"4");
    let (inside, _, _) = alice
        .scan(&trireme_client::ScanSpec::prefix("app/"), LINEAR)
        .await?;
    let keys: Vec<_> = inside.iter().map(|v| v.key.clone()).collect();
    ensure!(
        keys == vec![b"app/a".to_vec(), b"app/b".to_vec(), b"app/c".to_vec()],
        "scan of app/: {keys:?}"
    );
    expect_denied(
        alice.get("other/x", LINEAR).await,
        "alice get",
        "read permission on key \"other/x\"",
    )?;
    // get_many: one key outside among keys inside refuses the whole read.
    expect_denied(
        alice.get_many(&["app/a", "other/x"], LINEAR).await,
        "alice get_many",
        "read permission on key \"other/x\"",
    )?;
    let (inside_many, _) = alice.get_many(&["app/c", "app/a"], LINEAR).await?;
    let values: Vec<Option<Vec<u8>>> = inside_many
        .into_iter()
        .map(|v| v.map(|v| v.value))
        .collect();
    ensure!(
        values == vec![Some(b"4".to_vec()), Some(b"1".to_vec())],
        "alice get_many inside: {values:?}"
    );
    expect_denied(
        alice.put("other/y", "5").await,
        "alice put",
        "key \"other/y\"",
    )?;
    expect_denied(
        alice
            .scan(&trireme_client::ScanSpec::prefix(""), LINEAR)
            .await,
        "alice scan of everything",
        "is not covered",
    )?;
    // A range straddling the end of app/ is refused, not cut short.
    expect_denied(
        alice
            .scan(&trireme_client::ScanSpec::range("app/b", "other/"), LINEAR)
            .await,
        "alice straddling scan",
        "is not covered",
    )?;
    // Transactions: a read outside is refused, and so is a write outside
    // alongside writes inside (nothing applied).
    let txn = alice.begin(Isolation::Serializable).await?;
    expect_denied(txn.get("other/x").await, "alice txn read", "other/x")?;
    let txn = alice.begin(Isolation::Serializable).await?;
    expect_denied(
        txn.get_many(&["app/a", "other/x"]).await,
        "alice txn get_many",
        "other/x",
    )?;
    let txn = alice.begin(Isolation::Serializable).await?;
    txn.get("app/a").await?;
    txn.put("app/d", "6")?;
    txn.put("other/z", "7")?;
    expect_denied(txn.commit().await, "alice txn write outside", "other/z")?;
    ensure!(
        root.get("app/d", LINEAR).await?.is_none(),
        "half a txn applied"
    );
    // Watches: outside refused, inside streams.
    let mut outside = Box::pin(alice.watch(
        WatchTarget::Prefix(b"other/".to_vec()),
        WatchOptions::default(),
    ));
    let first = tokio::time::timeout(READY, outside.next()).await?;
    match first {
        Some(Err(Error::PermissionDenied(m))) => ensure!(m.contains("other/"), "{m}"),
        other => bail!("watch outside app/: {other:?}"),
    }
    let mut inside = Box::pin(alice.watch(
        WatchTarget::Prefix(b"app/".to_vec()),
        WatchOptions::default(),
    ));
    tokio::time::timeout(READY, inside.next())
        .await?
        .context("watch start")??;
    // Members and configuration need root.
    expect_denied(
        alice.set_config("cert_window", "1000").await,
        "alice set_config",
        "root",
    )?;
    expect_denied(alice.leave(3).await, "alice leave", "root")?;

    // A role change made on node 1 takes effect on node 3.
    let alice3 = as_user(vec![cluster.endpoints()[2].clone()], "alice", "alicepw")?;
    expect_denied(
        alice3.get("other/x", LINEAR).await,
        "before the grant",
        "other/x",
    )?;
    let only1 = as_user(vec![cluster.endpoints()[0].clone()], "root", "rootpw")?;
    only1
        .role_grant("app", prefix(proto::PermissionKind::Read, "other/"))
        .await?;
    wait_for("node 3 to apply the grant", READY, || {
        let alice3 = alice3.clone();
        async move {
            Ok(alice3
                .get("other/x", ReadConsistency::Local)
                .await?
                .map(|_| ()))
        }
    })
    .await?;
    only1
        .role_revoke("app", prefix(proto::PermissionKind::Read, "other/"))
        .await?;
    // Each node checks a request against the auth state it has applied, so
    // node 3 refuses once it has applied the revoke (a moment after node 1).
    wait_for("node 3 to apply the revoke", READY, || {
        let alice3 = alice3.clone();
        async move {
            Ok(match alice3.get("other/x", LINEAR).await {
                Err(Error::PermissionDenied(m)) if m.contains("other/x") => Some(()),
                Ok(_) => None,
                Err(e) => bail!("after the revoke: expected PERMISSION_DENIED, got {e:?}"),
            })
        }
    })
    .await?;

    // A changed password ends the old tokens: the client's re-login with
    // the old password is refused.
    alice3.get("app/a", LINEAR).await?;
    root.user_passwd("alice", "newpw").await?;
    wait_for(
        "node 3 to refuse alice's old token and password",
        READY,
        || {
            let alice3 = alice3.clone();
            async move {
                Ok(match alice3.get("app/a", LINEAR).await {
                    Err(Error::Unauthenticated(m)) if m.contains("wrong user name or password") => {
                        Some(())
                    }
                    _ => None,
                })
            }
        },
    )
    .await?;
    as_user(cluster.endpoints(), "alice", "newpw")?
        .get("app/a", LINEAR)
        .await?;
    // A deleted user is refused.
    root.user_delete("ro").await?;
    wait_for("the deleted user to be refused", READY, || {
        let ro = ro.clone();
        async move {
            Ok(match ro.get("app/a", LINEAR).await {
                Err(Error::Unauthenticated(_)) => Some(()),
                _ => None,
            })
        }
    })
    .await?;
    cluster.wait_converged(&[1, 2, 3], READY).await?;
    Ok(())
}

/// `Kv.Get` with a raw token, on the node at `endpoint` only.
async fn get_with_token(endpoint: &str, token: &str, key: &str) -> Result<Option<Vec<u8>>> {
    let mut kv = proto::kv_client::KvClient::connect(format!("http://{endpoint}")).await?;
    let mut request = tonic::Request::new(proto::GetRequest {
        key: key.as_bytes().to_vec(),
        read: None,
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let got = kv.get(request).await?.into_inner();
    Ok(got.found.then_some(got.value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_survive_a_leader_kill_and_auth_survives_a_full_restart() -> Result<()> {
    let mut cluster = Cluster::start(3, &[])?;
    let leader = cluster.wait_leader(&[1, 2, 3], READY).await?;
    enable_with_root(&cluster.client(1)?).await?;
    let root = as_user(cluster.endpoints(), "root", "rootpw")?;
    root.role_add("k").await?;
    root.role_grant("k", prefix(proto::PermissionKind::Readwrite, "k/"))
        .await?;
    root.user_add("u", "upw").await?;
    root.user_grant("u", "k").await?;
    root.put("k/1", "one").await?;
    // A token issued by the leader...
    let leader_ep = cluster.endpoints()[(leader - 1) as usize].clone();
    let token = Client::new(vec![leader_ep])?
        .authenticate("u", "upw")
        .await?;
    ensure!(
        !token.contains("upw"),
        "the token does not carry the password"
    );
    // ... is accepted by every node, before and after the leader dies.
    for ep in cluster.endpoints() {
        // A follower may apply the user a moment after the leader.
        let got = wait_for("a follower to accept the token", READY, || {
            let ep = ep.clone();
            let token = token.clone();
            async move { Ok(Some(get_with_token(&ep, &token, "k/1").await?)) }
        })
        .await?;
        ensure!(got.as_deref() == Some(&b"one"[..]), "{ep}: {got:?}");
    }
    cluster.kill(leader)?;
    let others: Vec<u64> = (1..=3).filter(|&i| i != leader).collect();
    let new_leader = cluster.wait_leader(&others, READY).await?;
    ensure!(new_leader != leader);
    for &id in &others {
        let ep = cluster.endpoints()[(id - 1) as usize].clone();
        ensure!(get_with_token(&ep, &token, "k/1").await?.as_deref() == Some(&b"one"[..]));
    }
    let u = as_user(
        others
            .iter()
            .map(|&i| cluster.endpoints()[(i - 1) as usize].clone())
            .collect(),
        "u",
        "upw",
    )?;
    u.put("k/2", "two").await?;
    let err = get_with_token(
        &cluster.endpoints()[(others[0] - 1) as usize],
        "u:1:1:00",
        "k/1",
    )
    .await;
    ensure!(
        format!("{err:?}").contains("not valid"),
        "a forged token: {err:?}"
    );

    // Every node down, every node up: the users, roles, switch and secret
    // come back from the log and the store.
    cluster.restart(leader)?;
    for id in 1..=3 {
        cluster.kill(id)?;
    }
    for id in 1..=3 {
        cluster.restart(id)?;
    }
    cluster.wait_leader(&[1, 2, 3], READY).await?;
    let open = cluster.client(1)?;
    wait_for("auth status after the restart", READY, || {
        let open = open.clone();
        async move { Ok(open.auth_status().await.ok()) }
    })
    .await
    .and_then(|on| {
        ensure!(on, "auth is still on after a full restart");
        Ok(())
    })?;
    expect_unauthenticated(open.put("k/3", "x").await, "no credentials after restart")?;
    let u = as_user(cluster.endpoints(), "u", "upw")?;
    ensure!(u.get("k/2", LINEAR).await?.context("k/2")?.value == b"two");
    expect_denied(
        u.put("x", "y").await,
        "u outside k/ after restart",
        "key \"x\"",
    )?;
    ensure!(get_with_token(&cluster.endpoints()[0], &token, "k/2")
        .await?
        .is_some());
    ensure!(
        root.role_get("k").await? == vec![prefix(proto::PermissionKind::Readwrite, "k/")],
        "role k after restart"
    );
    Ok(())
}

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the CLI and checks its exit code.
fn cli(cluster: &Cluster, args: &[&str], code: i32) -> Result<std::process::Output> {
    let o = cluster.cli(1, args)?;
    ensure!(
        o.status.code() == Some(code),
        "trireme {args:?}: exit {:?}, want {code}\nstdout: {}\nstderr: {}",
        o.status.code(),
        out(&o),
        err(&o)
    );
    Ok(o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_users_and_roles_end_to_end() -> Result<()> {
    let cluster = Cluster::start(1, &[])?;
    cluster.wait_leader(&[1], READY).await?;
    let o = cli(&cluster, &["auth", "enable"], 5)?;
    ensure!(err(&o).contains("root"), "{}", err(&o));
    cli(&cluster, &["user", "add", "root:rootpw"], 0)?;
    cli(&cluster, &["user", "grant", "root", "root"], 0)?;
    let o = cli(&cluster, &["auth", "enable"], 0)?;
    ensure!(out(&o).starts_with("OK "), "{}", out(&o));
    ensure!(out(&cli(&cluster, &["auth", "status"], 0)?) == "auth enabled\n");
    let o = cli(&cluster, &["put", "app/x", "1"], 5)?;
    ensure!(err(&o).contains("unauthenticated"), "{}", err(&o));
    let o = cli(&cluster, &["user", "list"], 5)?;
    ensure!(err(&o).contains("unauthenticated"), "{}", err(&o));

    let r = ["--user", "root:rootpw"];
    let with_root = |args: &[&str], code| {
        let mut all: Vec<&str> = r.to_vec();
        all.extend_from_slice(args);
        cli(&cluster, &all, code)
    };
    with_root(&["role", "add", "app"], 0)?;
    with_root(
        &["role", "grant", "app", "readwrite", "app/", "--prefix"],
        0,
    )?;
    with_root(&["role", "grant", "app", "read", "a", "--to", "b"], 0)?;
    let o = with_root(&["role", "get", "app"], 0)?;
    ensure!(
        out(&o) == "read range a b\nreadwrite prefix app/\n",
        "role get: {:?}",
        out(&o)
    );
    with_root(&["user", "add", "alice", "--new-password", "pw2"], 0)?;
    with_root(&["user", "grant", "alice", "app"], 0)?;
    ensure!(out(&with_root(&["user", "get", "alice"], 0)?) == "user alice\nroles app\n");
    ensure!(out(&with_root(&["user", "list"], 0)?) == "alice\nroot\n");
    ensure!(out(&with_root(&["role", "list"], 0)?) == "app\nroot\n");
    let o = with_root(&["--json", "role", "list"], 0)?;
    ensure!(out(&o).trim() == r#"["app","root"]"#, "{}", out(&o));

    // alice by NAME:PASSWORD, by --password, and by the environment.
    cli(&cluster, &["--user", "alice:pw2", "put", "app/x", "1"], 0)?;
    let o = cluster.cli_env(
        1,
        &["get", "app/x"],
        &[("TRIREME_USER", "alice"), ("TRIREME_PASSWORD", "pw2")],
    )?;
    ensure!(
        o.status.success() && out(&o) == "1\n",
        "env login: {} {}",
        out(&o),
        err(&o)
    );
    let o = cli(
        &cluster,
        &["--user", "alice", "--password", "pw2", "put", "other", "1"],
        5,
    )?;
    ensure!(
        err(&o).contains("permission denied") && err(&o).contains("\"other\""),
        "{}",
        err(&o)
    );
    let o = cli(&cluster, &["--user", "alice:bad", "get", "app/x"], 5)?;
    ensure!(
        err(&o).contains("wrong user name or password"),
        "{}",
        err(&o)
    );
    let o = cli(&cluster, &["--user", "alice:pw2", "user", "list"], 5)?;
    ensure!(err(&o).contains("permission denied"), "{}", err(&o));

    with_root(&["role", "revoke", "app", "a", "--to", "b"], 0)?;
    ensure!(out(&with_root(&["role", "get", "app"], 0)?) == "readwrite prefix app/\n");
    with_root(&["user", "passwd", "alice:pw3"], 0)?;
    cli(&cluster, &["--user", "alice:pw2", "get", "app/x"], 5)?;
    cli(&cluster, &["--user", "alice:pw3", "get", "app/x"], 0)?;
    with_root(&["user", "revoke", "alice", "app"], 0)?;
    cli(&cluster, &["--user", "alice:pw3", "get", "app/x"], 5)?;
    with_root(&["user", "delete", "alice"], 0)?;
    with_root(&["role", "delete", "app"], 0)?;
    ensure!(out(&with_root(&["user", "list"], 0)?) == "root\n");
    let o = with_root(&["user", "delete", "root"], 5)?;
    ensure!(err(&o).contains("cannot be deleted"), "{}", err(&o));
    with_root(&["auth", "disable"], 0)?;
    ensure!(out(&cli(&cluster, &["auth", "status"], 0)?) == "auth disabled\n");
    cli(&cluster, &["get", "app/x"], 0)?;
    Ok(())
}
