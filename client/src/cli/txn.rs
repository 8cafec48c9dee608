//! `txn`: one transaction driven over stdin/stdout, one command per line and
//! one response line per command, so that a test harness can run it as a
//! coprocess.
//!
//! Commands: `get K`, `put K V`, `del K`, `scan [PREFIX]`, `commit`,
//! `rollback` (words split shell-style: quote values with spaces). Responses
//! (text): the value or `(nil)`; `OK`; `N keys: k1=v1 k2=v2`; `committed
//! SEQNO` (exit 0); `aborted: KIND: REASON` (exit 3); `rolled back` (exit 0);
//! `error: ...` for a failed command, which leaves the transaction open. In
//! text, `\`, newline and carriage return in keys and values are escaped as
//! `\\`, `\n`, `\r` so that every response is one line. With `--json`, each
//! response is one JSON object. EOF without `commit` rolls back.
//!
//! The transaction begins (takes its snapshot) at the first command.

use std::io::{BufRead, Write};

use serde_json::json;
use tokio::runtime::Runtime;
use trireme_client::{Client, Error, Isolation, Transaction};

use super::line::split_words;
use super::output::{bytes_json, error_json, lossy, put_bytes};
use super::{exit_code, EXIT_ABORTED, EXIT_OK, EXIT_OTHER};

/// One command of the transaction protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnCommand {
    /// Read a key.
    Get(String),
    /// Buffer a write.
    Put(String, String),
    /// Buffer a delete.
    Del(String),
    /// Read every key with a prefix (empty: all keys).
    Scan(String),
    /// Read every key in `[start, end)` (empty end: unbounded).
    ScanRange(String, String),
    /// Commit and end.
    Commit,
    /// Roll back and end.
    Rollback,
}

/// Parses one protocol line; `None` for a blank line or a `#` comment.
pub fn parse_txn_line(line: &str) -> Result<Option<TxnCommand>, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let mut words = split_words(trimmed)?.into_iter();
    let Some(verb) = words.next() else {
        return Ok(None);
    };
    let args: Vec<String> = words.collect();
    let command = match (verb.to_ascii_lowercase().as_str(), args.as_slice()) {
        ("get", [key]) => TxnCommand::Get(key.clone()),
        ("put" | "set", [key, value]) => TxnCommand::Put(key.clone(), value.clone()),
        ("del" | "delete", [key]) => TxnCommand::Del(key.clone()),
        ("scan", []) => TxnCommand::Scan(String::new()),
        ("scan", [prefix]) => TxnCommand::Scan(prefix.clone()),
        ("commit", []) => TxnCommand::Commit,
        ("rollback" | "abort", []) => TxnCommand::Rollback,
        ("get", _) => return Err("usage: get KEY".into()),
        ("put" | "set", _) => return Err("usage: put KEY VALUE (quote values with spaces)".into()),
        ("del" | "delete", _) => return Err("usage: del KEY".into()),
        ("scan", _) => return Err("usage: scan [PREFIX]".into()),
        ("commit", _) => return Err("usage: commit".into()),
        ("rollback" | "abort", _) => return Err("usage: rollback".into()),
        (other, _) => {
            return Err(format!(
                "unknown command {other:?} (expected get, put, del, scan, commit or rollback)"
            ))
        }
    };
    Ok(Some(command))
}

/// The response to one command: its line, and the exit code if it ended the
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The response line, without its newline.
    pub line: String,
    /// Set when the transaction is over (committed, aborted, rolled back).
    pub exit: Option<u8>,
    /// Set when the command failed.
    pub failed: Option<u8>,
}

impl Step {
    fn ok(line: String) -> Step {
        Step {
            line,
            exit: None,
            failed: None,
        }
    }

    /// The response to a line that does not parse.
    pub fn usage(message: String, json: bool) -> Step {
        Step {
            line: if json {
                json!({ "error": message, "kind": "usage" }).to_string()
            } else {
                format!("error: {message}")
            },
            exit: None,
            failed: Some(EXIT_OTHER),
        }
    }

    fn error(err: &Error, json: bool) -> Step {
        Step {
            line: if json {
                error_json(err).to_string()
            } else {
                format!("error: {err}")
            },
            exit: None,
            failed: Some(exit_code(err)),
        }
    }
}

/// One transaction, begun lazily, executing protocol commands.
pub struct TxnSession {
    /// The client the transaction runs on.
    client: Client,
    /// Its isolation level.
    isolation: Isolation,
    /// The transaction, once begun.
    tx: Option<Transaction>,
}

