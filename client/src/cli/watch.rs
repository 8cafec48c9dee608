//! `watch KEY | --prefix P | --from A [--to B] [--from-seqno N]`: one change a line.

use std::io::Write;

use futures::StreamExt;
use serde_json::{json, Map, Value};
use trireme_client::{Client, Result, WatchEvent, WatchMessage, WatchOptions, WatchTarget};

use super::output::{cell, json_line, put_bytes};
use super::{Reply, WatchArgs};

/// What the arguments watch.
pub fn target(args: &WatchArgs) -> WatchTarget {
    match (&args.key, &args.prefix, &args.from) {
        (_, Some(p), _) => WatchTarget::Prefix(p.as_bytes().to_vec()),
        (_, None, Some(from)) => WatchTarget::Range(
            from.as_bytes().to_vec(),
            args.to.as_ref().map(|t| t.as_bytes().to_vec()),
        ),
        (Some(k), None, None) => WatchTarget::Key(k.as_bytes().to_vec()),
        (None, None, None) => WatchTarget::Prefix(Vec::new()),
    }
}

/// Follows the watch, printing each change as it arrives, until `--limit`
/// changes were printed, the watch fails, or the process is stopped.
pub async fn run(client: &Client, args: &WatchArgs, json: bool) -> Result<Reply> {
    let options = WatchOptions {
        start_seqno: args.from_seqno,
        prev_value: args.prev,
        progress_interval: args.progress_interval,
    };
    let mut stream = Box::pin(client.watch(target(args), options));
    let mut printed = 0u64;
    while let Some(msg) = stream.next().await {
        let mut out = Vec::new();
        match msg? {
            WatchMessage::Events { events, .. } => {
                for e in &events {
                    if args.limit.is_some_and(|l| printed >= l) {
                        break;
                    }
                    out.extend(render_event(e, json));
                    printed += 1;
                }
            }
            WatchMessage::Progress { seqno } => {
                if args.progress {
                    out.extend(render_progress(seqno, json));
                }
            }
        }
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(&out)
            .and_then(|()| stdout.flush())
            .is_err()
        {
            // The reader went away (`trireme watch ... | head`).
            return Ok(Reply::ok(Vec::new()));
        }
        if args.limit.is_some_and(|l| printed >= l) {
            break;
        }
    }
    Ok(Reply::ok(Vec::new()))
}

/// `PUT <seqno> <key> <value>` or `DELETE <seqno> <key>` (escaped so one
/// change stays on one line; `--json` is lossless), and with `--prev` the
/// previous value at the end (`prev=<value>@<version>`, or `prev=-`).
pub fn render_event(e: &WatchEvent, json: bool) -> Vec<u8> {
    if json {
        let mut object = Map::new();
        object.insert(
            "type".into(),
            json!(if e.value.is_some() { "put" } else { "delete" }),
        );
        object.insert("seqno".into(), json!(e.version));
        put_bytes(&mut object, "key", &e.key);
        match &e.value {
            Some(v) => put_bytes(&mut object, "value", v),
            None => {
                object.insert("value".into(), Value::Null);
            }
        }
        if let Some((version, value)) = &e.prev {
            put_bytes(&mut object, "prev_value", value);
            object.insert("prev_version".into(), json!(version));
        }
        return json_line(&Value::Object(object));
    }
    let mut line = match &e.value {
        Some(v) => format!("PUT {} {} {}", e.version, cell(&e.key), cell(v)),
        None => format!("DELETE {} {}", e.version, cell(&e.key)),
    };
    if let Some((version, value)) = &e.prev {
        line.push_str(&format!(" prev={}@{version}", cell(value)));
    }
    line.push('\n');
    line.into_bytes()
}

/// `PROGRESS <seqno>` or `{"type":"progress","seqno":N}`.
pub fn render_progress(seqno: u64, json: bool) -> Vec<u8> {
    if json {
        json_line(&json!({ "type": "progress", "seqno": seqno }))
    } else {
        format!("PROGRESS {seqno}\n").into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_render_one_line_each_and_binary_safe() {
        let put = WatchEvent {
            key: b"a\nb".to_vec(),
            value: Some(vec![0xff, b'x']),
            version: 7,
            prev: None,
        };
        assert_eq!(render_event(&put, false), b"PUT 7 a\\nb \\xffx\n");
        let line = String::from_utf8(render_event(&put, true)).expect("utf8");
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["type"], "put");
        assert_eq!(v["key"], "a\nb");
        assert_eq!(v["value_b64"], "/3g=");
        assert_eq!(v["seqno"], 7);
        let del = WatchEvent {
            key: b"k".to_vec(),
            value: None,
            version: 9,
            prev: Some((7, b"old".to_vec())),
        };
        assert_eq!(render_event(&del, false), b"DELETE 9 k prev=old@7\n");
        let v: Value = serde_json::from_slice(&render_event(&del, true)).expect("json");
        assert_eq!(v["type"], "delete");
        assert!(v["value"].is_null());
        assert_eq!(v["prev_value"], "old");
        assert_eq!(render_progress(12, false), b"PROGRESS 12\n");
    }
}
