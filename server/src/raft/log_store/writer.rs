//! The writer thread: the one owner of the segment files. It takes every
//! queued command into a group, writes them, issues one `fdatasync` for the
//! lot and only then reports each one done; it rolls segments, deletes purged
//! ones, replaces the vote (durably) and committed files, and on a failed
//! write or sync fails everything pending and poisons the store.
//!
//! The active segment's space is reserved up front (`fallocate` to the
//! segment size), and records are written at the offset where the last one
//! ended. A write that grows a file makes its `fdatasync` also write the
//! file's size in the inode; inside reserved space it does not, which took
//! an `fdatasync` of a 300-byte append from 119-135 to 79-97 µs (p50) on this
//! project's reference machine. The unused reserve reads back as zeros,
//! which recovery takes as the end of the log; a sealed segment and a segment
//! closed cleanly are cut to the bytes written.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, OnceLock};

use super::recovery::{replace_file, segment_path, sync_dir, Segment, COMMITTED_FILE, VOTE_FILE};
use super::{io_copy, Done, LogStats};

/// Most commands the writer takes into one group (one fdatasync).
pub(super) const MAX_GROUP: usize = 4096;
/// How often, at most, the committed log id file is rewritten.
pub(super) const COMMITTED_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// State shared between the store handle and the writer thread.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// Set once, by the writer, when a write or sync failed: the store is then dead.
    pub(super) failed: OnceLock<String>,
    /// Test hook: make the next segment sync fail.
    #[cfg(test)]
    pub(super) inject_sync_error: std::sync::atomic::AtomicBool,
}

/// A queued segment write: encoded records plus what the writer needs to place them.
pub(super) struct LogWrite {
    /// Framed records, ready to append.
    pub(super) frames: Vec<u8>,
    /// Number of records in `frames`.
    pub(super) records: u64,
    /// The index a new segment is named after if this write opens one.
    pub(super) start_index: u64,
    /// Greatest entry index in `frames`, if it holds entries.
    pub(super) max_entry: Option<u64>,
    /// After the write is durable, delete segments entirely at or below this index.
    pub(super) purge_upto: Option<u64>,
    /// Called once the write is durable, or failed.
    pub(super) done: Done,
}

/// What the writer thread is asked to do, in order.
pub(super) enum Command {
    Log(LogWrite),
    /// Replace the vote file durably; everything queued before it is made durable first.
    Vote {
        bytes: Vec<u8>,
        done: Done,
    },
    /// Replace the committed file (no fsync) after the current group is durable.
    Committed {
        bytes: Vec<u8>,
    },
}

impl Command {
    pub(super) fn fail(self, err: io::Error) {
        match self {
            Command::Log(w) => (w.done)(Err(err)),
            Command::Vote { done, .. } => done(Err(err)),
            Command::Committed { .. } => {}
        }
    }
}

pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) segment_size: u64,
    /// All live segments, oldest first; the last is the active one.
    pub(super) segments: Vec<Segment>,
    pub(super) active: File,
    /// Bytes of records in `active`: where the next one is written. The file
    /// itself may be longer (reserved space, zeros).
    pub(super) active_size: u64,
    /// Bytes were written to `active` since its last sync.
    pub(super) unsynced: bool,
    pub(super) shared: Arc<Shared>,
    pub(super) stats: Arc<LogStats>,
    /// When the committed file was last rewritten.
    pub(super) committed_written: Option<std::time::Instant>,
}

