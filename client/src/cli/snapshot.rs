//! `trireme snapshot save FILE` and `trireme snapshot status FILE`: backups.
//!
//! A backup file is a snapshot stream (the format of state transfers,
//! `trireme_server::group::snapshot`): the whole store of one node at one
//! seqno, with a footer that checksums every byte. `save` writes it to
//! `FILE.partial`, verifies it, syncs it and only then renames it to `FILE`;
//! `status` verifies a file and shows what it holds. Restore one with
//! `trireme-server --restore FILE`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use trireme_client::{Client, Error, Result};
use trireme_server::group::snapshot::{verify_file, SnapshotHeader, Summary};

use super::output::json_line;
use super::Reply;

/// Streams a backup from the first endpoint into `file`.
pub async fn save(client: &Client, file: &Path, json: bool) -> Result<Reply> {
    if file.exists() {
        return Err(Error::InvalidInput(format!(
            "{} already exists: a backup never overwrites a file",
            file.display()
        )));
    }
    let mut partial = file.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let io = |what: &str, e: std::io::Error| Error::Other(format!("{what}: {e}"));
    let f = std::fs::File::create(&partial)
        .map_err(|e| io(&format!("cannot create {}", partial.display()), e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
    let res = async {
        client.save_backup(None, &mut out).await?;
        let f = out
            .into_inner()
            .map_err(|e| io(&format!("writing {}", partial.display()), e.into_error()))?;
        f.sync_all()
            .map_err(|e| io(&format!("syncing {}", partial.display()), e))?;
        let checked = tokio::task::spawn_blocking({
            let partial = partial.clone();
            move || verify_file(&partial)
        })
        .await
        .map_err(|e| Error::Other(format!("verifying the backup: {e}")))?
        .map_err(|e| Error::Other(format!("the backup received is not valid: {e}")))?;
        std::fs::rename(&partial, file)
            .map_err(|e| io(&format!("renaming to {}", file.display()), e))?;
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(checked)
    }
    .await;
    match res {
        Ok((header, summary)) => Ok(describe(file, &header, &summary, json, "saved")),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Verifies `file` and shows its seqno, keys and checksum.
pub fn status(file: &Path, json: bool) -> Result<Reply> {
    let (header, summary) = verify_file(file).map_err(|e| Error::InvalidInput(e.to_string()))?;
    Ok(describe(file, &header, &summary, json, "valid"))
}

fn describe(file: &Path, h: &SnapshotHeader, s: &Summary, json: bool, verb: &str) -> Reply {
    if json {
        return Reply::ok(json_line(&json!({
            "file": file.display().to_string(),
            "seqno": h.seqno,
            "keys": s.keys,
            "checksum": s.checksum,
            "verdict_chain": h.chain,
            "entries": s.entries,
            "bytes": s.bytes,
            "created_unix_ms": h.created_unix_ms,
            "cert_window": h.params.map(|p| p.cert_window),
        })));
    }
    let mut out = Vec::new();
    let _ = writeln!(
        out,
        "{verb} {}: seqno {} checksum {:#018x} keys {} verdicts {:#018x} ({} entries, {} bytes)",
        file.display(),
        h.seqno,
        s.checksum,
        s.keys,
        h.chain,
        s.entries,
        s.bytes
    );
    Reply::ok(out)
}
