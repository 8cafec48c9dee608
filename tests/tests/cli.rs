//! The `trireme` CLI against a real 3-node cluster: output formats, exit
//! codes (0 ok, 1 not found, 2 usage, 3 aborted, 4 unavailable, 5 other),
//! the `txn` coprocess protocol, the shell on a pipe, and `bench`.

use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use trireme_tests::{bin, free_port, wait_for, Cluster};

const READY: Duration = Duration::from_secs(20);
/// The longest a CLI invocation or one coprocess response may take.
const CLI_DEADLINE: Duration = Duration::from_secs(30);

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Requires exit code `code`, with the output in the message otherwise.
fn expect_code(out: &Output, code: i32, what: &str) -> Result<()> {
    ensure!(
        out.status.code() == Some(code),
        "{what}: expected exit {code}, got {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
    Ok(())
}

/// Runs the CLI (node `first` first) off the async threads.
async fn cli(cluster: &Cluster, first: u64, args: &[&str]) -> Result<Output> {
    let endpoints = cluster.endpoints();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut eps = endpoints;
    eps.rotate_left((first - 1) as usize);
    let mut cmd = Command::new(bin("trireme"));
    cmd.arg("--endpoints")
        .arg(eps.join(","))
        .args(&args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    run(cmd).await
}

/// Runs the CLI with exactly `args` (no endpoints added).
async fn cli_raw(args: &[&str]) -> Result<Output> {
    let mut cmd = Command::new(bin("trireme"));
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    run(cmd).await
}

async fn run(mut cmd: Command) -> Result<Output> {
    tokio::time::timeout(CLI_DEADLINE, cmd.output())
        .await
        .context("the CLI did not finish in time")?
        .context("run trireme")
}

fn json(out: &Output) -> Result<Value> {
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("not JSON: {:?} (stderr {:?})", stdout(out), stderr(out)))
}

async fn started() -> Result<Cluster> {
    let cluster = Cluster::start(3, &[])?;
    cluster.wait_leader(&[1, 2, 3], READY).await?;
    Ok(cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_commands_print_values_and_exit_by_outcome() -> Result<()> {
    let cluster = started().await?;

    let out = cli(&cluster, 1, &["put", "greeting", "hello world"]).await?;
    expect_code(&out, 0, "put")?;
    ensure!(stdout(&out).starts_with("OK "), "{}", stdout(&out));
    // Another node: the value alone and a newline.
    let out = cli(&cluster, 3, &["get", "greeting"]).await?;
    expect_code(&out, 0, "get")?;
    ensure!(stdout(&out) == "hello world\n", "{:?}", stdout(&out));

    let out = cli(&cluster, 2, &["get", "greeting", "--json"]).await?;
    expect_code(&out, 0, "get --json")?;
    let v = json(&out)?;
    ensure!(v["key"] == "greeting" && v["value"] == "hello world", "{v}");
    ensure!(v["version"].as_u64().is_some_and(|n| n > 0), "{v}");

    let out = cli(&cluster, 1, &["get", "no-such-key"]).await?;
    expect_code(&out, 1, "get of a missing key")?;
    ensure!(out.stdout.is_empty(), "{:?}", stdout(&out));
    let out = cli(&cluster, 2, &["get", "no-such-key", "--json"]).await?;
    expect_code(&out, 1, "get --json of a missing key")?;
    let v = json(&out)?;
    ensure!(v["key"] == "no-such-key" && v["value"].is_null(), "{v}");

    let out = cli(&cluster, 1, &["get", "greeting", "--no-such-flag"]).await?;
    expect_code(&out, 2, "an unknown flag")?;
    let out = cli(&cluster, 1, &["frobnicate"]).await?;
    expect_code(&out, 2, "an unknown command")?;

    // Only if absent, on a key that exists: a failed compare.
    let out = cli(
        &cluster,
        2,
        &["put", "greeting", "again", "--if-version", "0"],
    )
    .await?;
    expect_code(&out, 3, "put --if-version 0 on an existing key")?;
    ensure!(stderr(&out).contains("compare"), "{}", stderr(&out));
    let out = cli(&cluster, 1, &["put", "fresh", "1", "--if-version", "0"]).await?;
    expect_code(&out, 0, "put --if-version 0 on a new key")?;

    // Global options after the command.
    let endpoints = cluster.endpoints().join(",");
    let out = cli_raw(&["get", "greeting", "--json", "--endpoints", &endpoints]).await?;
    expect_code(&out, 0, "global options after the command")?;
    ensure!(json(&out)?["value"] == "hello world");

    let out = cli(&cluster, 3, &["del", "greeting"]).await?;
    expect_code(&out, 0, "del")?;
    ensure!(stdout(&out).starts_with("OK "), "{}", stdout(&out));
    let out = cli(&cluster, 1, &["get", "greeting"]).await?;
    expect_code(&out, 1, "get after del")?;

    // Over the key limit: exit 5, the message names the limit.
    let long_key = "k".repeat(5000);
    let out = cli(&cluster, 1, &["put", &long_key, "v"]).await?;
    expect_code(&out, 5, "an over-limit key")?;
    ensure!(stderr(&out).contains("max_key_bytes"), "{}", stderr(&out));

    // Nobody listens: unavailable.
    let nowhere = format!("127.0.0.1:{}", free_port()?);
    let out = cli_raw(&["--endpoints", &nowhere, "--timeout", "3s", "get", "k"]).await?;
    expect_code(&out, 4, "every endpoint unreachable")?;
    ensure!(!stderr(&out).is_empty(), "no message on stderr");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_status_and_checksum() -> Result<()> {
    let cluster = started().await?;
    for (k, v) in [("p/a", "1"), ("p/b", "2"), ("p/c", "3"), ("q/x", "9")] {
        expect_code(&cli(&cluster, 2, &["put", k, v]).await?, 0, "put")?;
    }
    let out = cli(&cluster, 1, &["scan", "--prefix", "p/"]).await?;
    expect_code(&out, 0, "scan --prefix")?;
    ensure!(
        stdout(&out) == "p/a 1\np/b 2\np/c 3\n",
        "{:?}",
        stdout(&out)
    );
    let out = cli(&cluster, 3, &["scan", "--from", "p/b", "--to", "q/y"]).await?;
    expect_code(&out, 0, "scan --from --to")?;
    ensure!(
        stdout(&out) == "p/b 2\np/c 3\nq/x 9\n",
        "{:?}",
        stdout(&out)
    );
    let out = cli(&cluster, 2, &["scan", "--prefix", "p/", "--limit", "2"]).await?;
    expect_code(&out, 0, "scan --limit")?;
    ensure!(stdout(&out) == "p/a 1\np/b 2\n", "{:?}", stdout(&out));
    let out = cli(&cluster, 2, &["scan", "--prefix", "p/", "--json"]).await?;
    let v = json(&out)?;
    ensure!(
        v["kvs"].as_array().map(Vec::len) == Some(3) && v["more"] == false,
        "{v}"
    );

    // One endpoint: one JSON object. In a healthy cluster every node
    // reports every member up (after its failure detector has heard them).
    for node in &cluster.nodes {
        let s = wait_for("every member reported up", READY, || async {
            let out = cli_raw(&["--endpoints", &node.addr, "status", "--json"]).await?;
            expect_code(&out, 0, "status --json")?;
            let s = json(&out)?;
            let members = s["members"].as_array().context("members")?;
            // A peer's client address is known once it answered a ping.
            let all_up = members
                .iter()
                .all(|m| m["up"] == true && m["client_address"] != "");
            Ok(all_up.then_some(s))
        })
        .await?;
        ensure!(s["node_id"] == node.id, "{s}");
        for field in ["role", "state"] {
            ensure!(
                s[field].as_str().is_some_and(|r| !r.is_empty()),
                "{field}: {s}"
            );
        }
        for field in ["leader_id", "applied_seqno", "committed_seqno"] {
            ensure!(s[field].as_u64().is_some_and(|n| n > 0), "{field}: {s}");
        }
        let members = s["members"].as_array().context("members")?;
        let ids: Vec<u64> = members.iter().filter_map(|m| m["id"].as_u64()).collect();
        ensure!(ids == [1, 2, 3], "{s}");
        for m in members {
            let n = &cluster.nodes[(m["id"].as_u64().context("id")? - 1) as usize];
            ensure!(
                m["client_address"].as_str() == Some(n.addr.as_str())
                    && m["address"].as_str() == Some(n.peer_addr.as_str())
                    && m["role"] == "voter",
                "member {m}"
            );
        }
        ensure!(
            s["client_address"].as_str() == Some(node.addr.as_str())
                && s["address"].as_str() == Some(node.peer_addr.as_str()),
            "{s}"
        );
    }
    // Every endpoint: a JSON array, one entry each.
    let out = cli(&cluster, 1, &["status", "--json"]).await?;
    expect_code(&out, 0, "status --json of three")?;
    ensure!(json(&out)?.as_array().map(Vec::len) == Some(3));

    let out = cli_raw(&["--endpoints", &cluster.nodes[0].addr, "checksum", "--json"]).await?;
    expect_code(&out, 0, "checksum --json")?;
    let c = json(&out)?;
    ensure!(
        c["seqno"].as_u64().is_some() && c["checksum"].as_u64().is_some(),
        "{c}"
    );
    // Converged nodes print equal checksums at equal seqnos.
    cluster.wait_converged(&[1, 2, 3], READY).await?;
    let out = cli(&cluster, 1, &["checksum", "--json"]).await?;
    let all = json(&out)?;
    let all = all.as_array().context("an array for three endpoints")?;
    ensure!(all.len() == 3, "{all:?}");
    ensure!(
        all.iter()
            .all(|c| (&c["seqno"], &c["checksum"]) == (&all[0]["seqno"], &all[0]["checksum"])),
        "{all:?}"
    );
    Ok(())
}

/// A `trireme txn` coprocess: one command in, one response line out.
struct Coprocess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Coprocess {
    fn spawn(cluster: &Cluster, first: u64, extra: &[&str]) -> Result<Coprocess> {
        let mut eps = cluster.endpoints();
        eps.rotate_left((first - 1) as usize);
        let mut child = Command::new(bin("trireme"))
            .arg("--endpoints")
            .arg(eps.join(","))
            .arg("txn")
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawn trireme txn")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        Ok(Coprocess {
            child,
            stdin,
            stdout,
        })
    }

    /// Sends one command and returns its response line.
    async fn send(&mut self, command: &str) -> Result<String> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        let mut line = String::new();
        let n = tokio::time::timeout(CLI_DEADLINE, self.stdout.read_line(&mut line))
            .await
            .with_context(|| format!("no response to {command:?}"))??;
        ensure!(n > 0, "the coprocess closed stdout after {command:?}");
        Ok(line.trim_end_matches('\n').to_string())
    }

    /// Waits for the exit code.
    async fn exit(mut self) -> Result<i32> {
        let status = tokio::time::timeout(CLI_DEADLINE, self.child.wait())
            .await
            .context("the coprocess did not exit")??;
        status.code().context("killed by a signal")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_coprocess_commits_and_reports_conflicts() -> Result<()> {
    let cluster = started().await?;
    expect_code(&cli(&cluster, 1, &["put", "c", "0"]).await?, 0, "put")?;

    let mut t = Coprocess::spawn(&cluster, 2, &[])?;
    ensure!(t.send("get c").await? == "0");
    ensure!(t.send("get missing").await? == "(nil)");
    ensure!(t.send("put c 1").await? == "OK");
    ensure!(t.send("get c").await? == "1", "reads its own write");
    ensure!(t.send("put 'd e' 'two words'").await? == "OK");
    let line = t.send("scan").await?;
    ensure!(line == "2 keys: c=1 d e=two words", "{line}");
    let line = t.send("bogus").await?;
    ensure!(line.starts_with("error: "), "{line}");
    let line = t.send("commit").await?;
    let seqno: u64 = line
        .strip_prefix("committed ")
        .with_context(|| format!("{line:?}"))?
        .parse()?;
    ensure!(seqno > 0);
    ensure!(t.exit().await? == 0);
    let out = cli(&cluster, 3, &["get", "d e"]).await?;
    ensure!(stdout(&out) == "two words\n", "{:?}", stdout(&out));

    // Two transactions on different nodes read c and write it: the second
    // committer aborts with exit 3.
    let mut a = Coprocess::spawn(&cluster, 1, &["--isolation", "snapshot"])?;
    let mut b = Coprocess::spawn(&cluster, 3, &["--isolation", "snapshot"])?;
    ensure!(a.send("get c").await? == "1");
    ensure!(b.send("get c").await? == "1");
    ensure!(a.send("put c 2").await? == "OK");
    ensure!(b.send("put c 3").await? == "OK");
    let line = a.send("commit").await?;
    ensure!(line.starts_with("committed "), "{line}");
    ensure!(a.exit().await? == 0);
    let line = b.send("commit").await?;
    ensure!(line.starts_with("aborted: write_conflict"), "{line}");
    ensure!(b.exit().await? == 3);
    let out = cli(&cluster, 2, &["get", "c"]).await?;
    ensure!(stdout(&out) == "2\n", "{:?}", stdout(&out));

    // --json: one object per response; rollback exits 0 and writes nothing.
    let mut j = Coprocess::spawn(&cluster, 1, &["--json"])?;
    let v: Value = serde_json::from_str(&j.send("get c").await?)?;
    ensure!(v["key"] == "c" && v["value"] == "2", "{v}");
    let v: Value = serde_json::from_str(&j.send("put c 99").await?)?;
    ensure!(v["ok"] == true, "{v}");
    let v: Value = serde_json::from_str(&j.send("rollback").await?)?;
    ensure!(v["rolled_back"] == true, "{v}");
    ensure!(j.exit().await? == 0);
    let out = cli(&cluster, 2, &["get", "c"]).await?;
    ensure!(
        stdout(&out) == "2\n",
        "a rollback wrote: {:?}",
        stdout(&out)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_on_a_pipe_and_bench() -> Result<()> {
    let cluster = started().await?;
    let mut child = Command::new(bin("trireme"))
        .arg("--endpoints")
        .arg(cluster.endpoints().join(","))
        .arg("shell")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin
        .write_all(
            b"put outside 1\nbegin\nput k v\nget k\nget outside\ncommit\nget k\n\
              begin snapshot\nput k w\nrollback\nget k\nget nothing\n",
        )
        .await?;
    drop(stdin);
    let out = tokio::time::timeout(CLI_DEADLINE, child.wait_with_output())
        .await
        .context("the shell did not exit at the end of its input")??;
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    let expect = |i: usize, pred: &dyn Fn(&str) -> bool| -> Result<()> {
        match lines.get(i) {
            Some(l) if pred(l) => Ok(()),
            _ => bail!(
                "line {i} of the shell output is unexpected: {lines:#?}\nstderr: {}",
                stderr(&out)
            ),
        }
    };
    ensure!(lines.len() == 12, "{lines:#?}\nstderr: {}", stderr(&out));
    expect(0, &|l| l.starts_with("OK "))?;
    expect(1, &|l| l.starts_with("BEGIN serializable at snapshot "))?;
    expect(2, &|l| l == "OK")?;
    expect(3, &|l| l == "v")?;
    expect(4, &|l| l == "1")?;
    expect(5, &|l| l.starts_with("committed "))?;
    expect(6, &|l| l == "v")?;
    expect(7, &|l| l.starts_with("BEGIN snapshot at snapshot "))?;
    expect(8, &|l| l == "OK")?;
    expect(9, &|l| l == "rolled back")?;
    expect(10, &|l| l == "v")?;
    expect(11, &|l| l == "(nil)")?;
    expect_code(&out, 0, "shell")?;

    let out = cli(
        &cluster,
        1,
        &["bench", "--clients", "4", "--duration", "2s", "--json"],
    )
    .await?;
    expect_code(&out, 0, "bench")?;
    let v = json(&out)?;
    ensure!(v["ok"].as_u64().is_some_and(|n| n > 0), "{v}");
    ensure!(v["ops"].as_u64().is_some_and(|n| n > 0), "{v}");
    ensure!(v["errors_total"] == 0, "{v}");

    // Contended transactions: 8 clients, 2 of 4 keys each, no retries.
    let out = cli(
        &cluster,
        1,
        &[
            "bench",
            "--clients",
            "8",
            "--keys",
            "4",
            "--txn",
            "2",
            "--isolation",
            "snapshot",
            "--prefix",
            "txnbench/",
            "--duration",
            "2s",
            "--json",
        ],
    )
    .await?;
    expect_code(&out, 0, "bench --txn")?;
    let v = json(&out)?;
    let commits = v["commits"].as_u64().unwrap_or(0);
    let aborts = v["aborts"].as_u64().unwrap_or(0);
    ensure!(
        commits > 0 && aborts > 0,
        "a contended run commits and aborts: {v}"
    );
    ensure!(v["ok"].as_u64() == Some(commits) && v["reads"] == 0, "{v}");
    ensure!(
        v["errors"]["aborted:write_conflict"].as_u64() == Some(aborts),
        "aborts are write conflicts under SNAPSHOT: {v}"
    );
    let rate = v["abort_rate"].as_f64().unwrap_or(-1.0);
    let expected = aborts as f64 / (commits + aborts) as f64;
    ensure!((rate - expected).abs() < 1e-9, "{v}");
    // The committed transactions wrote the 4 keys (read through another node).
    let out = cli(&cluster, 2, &["scan", "--prefix", "txnbench/"]).await?;
    expect_code(&out, 0, "scan")?;
    ensure!(stdout(&out).lines().count() == 4, "{}", stdout(&out));
    let out = cli(&cluster, 1, &["bench", "--keys", "1", "--txn", "2"]).await?;
    expect_code(&out, 5, "bench --txn 2 over 1 key")?;
    ensure!(
        stderr(&out).contains("--keys must be at least 2"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

/// `scan` pages through the whole range (the server's page is 3 pairs here),
/// `--limit` caps it, and `--json` keeps bytes that are not UTF-8 (base64 in
/// `key_b64`/`value_b64`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_pages_through_everything_and_json_is_binary_safe() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("small-pages.toml");
    std::fs::write(&config, "[limits]\nmax_scan_limit = 3\n")?;
    let config = config.display().to_string();
    let cluster = Cluster::start(3, &["--config", &config])?;
    cluster.wait_leader(&[1, 2, 3], READY).await?;
    let client = cluster.client(1)?;
    let mut expected = String::new();
    for i in 0..10 {
        let (k, v) = (format!("p/{i:02}"), format!("v{i}"));
        client.put(k.as_bytes(), v.as_bytes()).await?;
        expected.push_str(&format!("{k} {v}\n"));
    }
    // Sorts after p/09; neither key nor value is UTF-8.
    client.put(&b"p/\xff\x00"[..], &b"\x80bin"[..]).await?;
    client.put("q/x", "outside").await?;

    // Simple: every pair, in key order, raw bytes, across four pages.
    let out = cli(&cluster, 2, &["scan", "--prefix", "p/"]).await?;
    expect_code(&out, 0, "scan of 11 pairs over 3-pair pages")?;
    let mut want = expected.clone().into_bytes();
    want.extend_from_slice(b"p/\xff\x00 \x80bin\n");
    ensure!(out.stdout == want, "{:?}", stdout(&out));
    ensure!(out.stderr.is_empty(), "{}", stderr(&out));

    // The whole key space without bounds: 12 pairs, q/x last.
    let out = cli(&cluster, 3, &["scan", "--keys-only"]).await?;
    expect_code(&out, 0, "scan of everything")?;
    let lines: Vec<&[u8]> = out.stdout.split(|b| *b == b'\n').collect();
    ensure!(
        lines.len() == 13 && lines[11] == b"q/x" && lines[12].is_empty(),
        "{:?}",
        stdout(&out)
    );

    // --limit caps the total, across pages, and says so.
    let out = cli(&cluster, 1, &["scan", "--prefix", "p/", "--limit", "5"]).await?;
    expect_code(&out, 0, "scan --limit 5")?;
    ensure!(
        stdout(&out)
            == expected
                .lines()
                .take(5)
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
        "{:?}",
        stdout(&out)
    );
    ensure!(stderr(&out).contains("--limit 5"), "{}", stderr(&out));

    // JSON: UTF-8 as text, the rest base64, order kept, no "more".
    let out = cli(&cluster, 1, &["scan", "--prefix", "p/", "--json"]).await?;
    expect_code(&out, 0, "scan --json")?;
    let v = json(&out)?;
    let kvs = v["kvs"].as_array().context("kvs")?;
    ensure!(kvs.len() == 11 && v["more"] == false, "{v}");
    ensure!(kvs[0]["key"] == "p/00" && kvs[0]["value"] == "v0", "{v}");
    ensure!(kvs[9]["key"] == "p/09", "{v}");
    // base64 of b"p/\xff\x00" and b"\x80bin".
    ensure!(
        kvs[10]["key_b64"] == "cC//AA==" && kvs[10]["value_b64"] == "gGJpbg==",
        "{}",
        kvs[10]
    );
    ensure!(kvs[10].get("key").is_none() && kvs[10].get("value").is_none());
    let out = cli(&cluster, 1, &["get", "q/x", "--output", "json"]).await?;
    ensure!(json(&out)?["value"] == "outside", "{}", stdout(&out));

    // Table: a header and aligned columns, escaped bytes.
    let out = cli(
        &cluster,
        2,
        &["scan", "--from", "p/08", "--to", "q/y", "-w", "table"],
    )
    .await?;
    expect_code(&out, 0, "scan --output table")?;
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().collect();
    ensure!(rows.len() == 5, "{text}");
    ensure!(
        rows[0].starts_with("KEY") && rows[0].contains("VALUE") && rows[0].ends_with("VERSION"),
        "{text}"
    );
    ensure!(
        rows[1].starts_with("p/08") && rows[1].contains("v8"),
        "{text}"
    );
    ensure!(
        rows[3].starts_with("p/\\xff\\x00") && rows[3].contains("\\x80bin"),
        "{text}"
    );
    ensure!(
        rows[4].starts_with("q/x") && rows[4].contains("outside"),
        "{text}"
    );
    Ok(())
}
