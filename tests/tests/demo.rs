//! `trireme demo`: a 3-node cluster in a temporary directory, the shell on
//! it, and nothing left behind after `exit` or Ctrl-C.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use trireme_tests::{bin, wait_for};

/// Cluster start-up plus a few commands, on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(45);

/// What the demo tells on stderr before the shell opens.
struct Started {
    dir: PathBuf,
    pids: Vec<i32>,
}

/// Starts `trireme demo` with piped stdio (`trireme-server` is built next to it).
fn spawn_demo() -> Result<Child> {
    let _ = bin("trireme-server");
    Command::new(bin("trireme"))
        .arg("demo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start trireme demo")
}

/// Reads stderr until the demo says the cluster is ready; returns its
/// directory and node pids.
async fn read_start(stderr: &mut BufReader<ChildStderr>) -> Result<Started> {
    let mut dir = None;
    let mut pids = Vec::new();
    let mut seen = String::new();
    let read = async {
        loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).await? == 0 {
                anyhow::bail!("the demo's stderr ended before it was ready:\n{seen}");
            }
            seen.push_str(&line);
            if let Some(d) = line.trim().strip_prefix("demo cluster in ") {
                dir = Some(PathBuf::from(d));
            }
            if let Some(rest) = line.split(": pid ").nth(1) {
                let pid = rest.split_whitespace().next().unwrap_or_default();
                pids.push(
                    pid.parse::<i32>()
                        .with_context(|| format!("pid in {line:?}"))?,
                );
            }
            if line.starts_with("cluster ready") {
                return Ok(());
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .context("the demo was not ready in time")??;
    Ok(Started {
        dir: dir.context("the demo did not name its directory")?,
        pids,
    })
}

/// Whether process `pid` still exists (a zombie counts as gone: it has
/// exited and only waits to be reaped).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Checks the demo's nodes and directory are gone.
async fn expect_cleaned_up(started: &Started) -> Result<()> {
    for pid in &started.pids {
        wait_for(
            "a demo node to be gone",
            Duration::from_secs(10),
            || async { Ok((!alive(*pid)).then_some(())) },
        )
        .await?;
    }
    ensure!(
        !started.dir.exists(),
        "{} is still there",
        started.dir.display()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_a_cluster_and_removes_it_on_exit() -> Result<()> {
    let mut demo = spawn_demo()?;
    let mut stderr = BufReader::new(demo.stderr.take().context("stderr")?);
    let started = read_start(&mut stderr).await?;
    ensure!(started.pids.len() == 3, "pids {:?}", started.pids);
    for pid in &started.pids {
        ensure!(alive(*pid), "node pid {pid} is not running");
    }
    ensure!(started.dir.join("node1.log").exists());

    let mut stdin = demo.stdin.take().context("stdin")?;
    stdin
        .write_all(b"put greeting hello\nget greeting\nscan\nstatus\nexit\n")
        .await?;
    drop(stdin);
    let mut out = String::new();
    let mut stdout = demo.stdout.take().context("stdout")?;
    let status = tokio::time::timeout(DEADLINE, async {
        stdout.read_to_string(&mut out).await?;
        demo.wait().await
    })
    .await
    .context("the demo did not exit in time")??;
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest).await;
    ensure!(status.success(), "exit {status}\n{out}\n{rest}");
    let lines: Vec<&str> = out.lines().collect();
    ensure!(lines.first().is_some_and(|l| l.starts_with("OK ")), "{out}");
    ensure!(lines.get(1) == Some(&"hello"), "{out}");
    ensure!(lines.get(2) == Some(&"greeting hello"), "{out}");
    // `status` of all three endpoints: three node blocks, all SYNCED.
    ensure!(out.matches("SYNCED").count() == 3, "{out}");
    ensure!(rest.contains("stopped and removed"), "{rest}");
    expect_cleaned_up(&started).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_cleans_up_on_ctrl_c() -> Result<()> {
    let mut demo = spawn_demo()?;
    let mut stderr = BufReader::new(demo.stderr.take().context("stderr")?);
    let started = read_start(&mut stderr).await?;
    ensure!(started.pids.len() == 3, "pids {:?}", started.pids);
    // Stdin stays open: the shell waits for a line when SIGINT arrives.
    let pid = demo.id().context("demo pid")? as i32;
    // SAFETY: kill(2) on the pid of the child this test spawned and still holds.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let status = tokio::time::timeout(DEADLINE, demo.wait())
        .await
        .context("the demo did not exit after SIGINT")??;
    ensure!(status.code() == Some(130), "exit {status}");
    expect_cleaned_up(&started).await
}
