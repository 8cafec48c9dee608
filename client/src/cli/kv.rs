//! `get`, `put`, `del`, `scan`.

use serde_json::json;
use trireme_client::{Client, Result, ScanSpec, Versioned};

use super::output::{json_line, kv_json, lossy};
use super::{DelArgs, GetArgs, PutArgs, Reply, ScanArgs, EXIT_NOT_FOUND};

/// `get`: the value alone and a newline; exit 1 when the key is absent.
pub async fn get(client: &Client, args: &GetArgs, json: bool) -> Result<Reply> {
    let found = client.get(&args.key, args.read.consistency()).await?;
    Ok(render_get(args.key.as_bytes(), found.as_ref(), json))
}

/// The reply for a `get` result.
pub fn render_get(key: &[u8], found: Option<&Versioned>, json: bool) -> Reply {
    match (found, json) {
        (Some(v), false) => {
            let mut out = v.value.clone();
            out.push(b'\n');
            Reply::ok(out)
        }
        (Some(v), true) => Reply::ok(json_line(&kv_json(key, Some(&v.value), v.version))),
        (None, json) => Reply {
            out: if json {
                json_line(&kv_json(key, None, 0))
            } else {
                Vec::new()
            },
            note: None,
            code: EXIT_NOT_FOUND,
        },
    }
}

/// `put`: prints `OK <seqno>`.
pub async fn put(client: &Client, args: &PutArgs, json: bool) -> Result<Reply> {
    let (key, value) = (args.key.as_bytes(), args.value.as_bytes());
    let seqno = match args.if_version {
        Some(version) => client.put_if_version(key, value, version).await?,
        None => client.put(key, value).await?,
    };
    Ok(render_seqno(seqno, json))
}

/// `del`: prints `OK <seqno>`.
pub async fn del(client: &Client, args: &DelArgs, json: bool) -> Result<Reply> {
    let seqno = client.delete(args.key.as_bytes(), args.if_version).await?;
    Ok(render_seqno(seqno, json))
}

/// `OK <seqno>`, or `{"seqno":N}`.
pub fn render_seqno(seqno: u64, json: bool) -> Reply {
    if json {
        Reply::ok(json_line(&json!({ "seqno": seqno })))
    } else {
        Reply::ok(format!("OK {seqno}\n"))
    }
}

/// The scan the arguments describe.
pub fn scan_spec(args: &ScanArgs) -> ScanSpec {
    let spec = match (&args.prefix, &args.from, &args.to) {
        (Some(prefix), _, _) => ScanSpec::prefix(prefix.as_bytes()),
        (None, None, None) => ScanSpec::default(),
        (None, from, to) => ScanSpec::range(
            from.as_deref().unwrap_or_default().as_bytes(),
            to.as_deref().unwrap_or_default().as_bytes(),
        ),
    };
    let spec = spec.with_limit(args.limit);
    if args.keys_only {
        spec.keys_only()
    } else {
        spec
    }
}

/// `scan`: `key value` lines (keys only with `--keys-only`).
pub async fn scan(client: &Client, args: &ScanArgs, json: bool) -> Result<Reply> {
    let (kvs, more, seqno) = client
        .scan(&scan_spec(args), args.read.consistency())
        .await?;
    if json {
        let items: Vec<_> = kvs
            .iter()
            .map(|kv| {
                if args.keys_only {
                    json!({ "key": lossy(&kv.key), "version": kv.version })
                } else {
                    kv_json(&kv.key, Some(&kv.value), kv.version)
                }
            })
            .collect();
        return Ok(Reply::ok(json_line(
            &json!({ "kvs": items, "more": more, "seqno": seqno }),
        )));
    }
    let mut out = Vec::new();
    for kv in &kvs {
        out.extend_from_slice(&kv.key);
        if !args.keys_only {
            out.push(b' ');
            out.extend_from_slice(&kv.value);
        }
        out.push(b'\n');
    }
    let mut reply = Reply::ok(out);
    if more {
        reply.note = Some(format!(
            "(more keys follow the {} shown; raise --limit or scan --from after the last key)",
            kvs.len()
        ));
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trireme_client::KeyRange;

    #[test]
    fn get_prints_the_raw_value_or_exits_1() {
        let v = Versioned {
            key: b"k".to_vec(),
            value: b"v\xff".to_vec(),
            version: 3,
        };
        assert_eq!(
            render_get(b"k", Some(&v), false),
            Reply::ok(b"v\xff\n".to_vec())
        );
        let json = render_get(b"k", Some(&v), true);
        assert_eq!(
            String::from_utf8_lossy(&json.out),
            "{\"key\":\"k\",\"value\":\"v\u{fffd}\",\"version\":3}\n"
        );
        let missing = render_get(b"k", None, false);
        assert_eq!((missing.code, missing.out.len()), (EXIT_NOT_FOUND, 0));
    }

    #[test]
    fn scan_arguments_become_a_spec() {
        let args = |prefix: Option<&str>, from: Option<&str>, to: Option<&str>| ScanArgs {
            prefix: prefix.map(Into::into),
            from: from.map(Into::into),
            to: to.map(Into::into),
            limit: 5,
            keys_only: true,
            read: super::super::ReadArgs {
                local: false,
                consistency: None,
            },
        };
        let spec = scan_spec(&args(Some("p"), None, None));
        assert_eq!(spec.range, KeyRange::Prefix(b"p".to_vec()));
        assert!(spec.keys_only && spec.limit == 5);
        assert_eq!(scan_spec(&args(None, None, None)).range, KeyRange::All);
        assert_eq!(
            scan_spec(&args(None, Some("a"), None)).range,
            KeyRange::Range {
                start: b"a".to_vec(),
                end: Vec::new()
            }
        );
    }
}
