//! `get`, `put`, `del`, `scan`.

use serde_json::json;
use trireme_client::{prefix_end, Client, Error, KeyRange, Result, ScanSpec, Versioned};

use super::output::{bytes_json, json_line, kv_json, kv_table, Format};
use super::{DelArgs, GetArgs, PutArgs, Reply, ScanArgs, EXIT_NOT_FOUND};

/// `get`: the value alone and a newline; exit 1 when the key is absent.
pub async fn get(client: &Client, args: &GetArgs, format: Format) -> Result<Reply> {
    let found = client.get(&args.key, args.read.consistency()).await?;
    if format == Format::Table {
        let mut reply = Reply::ok(kv_table(found.as_slice(), false));
        if found.is_none() {
            reply.code = EXIT_NOT_FOUND;
        }
        return Ok(reply);
    }
    Ok(render_get(
        args.key.as_bytes(),
        found.as_ref(),
        format == Format::Json,
    ))
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
    let seqno = match (args.if_version, args.lease) {
        (_, Some(lease)) => client.put_with_lease(key, value, lease).await?,
        (Some(version), None) => client.put_if_version(key, value, version).await?,
        (None, None) => client.put(key, value).await?,
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

/// The scan the arguments describe (one request: `--limit` 0 lets the server
/// choose its page size).
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

/// The scan that continues `spec` after `last`, the last key returned.
pub fn next_page(spec: &ScanSpec, last: &[u8]) -> ScanSpec {
    let mut start = last.to_vec();
    start.push(0);
    let end = match &spec.range {
        KeyRange::All => Vec::new(),
        KeyRange::Prefix(prefix) => prefix_end(prefix),
        KeyRange::Range { end, .. } => end.clone(),
    };
    ScanSpec {
        range: KeyRange::Range { start, end },
        ..spec.clone()
    }
}

/// Reads the whole scan, page after page, every page at the first page's
/// seqno (one consistent state); stops after `args.limit` pairs when it is
/// not 0. Returns the pairs, whether the limit cut the range short, and the
/// seqno.
pub async fn scan_all(client: &Client, args: &ScanArgs) -> Result<(Vec<Versioned>, bool, u64)> {
    let cap = args.limit as usize;
    let mut spec = scan_spec(args).with_limit(0);
    let mut pairs: Vec<Versioned> = Vec::new();
    let mut at = None;
    // Whether to ask for the pairs still wanted, or for the server's page
    // (after a server refused a limit over its max_scan_limit).
    let mut ask_remaining = cap != 0;
    loop {
        let remaining = cap.saturating_sub(pairs.len());
        let limit = if ask_remaining { remaining as u32 } else { 0 };
        let page = client
            .scan_pinned(&spec.clone().with_limit(limit), args.read.consistency(), at)
            .await;
        let (page, mut more, seqno) = match page {
            Err(Error::InvalidInput(m)) if ask_remaining && m.contains("max_scan_limit") => {
                ask_remaining = false;
                continue;
            }
            other => other?,
        };
        at = Some(seqno);
        let progress = !page.is_empty();
        pairs.extend(page);
        if cap != 0 && pairs.len() >= cap {
            more |= pairs.len() > cap;
            pairs.truncate(cap);
            return Ok((pairs, more, seqno));
        }
        match pairs.last() {
            // A server that says "more" without a pair would loop forever.
            Some(last) if more && progress => spec = next_page(&spec, &last.key),
            _ => return Ok((pairs, more, seqno)),
        }
    }
}

/// `scan`: the whole range by default, `key value` lines (keys only with
/// `--keys-only`), a JSON object, or a table.
pub async fn scan(client: &Client, args: &ScanArgs, format: Format) -> Result<Reply> {
    let (kvs, more, seqno) = scan_all(client, args).await?;
    let out = match format {
        Format::Json => {
            let items: Vec<_> = kvs
                .iter()
                .map(|kv| {
                    if args.keys_only {
                        let mut object = bytes_json("key", &kv.key);
                        object.insert("version".into(), json!(kv.version));
                        serde_json::Value::Object(object)
                    } else {
                        kv_json(&kv.key, Some(&kv.value), kv.version)
                    }
                })
                .collect();
            json_line(&json!({ "kvs": items, "more": more, "seqno": seqno }))
        }
        Format::Table => kv_table(&kvs, args.keys_only).into_bytes(),
        Format::Simple => {
            let mut out = Vec::new();
            for kv in &kvs {
                out.extend_from_slice(&kv.key);
                if !args.keys_only {
                    out.push(b' ');
                    out.extend_from_slice(&kv.value);
                }
                out.push(b'\n');
            }
            out
        }
    };
    let mut reply = Reply::ok(out);
    if more {
        reply.note = Some(format!(
            "(more keys follow the {} shown: --limit {} cut the range short)",
            kvs.len(),
            args.limit
        ));
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Not UTF-8: base64 in `value_b64`, no `value`; a UTF-8 key stays text.
        let json = render_get(b"k", Some(&v), true);
        assert_eq!(
            String::from_utf8_lossy(&json.out),
            "{\"key\":\"k\",\"value_b64\":\"dv8=\",\"version\":3}\n"
        );
        let json = render_get(b"\x00\xfe", None, true);
        assert_eq!(
            String::from_utf8_lossy(&json.out),
            "{\"key_b64\":\"AP4=\",\"value\":null,\"version\":0}\n"
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