impl Writer {
    pub(super) fn run(mut self, rx: mpsc::Receiver<Command>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(cmd) => group.push(cmd),
                    Err(_) => break,
                }
            }
            self.process(group);
        }
        // A clean close leaves no reserve behind (and a file any build reads).
        if self.failed().is_none() {
            if let Err(e) = self.trim_active() {
                tracing::warn!("cutting the log's reserved space at close: {e}");
            }
        }
    }

    /// Reserves the active segment's space up to the segment size, so that
    /// the appends in it do not change the file's size. Best effort: where
    /// the filesystem cannot (or has no room), records are appended as the
    /// file grows, and a full disk fails the write that needs the space.
    pub(super) fn preallocate(&mut self) {
        let want = self.segment_size;
        if self.active_size >= want {
            return;
        }
        let len = self.active.metadata().map(|m| m.len()).unwrap_or(0);
        if len >= want {
            return;
        }
        if let Err(e) =
            rustix::fs::fallocate(&self.active, rustix::fs::FallocateFlags::empty(), 0, want)
        {
            tracing::debug!(
                "log segment space not reserved ({e}): records extend the file as they come"
            );
        }
    }

    /// Cuts the active segment to the bytes written and makes that durable.
    pub(super) fn trim_active(&mut self) -> io::Result<()> {
        self.active.set_len(self.active_size)?;
        self.active.sync_all()?;
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.unsynced = false;
        Ok(())
    }

    pub(super) fn failed(&self) -> Option<io::Error> {
        self.shared
            .failed
            .get()
            .map(|msg| io::Error::other(format!("log store failed earlier: {msg}")))
    }

    /// Writes one group: all its records, one fdatasync, then the acknowledgements.
    pub(super) fn process(&mut self, group: Vec<Command>) {
        let mut buf: Vec<u8> = Vec::new();
        let mut pending: Vec<LogWrite> = Vec::new();
        let mut committed: Option<Vec<u8>> = None;
        for cmd in group {
            if let Some(err) = self.failed() {
                cmd.fail(err);
                continue;
            }
            match cmd {
                Command::Log(w) => {
                    if !w.frames.is_empty() {
                        let size = self.active_size + buf.len() as u64;
                        if size > 0 && size >= self.segment_size {
                            if let Err(e) = self
                                .write_buf(&mut buf)
                                .and_then(|()| self.roll(w.start_index))
                            {
                                pending.push(w);
                                self.fail(&e, &mut pending);
                                continue;
                            }
                        }
                        buf.extend_from_slice(&w.frames);
                        self.stats.records.fetch_add(w.records, Ordering::Relaxed);
                        let active = self.segments.last_mut().expect("an active segment");
                        active.max_entry = active.max_entry.max(w.max_entry);
                    }
                    pending.push(w);
                }
                Command::Vote { bytes, done } => {
                    // Everything queued before the vote becomes durable before it.
                    self.flush(&mut buf, &mut pending);
                    if let Some(err) = self.failed() {
                        done(Err(err));
                        continue;
                    }
                    match replace_file(&self.dir, VOTE_FILE, &bytes, true) {
                        Ok(()) => done(Ok(())),
                        Err(e) => {
                            let mut none = Vec::new();
                            self.fail(&e, &mut none);
                            done(Err(e));
                        }
                    }
                }
                Command::Committed { bytes } => committed = Some(bytes),
            }
        }
        self.flush(&mut buf, &mut pending);
        // The committed id is only a restart hint: write it at most a few times a
        // second, not once per group (a rename per fsync halves throughput).
        let due = self
            .committed_written
            .is_none_or(|t| t.elapsed() >= COMMITTED_EVERY);
        if let Some(bytes) = committed.filter(|_| due) {
            self.committed_written = Some(std::time::Instant::now());
            if self.failed().is_none() {
                if let Err(e) = replace_file(&self.dir, COMMITTED_FILE, &bytes, false) {
                    tracing::warn!("saving the committed log id failed (harmless): {e}");
                }
            }
        }
    }

    pub(super) fn write_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.unsynced = true;
        self.active.write_all_at(buf, self.active_size)?;
        self.active_size += buf.len() as u64;
        self.stats
            .bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        buf.clear();
        Ok(())
    }

    pub(super) fn sync_active(&mut self) -> io::Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        fail::fail_point!("log-before-fsync", |_| Err(io::Error::other(
            "injected failure at log-before-fsync"
        )));
        #[cfg(test)]
        if self.shared.inject_sync_error.swap(false, Ordering::SeqCst) {
            return Err(io::Error::other("injected fdatasync failure"));
        }
        self.active.sync_data()?;
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.unsynced = false;
        Ok(())
    }

    /// Makes everything written so far durable, then acknowledges `pending`.
    pub(super) fn flush(&mut self, buf: &mut Vec<u8>, pending: &mut Vec<LogWrite>) {
        if buf.is_empty() && pending.is_empty() {
            return;
        }
        if let Err(e) = self.write_buf(buf).and_then(|()| self.sync_active()) {
            self.fail(&e, pending);
            return;
        }
        fail::fail_point!("log-after-fsync-before-ack");
        crate::crash_point!("crash-after-log-fsync");
        if let Some(upto) = pending.iter().filter_map(|w| w.purge_upto).max() {
            self.delete_purged_segments(upto);
        }
        for w in pending.drain(..) {
            (w.done)(Ok(()));
        }
    }

    /// Closes the active segment (cut to its records, synced) and starts a new
    /// one named after `start_index`. The cut is durable before the new file
    /// exists: only the last segment can ever end in reserved space.
    pub(super) fn roll(&mut self, start_index: u64) -> io::Result<()> {
        self.trim_active()?;
        let prev = self.segments.last().map(|s| s.name);
        let name = match prev {
            Some(p) => start_index.max(p.saturating_add(1)),
            None => start_index,
        };
        let path = segment_path(&self.dir, name);
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        // The new file's directory entry must be durable before records in it are acked.
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            name,
            path,
            max_entry: None,
        });
        self.active = file;
        self.active_size = 0;
        self.preallocate();
        Ok(())
    }

    /// Deletes the oldest segments while every entry they hold is at or below `upto`.
    /// Only a prefix is deleted, so a truncation recorded in a kept segment never loses the
    /// entries it applies to; the active segment (holding the purge record) is kept.
    pub(super) fn delete_purged_segments(&mut self, upto: u64) {
        let mut n = 0;
        while n + 1 < self.segments.len() {
            let seg = &self.segments[n];
            if seg.max_entry.is_some_and(|m| m > upto) {
                break;
            }
            if let Err(e) = fs::remove_file(&seg.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!("deleting purged log segment {}: {e}", seg.path.display());
                    break;
                }
            }
            n += 1;
        }
        self.segments.drain(..n);
    }

    /// Enters the failed state and reports `e` to every pending write.
    pub(super) fn fail(&mut self, e: &io::Error, pending: &mut Vec<LogWrite>) {
        tracing::error!("log write failed, refusing all further log writes: {e}");
        let _ = self.shared.failed.set(e.to_string());
        for w in pending.drain(..) {
            (w.done)(Err(io_copy(e)));
        }
    }
}
