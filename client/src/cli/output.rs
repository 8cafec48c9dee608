//! Text and JSON renderings shared by the commands.

use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::{json, Map, Value};
use trireme_client::{Checksum, Error, NodeStatus, Versioned};

/// How `get` and `scan` print their results (`--output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Raw bytes: the value for `get`, `key value` lines for `scan`.
    #[default]
    Simple,
    /// One JSON object; keys and values binary-safe (see [`put_bytes`]).
    Json,
    /// An aligned table with a header: KEY, VALUE, VERSION.
    Table,
}

impl Format {
    /// `Json` when `json` is set, else `Simple` (for the callers that only
    /// know `--json`).
    pub fn from_json(json: bool) -> Format {
        if json {
            Format::Json
        } else {
            Format::Simple
        }
    }
}

/// Bytes as text, invalid UTF-8 replaced (human-readable text only: JSON
/// uses [`put_bytes`]).
pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Sets `field` in `object` to `bytes` without loss: the string itself when
/// the bytes are valid UTF-8, otherwise `<field>_b64` with standard base64
/// (padded) and no `field` at all.
pub fn put_bytes(object: &mut Map<String, Value>, field: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(field.to_string(), json!(text)),
        Err(_) => object.insert(
            format!("{field}_b64"),
            json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    };
}

/// A JSON object holding `field` as [`put_bytes`] writes it.
pub fn bytes_json(field: &str, bytes: &[u8]) -> Map<String, Value> {
    let mut object = Map::new();
    put_bytes(&mut object, field, bytes);
    object
}