impl TxnSession {
    /// A session that begins its transaction at the first command.
    pub fn new(client: Client, isolation: Isolation) -> TxnSession {
        TxnSession {
            client,
            isolation,
            tx: None,
        }
    }

    /// Begins the transaction now (if not yet begun); returns its snapshot.
    pub async fn begin(&mut self) -> Result<u64, Error> {
        // Begun with `Client::begin`, so the snapshot is already taken.
        self.transaction()
            .await?
            .snapshot()
            .ok_or_else(|| Error::Other("a begun transaction has no snapshot".into()))
    }

    async fn transaction(&mut self) -> Result<&Transaction, Error> {
        if self.tx.is_none() {
            self.tx = Some(self.client.begin(self.isolation).await?);
        }
        self.tx
            .as_ref()
            .ok_or_else(|| Error::Other("the transaction did not begin".into()))
    }

    /// Runs one command and renders its response.
    pub async fn execute(&mut self, command: TxnCommand, json: bool) -> Step {
        match command {
            TxnCommand::Commit => self.commit(json).await,
            TxnCommand::Rollback => {
                if let Some(tx) = self.tx.take() {
                    tx.rollback();
                }
                Step {
                    line: if json {
                        json!({ "rolled_back": true }).to_string()
                    } else {
                        "rolled back".into()
                    },
                    exit: Some(EXIT_OK),
                    failed: None,
                }
            }
            other => match self.operate(other, json).await {
                Ok(line) => Step::ok(line),
                Err(e) => Step::error(&e, json),
            },
        }
    }

    async fn operate(&mut self, command: TxnCommand, json: bool) -> Result<String, Error> {
        let tx = self.transaction().await?;
        Ok(match command {
            TxnCommand::Get(key) => {
                let value = tx.get(&key).await?;
                render_get(key.as_bytes(), value.as_deref(), json)
            }
            TxnCommand::Put(key, value) => {
                tx.put(key, value)?;
                render_ok(json)
            }
            TxnCommand::Del(key) => {
                tx.delete(key)?;
                render_ok(json)
            }
            TxnCommand::Scan(prefix) => render_scan(&tx.scan(prefix).await?, json),
            TxnCommand::ScanRange(start, end) => {
                render_scan(&tx.scan_range(start, end).await?, json)
            }
            TxnCommand::Commit | TxnCommand::Rollback => {
                return Err(Error::Other("commit and rollback end the session".into()))
            }
        })
    }

    async fn commit(&mut self, json: bool) -> Step {
        let result = match self.transaction().await {
            Ok(_) => match self.tx.take() {
                Some(tx) => tx.commit().await,
                None => Err(Error::Other("the transaction did not begin".into())),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(seqno) => Step {
                line: if json {
                    json!({ "committed": true, "seqno": seqno }).to_string()
                } else {
                    format!("committed {seqno}")
                },
                exit: Some(EXIT_OK),
                failed: None,
            },
            Err(Error::Aborted {
                kind,
                key,
                seqno,
                message,
            }) => Step {
                line: if json {
                    let mut v = json!({
                        "committed": false,
                        "aborted": kind,
                        "conflict_key": null,
                        "conflict_seqno": seqno,
                        "error": message,
                    });
                    if let (Some(key), serde_json::Value::Object(object)) = (&key, &mut v) {
                        object.remove("conflict_key");
                        put_bytes(object, "conflict_key", key);
                    }
                    v.to_string()
                } else {
                    format!("aborted: {kind}: {}", escape(message.as_bytes()))
                },
                exit: Some(EXIT_ABORTED),
                failed: Some(EXIT_ABORTED),
            },
            Err(e) => {
                let mut step = Step::error(&e, json);
                step.exit = step.failed;
                step
            }
        }
    }

    /// Rolls back whatever is open.
    pub fn rollback(&mut self) {
        if let Some(tx) = self.tx.take() {
            tx.rollback();
        }
    }
}

/// Runs the protocol over stdin/stdout; returns the exit code.
pub fn run(runtime: &Runtime, client: &Client, isolation: Isolation, json: bool) -> u8 {
    let mut session = TxnSession::new(client.clone(), isolation);
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                eprintln!("error: cannot read stdin: {e}");
                session.rollback();
                return EXIT_OTHER;
            }
        };
        let step = match parse_txn_line(&line) {
            Ok(None) => continue,
            Ok(Some(command)) => runtime.block_on(session.execute(command, json)),
            Err(message) => Step::usage(message, json),
        };
        if writeln!(stdout, "{}", step.line)
            .and_then(|()| stdout.flush())
            .is_err()
        {
            // Nobody is listening: nothing was committed, so roll back.
            session.rollback();
            return EXIT_OTHER;
        }
        if let Some(code) = step.exit {
            return code;
        }
    }
    session.rollback();
    EXIT_OK
}

