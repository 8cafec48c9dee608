//! `lease grant|keep-alive|revoke|timetolive|list`.

use std::io::Write;
use std::time::Duration;

use serde_json::json;
use trireme_client::{Client, Error, Result};

use super::output::json_line;
use super::{LeaseCommand, Reply, EXIT_NOT_FOUND};

/// Runs one `lease` subcommand.
pub async fn run(client: &Client, command: &LeaseCommand, json: bool) -> Result<Reply> {
    match command {
        LeaseCommand::Grant { ttl, id } => {
            let (id, ttl) = client.lease_grant(*ttl, id.unwrap_or(0)).await?;
            Ok(Reply::ok(if json {
                json_line(&json!({ "id": id, "ttl": ttl }))
            } else {
                format!("lease {id} granted with TTL {ttl}s\n").into_bytes()
            }))
        }
        LeaseCommand::Revoke { id } => {
            let seqno = client.lease_revoke(*id).await?;
            Ok(Reply::ok(if json {
                json_line(&json!({ "id": id, "seqno": seqno }))
            } else {
                format!("lease {id} revoked at seqno {seqno}\n").into_bytes()
            }))
        }
        LeaseCommand::KeepAlive { id, once } => keep_alive(client, *id, *once, json).await,
        LeaseCommand::TimeToLive { id, keys } => {
            let Some(info) = client.lease_time_to_live(*id, *keys).await? else {
                return Ok(not_found(*id, json));
            };
            let names: Vec<String> = info
                .keys
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            Ok(Reply::ok(if json {
                json_line(&json!({
                    "id": info.id,
                    "granted_ttl": info.granted_ttl,
                    "remaining_ttl": info.remaining_ttl,
                    "keys": names,
                }))
            } else {
                let mut out = format!(
                    "lease {} granted with TTL {}s, remaining {}s",
                    info.id, info.granted_ttl, info.remaining_ttl
                );
                if *keys {
                    out.push_str(&format!(", attached keys [{}]", names.join(", ")));
                }
                out.push('\n');
                out.into_bytes()
            }))
        }
        LeaseCommand::List => {
            let ids = client.lease_list().await?;
            Ok(Reply::ok(if json {
                json_line(&json!({ "ids": ids }))
            } else {
                ids.iter()
                    .map(|id| format!("{id}\n"))
                    .collect::<String>()
                    .into_bytes()
            }))
        }
    }
}

/// `lease ID not found` (exit 1), or `{"id":ID,"found":false}`.
fn not_found(id: i64, json: bool) -> Reply {
    Reply {
        out: if json {
            json_line(&json!({ "id": id, "found": false }))
        } else {
            Vec::new()
        },
        note: Some(format!("lease {id} not found")),
        code: EXIT_NOT_FOUND,
    }
}

/// Keeps lease `id` alive: once, or every third of its TTL until it is gone
/// (exit 1: not found or expired) or the command is stopped. Prints one
/// line per keep-alive.
async fn keep_alive(client: &Client, id: i64, once: bool, json: bool) -> Result<Reply> {
    loop {
        let ttl = client.lease_keep_alive(id).await?;
        if ttl <= 0 {
            return Ok(not_found(id, json));
        }
        let line = if json {
            json_line(&json!({ "id": id, "ttl": ttl }))
        } else {
            format!("lease {id} kept alive with TTL {ttl}s\n").into_bytes()
        };
        if once {
            return Ok(Reply::ok(line));
        }
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&line)
            .and_then(|()| stdout.flush())
            .map_err(|e| Error::Other(format!("writing to stdout: {e}")))?;
        drop(stdout);
        let period = Duration::from_millis((ttl as u64).saturating_mul(1000) / 3)
            .max(Duration::from_millis(100));
        tokio::time::sleep(period).await;
    }
}