/// Bytes for a table cell: text with control characters and invalid UTF-8
/// escaped, so that one pair stays on one line.
pub fn cell(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// `pairs` as a table: KEY, VALUE (unless `keys_only`), VERSION.
pub fn kv_table(pairs: &[Versioned], keys_only: bool) -> String {
    let rows: Vec<[String; 3]> = pairs
        .iter()
        .map(|kv| [cell(&kv.key), cell(&kv.value), kv.version.to_string()])
        .collect();
    let width = |i: usize, title: &str| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .max()
            .unwrap_or(0)
            .max(title.len())
    };
    let (wk, wv) = (width(0, "KEY"), width(1, "VALUE"));
    let mut out = String::new();
    let mut line = |k: &str, v: &str, ver: &str| {
        let text = if keys_only {
            format!("{k:<wk$}  {ver}")
        } else {
            format!("{k:<wk$}  {v:<wv$}  {ver}")
        };
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line("KEY", "VALUE", "VERSION");
    for [k, v, ver] in &rows {
        line(k, v, ver);
    }
    out
}

/// A JSON line: the value and a newline.
pub fn json_line(value: &Value) -> Vec<u8> {
    let mut out = value.to_string().into_bytes();
    out.push(b'\n');
    out
}

/// `{"key":..,"value":..,"version":N}`; `value` is null when absent; keys
/// and values that are not UTF-8 become `key_b64`/`value_b64`.
pub fn kv_json(key: &[u8], value: Option<&[u8]>, version: u64) -> Value {
    let mut object = bytes_json("key", key);
    match value {
        Some(value) => put_bytes(&mut object, "value", value),
        None => {
            object.insert("value".into(), Value::Null);
        }
    }
    object.insert("version".into(), json!(version));
    Value::Object(object)
}

/// The JSON object for an error: its message and kind, and for aborts the
/// conflicting key and seqno.
pub fn error_json(err: &Error) -> Value {
    let mut value = json!({ "error": err.to_string(), "kind": err.kind_name() });
    if let Error::Aborted { key, seqno, .. } = err {
        if let (Some(key), Value::Object(object)) = (key, &mut value) {
            put_bytes(object, "conflict_key", key);
        } else {
            value["conflict_key"] = Value::Null;
        }
        value["conflict_seqno"] = json!(seqno);
    }
    value
}

/// The status of one node as a block of text.
pub fn status_text(endpoint: &str, s: &NodeStatus) -> String {
    let leader = if s.leader_id == 0 {
        "none".to_string()
    } else {
        s.leader_id.to_string()
    };
    let mut out = String::new();
    let state = if s.state_reason.is_empty() {
        s.state.clone()
    } else {
        format!("{} ({})", s.state, s.state_reason)
    };
    let health = match (s.cluster_health.as_str(), s.unreplicated_voters.as_slice()) {
        ("", _) => "(ask the leader)".to_string(),
        (h, []) => h.to_string(),
        (h, voters) => format!("{h} (no replication progress to {voters:?})"),
    };
    let rows: [(&str, String); 19] = [
        ("endpoint", endpoint.to_string()),
        ("node id", s.node_id.to_string()),
        ("client address", s.client_address.clone()),
        ("peer address", s.address.clone()),
        ("role", s.role.clone()),
        ("state", state),
        ("cluster size", s.cluster_size.to_string()),
        ("cluster health", health),
        ("apply lag", s.apply_lag.to_string()),
        (
            "log retained",
            format!(
                "{} entries ({}..={}), {} bytes",
                s.log_retained, s.log_first_index, s.last_log_index, s.log_retained_bytes
            ),
        ),
        (
            "snapshots",
            format!(
                "{} sent, {} received",
                s.snapshots_sent, s.snapshots_received
            ),
        ),
        (
            "flow control",
            format!("{} ms paused", s.flow_control_paused_ms),
        ),
        ("evictions", s.evictions.to_string()),
        ("leader", leader),
        ("term", s.term.to_string()),
        ("applied seqno", s.applied_seqno.to_string()),
        ("committed seqno", s.committed_seqno.to_string()),
        ("commits", s.commits.to_string()),
        ("cert failures", cert_failures(s)),
    ];
    for (name, value) in rows {
        let _ = writeln!(out, "{name:<16} {value}");
    }
    let _ = writeln!(out, "members          {}", s.members.len());
    out.push_str(&members_table(&s.members));
    out
}

/// The members as a table: id, client address, peer address, role, up.
pub fn members_table(members: &[trireme_client::MemberStatus]) -> String {
    let mut out = String::new();
    let client = |m: &trireme_client::MemberStatus| {
        if m.client_address.is_empty() {
            "-".to_string()
        } else {
            m.client_address.clone()
        }
    };
    let cwidth = members
        .iter()
        .map(|m| client(m).len())
        .max()
        .unwrap_or(0)
        .max("CLIENT".len());
    let width = members
        .iter()
        .map(|m| m.address.len())
        .max()
        .unwrap_or(0)
        .max("PEER".len());
    let _ = writeln!(
        out,
        "  {:<6} {:<cwidth$}  {:<width$}  {:<8} UP",
        "ID", "CLIENT", "PEER", "ROLE"
    );
    for m in members {
        let up = match (m.up, m.stalled) {
            (true, true) => "stalled",
            (true, false) => "yes",
            (false, _) => "no",
        };
        let _ = writeln!(
            out,
            "  {:<6} {:<cwidth$}  {:<width$}  {:<8} {up}",
            m.id,
            client(m),
            m.address,
            m.role
        );
    }
    out
}

/// `N` or `N (write_conflict=a, read_conflict=b)`.
fn cert_failures(s: &NodeStatus) -> String {
    let reasons: Vec<String> = s
        .cert_failures_by_reason
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{reason}={n}"))
        .collect();
    if reasons.is_empty() {
        s.cert_failures.to_string()
    } else {
        format!("{} ({})", s.cert_failures, reasons.join(", "))
    }
}

/// The status of one node as JSON, with the endpoint it was asked at.
pub fn status_json(endpoint: &str, s: &NodeStatus) -> Value {
    let mut value = json!(s);
    value["endpoint"] = json!(endpoint);
    value
}

/// `seqno N checksum 0x... keys K`.
pub fn checksum_text(c: &Checksum) -> String {
    format!(
        "seqno {} checksum {:#018x} keys {} verdicts {:#018x}",
        c.seqno, c.checksum, c.keys, c.verdict_chain
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use trireme_client::MemberStatus;

    #[test]
    fn status_renders_members_and_the_leader() {
        let s = NodeStatus {
            node_id: 2,
            address: "10.0.0.2:7421".into(),
            client_address: "10.0.0.2:7420".into(),
            role: "follower".into(),
            state: "SYNCED".into(),
            leader_id: 0,
            term: 4,
            applied_seqno: 10,
            committed_seqno: 11,
            commits: 9,
            cert_failures: 1,
            cert_failures_by_reason: [("write_conflict".to_string(), 1)].into(),
            duplicates: 0,
            server_retries: 0,
            write_sets_applied: 10,
            batches_applied: 3,
            members: vec![MemberStatus {
                id: 1,
                address: "10.0.0.1:7421".into(),
                client_address: "10.0.0.1:7420".into(),
                role: "voter".into(),
                up: false,
                stalled: false,
            }],
            ..Default::default()
        };
        let text = status_text("n2:7420", &s);
        assert!(text.contains("leader           none"));
        assert!(text.contains("cluster health   (ask the leader)"), "{text}");
        let degraded = NodeStatus {
            cluster_health: "DEGRADED".into(),
            unreplicated_voters: vec![3],
            ..s.clone()
        };
        let text_degraded = status_text("n2:7420", &degraded);
        assert!(
            text_degraded.contains("cluster health   DEGRADED (no replication progress to [3])"),
            "{text_degraded}"
        );
        assert!(
            text.contains("cert failures    1 (write_conflict=1)"),
            "{text}"
        );
        assert!(
            text.contains("  1      10.0.0.1:7420  10.0.0.1:7421  voter    no"),
            "{text}"
        );
        assert!(
            text.contains("client address   10.0.0.2:7420")
                && text.contains("peer address     10.0.0.2:7421"),
            "{text}"
        );
        let v = status_json("n2:7420", &s);
        assert_eq!(v["node_id"], 2);
        assert_eq!(v["members"][0]["up"], false);
        assert_eq!(v["endpoint"], "n2:7420");
    }

    #[test]
    fn checksum_is_hex() {
        let c = Checksum {
            seqno: 3,
            checksum: 0xbeef,
            keys: 2,
            verdict_chain: 1,
        };
        assert_eq!(
            checksum_text(&c),
            "seqno 3 checksum 0x000000000000beef keys 2 verdicts 0x0000000000000001"
        );
    }

    #[test]
    fn aborts_in_json_name_the_conflict() {
        let v = error_json(&Error::Aborted {
            kind: "write_conflict".into(),
            key: Some(b"k".to_vec()),
            seqno: Some(4),
            message: "m".into(),
        });
        assert_eq!(v["kind"], "aborted:write_conflict");
        assert_eq!(v["conflict_key"], "k");
        assert_eq!(v["conflict_seqno"], 4);
    }
}
