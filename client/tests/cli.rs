//! The `trireme` binary against a mock cluster: output formats, exit codes,
//! the `txn` coprocess protocol and the non-interactive shell.

mod mock;

use std::process::Stdio;
use std::sync::atomic::Ordering;

use mock::MockCluster;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// What a run of `trireme` printed and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn trireme(endpoints: &[String], args: &[&str], stdin: &str) -> std::io::Result<Run> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trireme"))
        .args(args)
        // Global options after the command, as users write them.
        .args(["--endpoints", &endpoints.join(","), "--timeout", "3s"])
        .env_remove("TRIREME_ENDPOINTS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    Ok(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[tokio::test]
async fn put_get_del_print_and_exit_as_documented() -> TestResult {
    let cluster = MockCluster::start(1).await?;
    let eps = cluster.endpoints();

    let run = trireme(&eps, &["put", "k", "hello world"], "").await?;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "OK 1\n"),
        "{}",
        run.stderr
    );
    let run = trireme(&eps, &["get", "k"], "").await?;
    assert_eq!((run.code, run.stdout.as_str()), (0, "hello world\n"));
    let run = trireme(&eps, &["get", "k", "--json"], "").await?;
    assert_eq!(
        run.stdout,
        "{\"key\":\"k\",\"value\":\"hello world\",\"version\":1}\n"
    );
    let run = trireme(&eps, &["get", "nope", "--local"], "").await?;
    assert_eq!((run.code, run.stdout.as_str()), (1, ""));

    let run = trireme(&eps, &["put", "k", "x", "--if-version", "7"], "").await?;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("compare_failed"), "{}", run.stderr);
    let run = trireme(&eps, &["put", "k", "x", "--if-version", "1", "--json"], "").await?;
    assert_eq!((run.code, run.stdout.as_str()), (0, "{\"seqno\":2}\n"));

    let run = trireme(&eps, &["del", "k"], "").await?;
    assert_eq!((run.code, run.stdout.as_str()), (0, "OK 3\n"));
    let run = trireme(&eps, &["get", "k"], "").await?;
    assert_eq!(run.code, 1);

    let run = trireme(&eps, &["put", "a-key-longer-than-16", "v"], "").await?;
    assert_eq!(run.code, 5);
    assert!(
        run.stderr
            .starts_with("error: invalid input: key is 20 bytes, over the limit"),
        "{}",
        run.stderr
    );

    let run = trireme(&eps, &["get"], "").await?;
    assert_eq!(run.code, 2);
    Ok(())
}

#[tokio::test]
async fn scan_prints_lines_or_json() -> TestResult {
    let cluster = MockCluster::start(1).await?;
    let eps = cluster.endpoints();
    for (k, v) in [("p/a", "1"), ("p/b", "2"), ("q", "3")] {
        assert_eq!(trireme(&eps, &["put", k, v], "").await?.code, 0);
    }
    let run = trireme(&eps, &["scan", "--prefix", "p/"], "").await?;
    assert_eq!(run.stdout, "p/a 1\np/b 2\n");
    let run = trireme(&eps, &["scan", "--from", "p/b", "--keys-only"], "").await?;
    assert_eq!(run.stdout, "p/b\nq\n");
    let run = trireme(&eps, &["scan", "--limit", "1", "--json"], "").await?;
    let v: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(v["more"], true);
    assert_eq!(v["kvs"][0]["key"], "p/a");
    Ok(())
}

#[tokio::test]
async fn unavailable_cluster_exits_4() -> TestResult {
    let cluster = MockCluster::start(2).await?;
    for node in &cluster.nodes {
        node.unavailable.store(true, Ordering::SeqCst);
    }
    let run = trireme(&cluster.endpoints(), &["put", "k", "v"], "").await?;
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.starts_with("error: cluster unavailable"));
    Ok(())
}

