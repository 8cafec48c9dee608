//! Opening a log directory: the segment files replayed in name order into the
//! in-memory log, a torn tail of the last segment cut, any other bad record
//! refused naming the file and offset; the vote and committed files read back;
//! and the atomic file replacement the vote and committed files are written with.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use openraft::Vote;

use super::format::{decode_record, read_frame, FrameError, Record};
use super::index::Mem;
use crate::codec::{self, Tag};
use crate::raft::types::LogId;
use crate::Error;

/// A segment file known to the writer.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) name: u64,
    pub(super) path: PathBuf,
    /// Greatest entry index ever written to it (None if it holds no entries).
    pub(super) max_entry: Option<u64>,
}

pub(super) const VOTE_FILE: &str = "vote";
pub(super) const COMMITTED_FILE: &str = "committed";

pub(super) fn segment_path(dir: &Path, name: u64) -> PathBuf {
    dir.join(format!("log-{name:020}.seg"))
}

pub(super) fn parse_segment_name(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_prefix("log-")?.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(super) fn storage_err(what: &str, path: &Path, e: io::Error) -> Error {
    Error::Storage(format!("{what} {}: {e}", path.display()))
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(super) fn remove_tmp_files(dir: &Path) -> Result<(), Error> {
    let rd = fs::read_dir(dir).map_err(|e| storage_err("listing", dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| storage_err("listing", dir, e))?;
        if ent.file_name().to_string_lossy().ends_with(".tmp") {
            let path = ent.path();
            fs::remove_file(&path).map_err(|e| storage_err("removing", &path, e))?;
        }
    }
    Ok(())
}

/// Replays every segment of `dir`; returns the rebuilt log, the segments (the last one is
/// the active one, created if there was none), the open active file and its size.
pub(super) fn recover(dir: &Path) -> Result<(Mem, Vec<Segment>, File, u64), Error> {
    let mut names = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| storage_err("listing", dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| storage_err("listing", dir, e))?;
        if let Some(name) = parse_segment_name(&ent.file_name().to_string_lossy()) {
            names.push(name);
        }
    }
    names.sort_unstable();

    let mut mem = Mem::default();
    let mut segments = Vec::with_capacity(names.len());
    let count = names.len();
    for (i, name) in names.into_iter().enumerate() {
        let path = segment_path(dir, name);
        let is_last = i + 1 == count;
        let max_entry = replay_segment(&path, is_last, &mut mem)?;
        segments.push(Segment {
            name,
            path,
            max_entry,
        });
    }

    if segments.is_empty() {
        let name = mem.next_index();
        let path = segment_path(dir, name);
        File::create(&path).map_err(|e| storage_err("creating", &path, e))?;
        sync_dir(dir).map_err(|e| storage_err("syncing", dir, e))?;
        segments.push(Segment {
            name,
            path,
            max_entry: None,
        });
    }
    let active_path = &segments.last().expect("at least one segment").path;
    // Written at offsets (the writer keeps the end), not in append mode: the
    // file may hold reserved space past the last record.
    let active = OpenOptions::new()
        .write(true)
        .open(active_path)
        .map_err(|e| storage_err("opening", active_path, e))?;
    let active_size = active
        .metadata()
        .map_err(|e| storage_err("reading metadata of", active_path, e))?
        .len();
    Ok((mem, segments, active, active_size))
}

/// Applies one segment's records to `mem`; returns the greatest entry index it holds.
/// A bad tail of the last segment is cut off; any other bad record is an error.
pub(super) fn replay_segment(
    path: &Path,
    is_last: bool,
    mem: &mut Mem,
) -> Result<Option<u64>, Error> {
    let data = fs::read(path).map_err(|e| storage_err("reading", path, e))?;
    let mut max_entry: Option<u64> = None;
    let mut off = 0usize;
    while off < data.len() {
        let rest = &data[off..];
        let bad = match read_frame(rest) {
            Ok((payload, n)) => match decode_record(
                payload,
                &format!("log segment {} offset {off}", path.display()),
            ) {
                Ok(rec) => {
                    if let Record::Entry(e) = &rec {
                        max_entry = max_entry.max(Some(e.log_id.index));
                    }
                    mem.apply(rec);
                    off += n;
                    continue;
                }
                // The CRC matched, so these are the bytes that were written: not a crash.
                Err(e) => return Err(e),
            },
            Err(bad) => bad,
        };
        // Only zeros follow (reserved space the writer had not reached yet),
        // or a record cut short by a crash and then zeros or the file's end.
        let reserve = rest.iter().all(|&b| b == 0);
        let at_tail = reserve
            || match bad {
                FrameError::Torn => true,
                FrameError::Crc { end } => rest[end..].iter().all(|&b| b == 0),
                FrameError::ZeroLength => false,
            };
        if is_last && at_tail {
            if reserve {
                tracing::debug!(
                    "log segment {}: {} bytes of reserved space after offset {off}",
                    path.display(),
                    rest.len()
                );
            } else {
                tracing::warn!(
                    "log segment {}: cutting a torn tail at offset {off} ({} bytes, {bad:?}): \
                     an unacknowledged write interrupted by a crash",
                    path.display(),
                    rest.len()
                );
            }
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| storage_err("opening", path, e))?;
            f.set_len(off as u64)
                .and_then(|()| f.sync_all())
                .map_err(|e| storage_err("truncating", path, e))?;
            break;
        }
        return Err(Error::InvalidData(format!(
            "log segment {} offset {off}: bad record ({bad:?}); the log is corrupt, refusing \
             to start (restore this node from a peer)",
            path.display()
        )));
    }
    Ok(max_entry)
}

pub(super) fn read_vote_file(dir: &Path) -> Result<Option<Vote<u64>>, Error> {
    let path = dir.join(VOTE_FILE);
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(storage_err("reading", &path, e)),
    };
    let (payload, _) = read_frame(&data).map_err(|bad| {
        Error::InvalidData(format!("vote file {} is damaged ({bad:?})", path.display()))
    })?;
    let vote = codec::decode(payload, Tag::Vote, &format!("vote file {}", path.display()))?;
    Ok(Some(vote))
}

/// The committed log id is an optimisation written without fsync: a missing or damaged
/// file reads as "unknown" rather than failing the start.
pub(super) fn read_committed_file(dir: &Path) -> Option<LogId> {
    let path = dir.join(COMMITTED_FILE);
    let data = fs::read(&path).ok()?;
    let decoded = read_frame(&data).ok().and_then(|(payload, _)| {
        codec::decode::<Option<LogId>>(payload, Tag::Committed, "committed file").ok()
    });
    if decoded.is_none() {
        tracing::warn!("ignoring damaged {}", path.display());
    }
    decoded.flatten()
}

/// Replaces `dir/name` with `bytes` through a tmp file and a rename; with `durable`, the
/// tmp file and the directory are fsynced so the new content survives a crash.
pub(super) fn replace_file(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}