/// Text for a line protocol: `\`, newline and carriage return escaped.
pub fn escape(bytes: &[u8]) -> String {
    let text = lossy(bytes);
    if !text.contains(['\\', '\n', '\r']) {
        return text;
    }
    text.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// The response to `get`.
pub fn render_get(key: &[u8], value: Option<&[u8]>, json: bool) -> String {
    match (value, json) {
        (_, true) => {
            let mut object = bytes_json("key", key);
            match value {
                Some(value) => put_bytes(&mut object, "value", value),
                None => {
                    object.insert("value".into(), serde_json::Value::Null);
                }
            }
            serde_json::Value::Object(object).to_string()
        }
        (Some(v), false) => escape(v),
        (None, false) => "(nil)".into(),
    }
}

fn render_ok(json: bool) -> String {
    if json {
        json!({ "ok": true }).to_string()
    } else {
        "OK".into()
    }
}

/// The response to `scan`: `N keys: k1=v1 k2=v2`.
pub fn render_scan(pairs: &[(Vec<u8>, Vec<u8>)], json: bool) -> String {
    if json {
        let kvs: Vec<_> = pairs
            .iter()
            .map(|(k, v)| {
                let mut object = bytes_json("key", k);
                put_bytes(&mut object, "value", v);
                serde_json::Value::Object(object)
            })
            .collect();
        return json!({ "count": pairs.len(), "kvs": kvs }).to_string();
    }
    let mut line = format!("{} keys:", pairs.len());
    for (k, v) in pairs {
        line.push(' ');
        line.push_str(&escape(k));
        line.push('=');
        line.push_str(&escape(v));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Option<TxnCommand> {
        parse_txn_line(line).expect("valid line")
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(cmd("get k"), Some(TxnCommand::Get("k".into())));
        assert_eq!(
            cmd("PUT k 'a b'"),
            Some(TxnCommand::Put("k".into(), "a b".into()))
        );
        assert_eq!(
            cmd("put k \"\""),
            Some(TxnCommand::Put("k".into(), "".into()))
        );
        assert_eq!(cmd("del k"), Some(TxnCommand::Del("k".into())));
        assert_eq!(cmd("delete k"), Some(TxnCommand::Del("k".into())));
        assert_eq!(cmd("scan p/"), Some(TxnCommand::Scan("p/".into())));
        assert_eq!(cmd("scan"), Some(TxnCommand::Scan(String::new())));
        assert_eq!(cmd(" commit "), Some(TxnCommand::Commit));
        assert_eq!(cmd("rollback"), Some(TxnCommand::Rollback));
        assert_eq!(cmd(""), None);
        assert_eq!(cmd("   "), None);
        assert_eq!(cmd("# a comment"), None);
    }

    #[test]
    fn rejects_malformed_lines_with_usage() {
        for (line, needle) in [
            ("get", "usage: get KEY"),
            ("get a b", "usage: get KEY"),
            ("put k", "usage: put KEY VALUE"),
            ("put k a b", "usage: put KEY VALUE"),
            ("del", "usage: del KEY"),
            ("scan a b", "usage: scan"),
            ("commit now", "usage: commit"),
            ("frob", "unknown command"),
            ("put k 'v", "unterminated"),
        ] {
            let err = parse_txn_line(line).expect_err(line);
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn responses_are_single_lines() {
        assert_eq!(render_get(b"k", Some(b"v"), false), "v");
        assert_eq!(render_get(b"k", Some(b"a\nb\\"), false), "a\\nb\\\\");
        assert_eq!(render_get(b"k", None, false), "(nil)");
        assert_eq!(
            render_get(b"k", None, true),
            "{\"key\":\"k\",\"value\":null}"
        );
        let pairs = vec![
            (b"k1".to_vec(), b"v1".to_vec()),
            (b"k2".to_vec(), b"v2".to_vec()),
        ];
        assert_eq!(render_scan(&pairs, false), "2 keys: k1=v1 k2=v2");
        assert_eq!(render_scan(&[], false), "0 keys:");
        assert_eq!(
            render_scan(&pairs[..1], true),
            "{\"count\":1,\"kvs\":[{\"key\":\"k1\",\"value\":\"v1\"}]}"
        );
    }

    #[test]
    fn usage_errors_keep_the_transaction_open() {
        let step = Step::usage("usage: get KEY".into(), false);
        assert_eq!(step.line, "error: usage: get KEY");
        assert_eq!(step.exit, None);
    }
}