#[tokio::test]
async fn status_and_checksum_report_every_endpoint() -> TestResult {
    let cluster = MockCluster::start(2).await?;
    let eps = cluster.endpoints();
    let run = trireme(&eps, &["status", "--json"], "").await?;
    let v: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    assert_eq!(v[1]["node_id"], 2);
    assert_eq!(v[0]["role"], "leader");
    assert_eq!(v[0]["members"][0]["up"], true);

    let run = trireme(&eps[..1], &["checksum"], "").await?;
    assert_eq!(
        run.stdout,
        "seqno 0 checksum 0x00000000feed0000 keys 0 verdicts 0x0000000000000000\n"
    );
    let run = trireme(&eps[..1], &["checksum", "--json"], "").await?;
    let v: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(v["seqno"], 0);

    cluster.nodes[1].unavailable.store(true, Ordering::SeqCst);
    let run = trireme(&eps, &["status"], "").await?;
    assert_eq!(run.code, 4);
    assert!(run.stdout.contains("node id          1"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("{}: error:", eps[1])));
    Ok(())
}

#[tokio::test]
async fn txn_answers_one_line_per_command_as_a_coprocess() -> TestResult {
    let cluster = MockCluster::start(1).await?;
    let eps = cluster.endpoints();
    assert_eq!(trireme(&eps, &["put", "a", "1"], "").await?.code, 0);

    let mut child = Command::new(env!("CARGO_BIN_EXE_trireme"))
        .args(["txn", "--endpoints", &eps.join(",")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut input = child.stdin.take().ok_or("stdin")?;
    let mut output = BufReader::new(child.stdout.take().ok_or("stdout")?).lines();
    let mut ask = async |line: &str| -> Result<String, Box<dyn std::error::Error>> {
        input.write_all(format!("{line}\n").as_bytes()).await?;
        input.flush().await?;
        Ok(output.next_line().await?.ok_or("eof")?)
    };
    assert_eq!(ask("get a").await?, "1");
    assert_eq!(ask("get b").await?, "(nil)");
    assert_eq!(ask("put b 'two words'").await?, "OK");
    assert_eq!(ask("get b").await?, "two words");
    assert_eq!(ask("bogus").await?.split(':').next(), Some("error"));
    assert_eq!(ask("scan").await?, "2 keys: a=1 b=two words");
    assert_eq!(ask("commit").await?, "committed 2");
    assert_eq!(child.wait().await?.code(), Some(0));

    cluster.store.lock().expect("lock").force_conflicts = 1;
    let run = trireme(&eps, &["txn", "--json"], "put c 3\ncommit\n").await?;
    assert_eq!(run.code, 3);
    let last = run.stdout.lines().last().ok_or("no output")?;
    let v: serde_json::Value = serde_json::from_str(last)?;
    assert_eq!(v["aborted"], "write_conflict");

    let run = trireme(&eps, &["txn"], "put d 4\n").await?;
    assert_eq!((run.code, run.stdout.as_str()), (0, "OK\n"));
    let run = trireme(&eps, &["get", "d"], "").await?;
    assert_eq!(run.code, 1, "EOF rolled back");
    Ok(())
}

#[tokio::test]
async fn shell_runs_commands_and_transactions_from_a_pipe() -> TestResult {
    let cluster = MockCluster::start(1).await?;
    let script =
        "put k v\nget k\nget missing\nbegin snapshot\nput x 1\nget x\ncommit\nget x\nexit\nget k\n";
    let run = trireme(&cluster.endpoints(), &["shell"], script).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            "OK 1",
            "v",
            "(nil)",
            "BEGIN snapshot at snapshot 1",
            "OK",
            "1",
            "committed 2",
            "1"
        ]
    );

    let run = trireme(&cluster.endpoints(), &["shell"], "commit\nfrob\n").await?;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("no transaction is open"),
        "{}",
        run.stderr
    );
    Ok(())
}

#[tokio::test]
async fn bench_reports_json() -> TestResult {
    let cluster = MockCluster::start(2).await?;
    let run = trireme(
        &cluster.endpoints(),
        &[
            "bench",
            "--clients",
            "3",
            "--keys",
            "20",
            "--duration",
            "300ms",
            "--json",
        ],
        "",
    )
    .await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert!(v["ok"].as_u64().unwrap_or(0) > 0);
    assert_eq!(v["errors_total"], 0);
    // Workers were spread over both nodes.
    assert!(cluster
        .nodes
        .iter()
        .all(|n| n.count("get") + n.count("put") > 0));
    Ok(())
}
