//! `status` and `checksum`: one report per endpoint.
//!
//! With one endpoint the report is the node's (or the error, with its exit
//! code). With several, every endpoint is asked concurrently and reported in
//! order, failures included; the exit code is the first failure's.

use std::future::Future;

use futures::future::join_all;
use serde_json::{json, Value};
use trireme_client::{Client, Error, Result};

use super::output::{checksum_text, json_line, members_table, status_json, status_text};
use super::{exit_code, Reply, EXIT_OK};

/// `status`.
pub async fn status(client: &Client, json: bool) -> Result<Reply> {
    per_endpoint(
        client,
        json,
        |endpoint| {
            let client = client.clone();
            async move { client.status_of(&endpoint).await }
        },
        status_text,
        status_json,
    )
    .await
}

/// `checksum`.
pub async fn checksum(client: &Client, json: bool) -> Result<Reply> {
    let several = client.endpoints().len() > 1;
    per_endpoint(
        client,
        json,
        |endpoint| {
            let client = client.clone();
            async move { client.checksum_of(&endpoint).await }
        },
        move |endpoint, c| {
            if several {
                format!("{endpoint}: {}\n", checksum_text(c))
            } else {
                format!("{}\n", checksum_text(c))
            }
        },
        |endpoint, c| {
            let mut v = json!(c);
            v["endpoint"] = json!(endpoint);
            v
        },
    )
    .await
}

fn members_reply(m: &trireme_client::Members, json: bool) -> Reply {
    let out = if json {
        json_line(&json!(m))
    } else {
        let leader = if m.leader_id == 0 {
            "unknown".to_string()
        } else {
            m.leader_id.to_string()
        };
        format!("leader {leader}\n{}", members_table(&m.members)).into_bytes()
    };
    Reply {
        out,
        note: None,
        code: EXIT_OK,
    }
}

/// `members`.
pub async fn members(client: &Client, json: bool) -> Result<Reply> {
    Ok(members_reply(&client.members().await?, json))
}

/// `join NODE_ID ADDRESS`.
pub async fn join(client: &Client, args: &super::JoinArgs, json: bool) -> Result<Reply> {
    Ok(members_reply(
        &client.join(args.node_id, args.address.clone()).await?,
        json,
    ))
}

/// `leave [NODE_ID]`.
pub async fn leave(client: &Client, args: &super::LeaveArgs, json: bool) -> Result<Reply> {
    Ok(members_reply(
        &client.leave(args.node_id.unwrap_or(0)).await?,
        json,
    ))
}

fn config_text(c: &trireme_client::ClusterConfig) -> String {
    let mut out = format!("cert_window {}", c.cert_window);
    if c.since_seqno == 0 {
        out.push_str(" (not set yet: the cluster's first leader sets it)");
    } else {
        out.push_str(&format!(" (since seqno {})", c.since_seqno));
    }
    if c.node_cert_window != c.cert_window {
        out.push_str(&format!(
            "; node {} was started with {}, ignored",
            c.node_id, c.node_cert_window
        ));
    }
    out
}

/// `config get`: every endpoint's applied parameters.
pub async fn config_get(client: &Client, json: bool) -> Result<Reply> {
    let several = client.endpoints().len() > 1;
    per_endpoint(
        client,
        json,
        |endpoint| {
            let client = client.clone();
            async move { client.config_of(&endpoint).await }
        },
        move |endpoint, c| {
            if several {
                format!("{endpoint}: {}\n", config_text(c))
            } else {
                format!("{}\n", config_text(c))
            }
        },
        |endpoint, c| {
            let mut v = json!(c);
            v["endpoint"] = json!(endpoint);
            v
        },
    )
    .await
}

/// `config set NAME VALUE`.
pub async fn config_set(client: &Client, name: &str, value: &str, json: bool) -> Result<Reply> {
    let c = client.set_config(name, value).await?;
    Ok(Reply::ok(if json {
        json_line(&json!(c))
    } else {
        format!("{}\n", config_text(&c)).into_bytes()
    }))
}

/// Asks every endpoint, renders each answer, and combines them.
async fn per_endpoint<T, Ask, Fut, Text, Json>(
    client: &Client,
    json: bool,
    ask: Ask,
    text: Text,
    to_json: Json,
) -> Result<Reply>
where
    Ask: Fn(String) -> Fut,
    Fut: Future<Output = Result<T>>,
    Text: Fn(&str, &T) -> String,
    Json: Fn(&str, &T) -> Value,
{
    let endpoints = client.endpoints();
    let answers = join_all(endpoints.iter().cloned().map(ask)).await;
    if endpoints.len() == 1 {
        let answer = answers
            .into_iter()
            .next()
            .expect("one endpoint gives one answer")?;
        let endpoint = &endpoints[0];
        return Ok(Reply::ok(if json {
            json_line(&to_json(endpoint, &answer))
        } else {
            text(endpoint, &answer).into_bytes()
        }));
    }
    let mut code = EXIT_OK;
    let mut first_error: Option<&Error> = None;
    let mut blocks = Vec::new();
    let mut items = Vec::new();
    for (endpoint, answer) in endpoints.iter().zip(&answers) {
        match answer {
            Ok(value) => {
                blocks.push(text(endpoint, value));
                items.push(to_json(endpoint, value));
            }
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                    code = exit_code(e);
                }
                blocks.push(format!("{endpoint}: error: {e}\n"));
                items.push(
                    json!({ "endpoint": endpoint, "error": e.to_string(), "kind": e.kind_name() }),
                );
            }
        }
    }
    let out = if json {
        json_line(&Value::Array(items))
    } else {
        // Multi-line blocks (status) read better apart; one-liners (checksum) do not.
        let separator = if blocks.iter().any(|b| b.lines().count() > 1) {
            "\n"
        } else {
            ""
        };
        blocks.join(separator).into_bytes()
    };
    Ok(Reply {
        out,
        note: first_error.map(|e| format!("error: {e}")),
        code,
    })
}
