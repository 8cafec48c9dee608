//! The snapshot stream: the one format of a state-transfer snapshot and of a
//! backup file (`trireme snapshot save`), written and read record by record so
//! that neither side ever holds the store in memory.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! envelope   "TRRM", format version (u16), tag SnapshotStream (u16)   8 bytes
//! header     length (u32), then a SnapshotHeader envelope (codec)    what the stream is a snapshot of
//! record*    0x01, key length (u32), value length (u32), key, value  one engine entry each
//! trailer    0xFF, entries (u64), live keys (u64), checksum (u64)
//! footer     hash (u64) of every byte before it, then "TRRMEND!"
//! ```
//!
//! Records are the engine's own entries (MVCC versions, then write-set ids) in
//! strictly increasing key order, none above the header's seqno. The trailer's
//! checksum and key count are those `trireme status` reports at that seqno
//! (`Mvcc::checksum`), so a file, the cluster it came from and a cluster
//! restored from it can be compared. A reader recomputes everything and
//! refuses a stream that is truncated (no footer), altered (hash), out of
//! order, or whose counts differ from its trailer, naming the byte offset.

use std::collections::BTreeSet;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use super::params::ClusterParams;
use crate::codec::{self, Tag};
use crate::error::{Error, Result};
use crate::raft::types::{LogId, StoredMembership};
use crate::storage::keycode;
use crate::txn::{NodeId, Seqno};

/// Record kinds. The numbers are the format: never reuse or change one.
const RECORD_ENTRY: u8 = 0x01;
const RECORD_TRAILER: u8 = 0xFF;

/// The last bytes of a complete stream.
pub const FOOTER_MAGIC: [u8; 8] = *b"TRRMEND!";

/// The largest header a reader accepts (it holds a membership, no data).
pub const MAX_HEADER_BYTES: u32 = 16 << 20;

/// The largest key or value a record may hold (a corrupt length must not
/// make a reader allocate gigabytes).
pub const MAX_RECORD_BYTES: u32 = 256 << 20;

/// What a stream is a snapshot of: the state at `seqno`, and the replicated
/// metadata that goes with it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The seqno (log index) the stream is consistent at.
    pub seqno: Seqno,
    /// The log id at `seqno` (openraft's snapshot meta).
    pub last_log_id: Option<LogId>,
    /// The membership at `seqno` (openraft's snapshot meta).
    pub membership: StoredMembership,
    /// openraft's snapshot id.
    pub snapshot_id: String,
    /// The verdict chain at `seqno`.
    pub chain: u64,
    /// Nodes that left for good.
    pub departed: BTreeSet<NodeId>,
    /// The replicated cluster parameters.
    pub params: Option<ClusterParams>,
    /// Milliseconds since the Unix epoch when the stream was written.
    pub created_unix_ms: u64,
}

/// What a complete stream holds, from its trailer (verified by the reader).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Engine entries (versions and write-set ids).
    pub entries: u64,
    /// Live keys at the header's seqno.
    pub keys: u64,
    /// `Mvcc::checksum` at the header's seqno.
    pub checksum: u64,
    /// Bytes of the whole stream.
    pub bytes: u64,
}

/// `Mvcc::checksum`, computed over a stream of version entries in key order
/// (newest version of each key first): every live key, its version and value.
#[derive(Default)]
struct Digest {
    hasher: xxhash_rust::xxh3::Xxh3,
    keys: u64,
    /// The user key whose newest version was already seen.
    current: Option<Vec<u8>>,
}

impl Digest {
    fn version(&mut self, key: Vec<u8>, seqno: Seqno, value: Option<&[u8]>) {
        if self.current.as_deref() == Some(key.as_slice()) {
            return;
        }
        if let Some(value) = value {
            self.keys += 1;
            self.hasher.update(&(key.len() as u64).to_le_bytes());
            self.hasher.update(&key);
            self.hasher.update(&seqno.to_le_bytes());
            self.hasher.update(&(value.len() as u64).to_le_bytes());
            self.hasher.update(value);
        }
        self.current = Some(key);
    }

    fn result(&self) -> (u64, u64) {
        (self.hasher.digest(), self.keys)
    }
}

/// Checks one engine entry of a stream at `at`, and feeds versions to `digest`.
fn check_entry(
    k: &[u8],
    v: &[u8],
    at: Seqno,
    digest: &mut Digest,
) -> std::result::Result<(), String> {
    match k.first() {
        Some(&keycode::DATA) => {
            let (key, seqno) = keycode::decode_version_key(k)
                .ok_or_else(|| format!("undecodable version key {k:?}"))?;
            if seqno > at {
                return Err(format!(
                    "a version at seqno {seqno}, above the snapshot's seqno {at}"
                ));
            }
            let value =
                keycode::decode_value(v).ok_or_else(|| format!("undecodable value of {k:?}"))?;
            digest.version(key, seqno, value);
            Ok(())
        }
        Some(&keycode::TXN) => {
            let seqno = <[u8; 8]>::try_from(v)
                .map(u64::from_be_bytes)
                .map_err(|_| format!("a write-set record of {} bytes, expected 8", v.len()))?;
            if k.len() != 17 || seqno > at {
                return Err(format!("a bad write-set record {k:?} at seqno {seqno}"));
            }
            Ok(())
        }
        _ => Err(format!("a key outside the data namespaces: {k:?}")),
    }
}

/// Bytes written or read, hashed as they go.
struct Hashed<T> {
    inner: T,
    hasher: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
}

impl<T> Hashed<T> {
    fn new(inner: T) -> Self {
        Hashed {
            inner,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            bytes: 0,
        }
    }
}

impl<W: Write> Hashed<W> {
    fn put(&mut self, buf: &[u8]) -> Result<()> {
        self.inner.write_all(buf)?;
        self.hasher.update(buf);
        self.bytes += buf.len() as u64;
        Ok(())
    }
}

/// Writes a stream: the header, then [`StreamWriter::entry`] per engine entry
/// in key order, then [`StreamWriter::finish`].
pub struct StreamWriter<W: Write> {
    out: Hashed<W>,
    at: Seqno,
    entries: u64,
    digest: Digest,
    last: Vec<u8>,
}

impl<W: Write> StreamWriter<W> {
    /// Starts a stream of `header` on `out` (buffer it: records are small writes).
    pub fn new(out: W, header: &SnapshotHeader) -> Result<Self> {
        let mut out = Hashed::new(out);
        out.put(&codec::header(Tag::SnapshotStream))?;
        let head = codec::encode(Tag::SnapshotHeader, header)?;
        out.put(&(head.len() as u32).to_le_bytes())?;
        out.put(&head)?;
        Ok(StreamWriter {
            out,
            at: header.seqno,
            entries: 0,
            digest: Digest::default(),
            last: Vec::new(),
        })
    }

    /// Appends one engine entry; keys must come in strictly increasing order.
    pub fn entry(&mut self, k: &[u8], v: &[u8]) -> Result<()> {
        if self.entries > 0 && k <= self.last.as_slice() {
            return Err(Error::Internal(format!(
                "snapshot stream: key {k:?} written after {:?}",
                self.last
            )));
        }
        if k.len() > MAX_RECORD_BYTES as usize || v.len() > MAX_RECORD_BYTES as usize {
            return Err(Error::InvalidData(format!(
                "snapshot stream: an entry of {} + {} bytes is over the limit of {MAX_RECORD_BYTES} bytes",
                k.len(),
                v.len()
            )));
        }
        check_entry(k, v, self.at, &mut self.digest)
            .map_err(|e| Error::InvalidData(format!("snapshot stream: the store holds {e}")))?;
        self.out.put(&[RECORD_ENTRY])?;
        self.out.put(&(k.len() as u32).to_le_bytes())?;
        self.out.put(&(v.len() as u32).to_le_bytes())?;
        self.out.put(k)?;
        self.out.put(v)?;
        self.last.clear();
        self.last.extend_from_slice(k);
        self.entries += 1;
        Ok(())
    }

    /// Writes the trailer and footer; returns the output and what was written.
    pub fn finish(mut self) -> Result<(W, Summary)> {
        let (checksum, keys) = self.digest.result();
        self.out.put(&[RECORD_TRAILER])?;
        self.out.put(&self.entries.to_le_bytes())?;
        self.out.put(&keys.to_le_bytes())?;
        self.out.put(&checksum.to_le_bytes())?;
        let hash = self.out.hasher.digest();
        self.out.put(&hash.to_le_bytes())?;
        self.out.put(&FOOTER_MAGIC)?;
        self.out.inner.flush()?;
        Ok((
            self.out.inner,
            Summary {
                entries: self.entries,
                keys,
                checksum,
                bytes: self.out.bytes,
            },
        ))
    }
}

/// Reads a stream, checking everything as it goes: [`StreamReader::next_entry`]
/// returns entries until the verified end.
pub struct StreamReader<R: Read> {
    inp: Hashed<R>,
    what: String,
    header: SnapshotHeader,
    digest: Digest,
    entries: u64,
    last: Vec<u8>,
    summary: Option<Summary>,
}

impl<R: Read> StreamReader<R> {
    /// Opens a stream (`what` names it in errors): checks the envelope and reads the header.
    pub fn open(inp: R, what: &str) -> Result<Self> {
        let mut inp = Hashed::new(inp);
        let mut env = [0u8; codec::HEADER_LEN];
        read_exact(&mut inp, &mut env, what)?;
        let (tag, _) = codec::open(&env, what)?;
        if tag != Tag::SnapshotStream {
            return Err(Error::InvalidData(format!(
                "{what}: holds {tag:?} ({}), expected a snapshot stream ({})",
                tag as u16,
                Tag::SnapshotStream as u16
            )));
        }
        let len = read_u32(&mut inp, what)?;
        if len > MAX_HEADER_BYTES {
            return Err(Error::InvalidData(format!(
                "{what}: a header of {len} bytes, over the limit of {MAX_HEADER_BYTES} (corrupt?)"
            )));
        }
        let mut head = vec![0u8; len as usize];
        read_exact(&mut inp, &mut head, what)?;
        let header: SnapshotHeader =
            codec::decode(&head, Tag::SnapshotHeader, &format!("{what}: header"))?;
        Ok(StreamReader {
            inp,
            what: what.to_string(),
            header,
            digest: Digest::default(),
            entries: 0,
            last: Vec::new(),
            summary: None,
        })
    }

    /// What the stream is a snapshot of.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// The next engine entry; `None` once the trailer and footer are verified.
    pub fn next_entry(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        if self.summary.is_some() {
            return Ok(None);
        }
        let what = self.what.as_str();
        let at = self.inp.bytes;
        let mut kind = [0u8; 1];
        read_exact(&mut self.inp, &mut kind, what)?;
        match kind[0] {
            RECORD_ENTRY => {
                let klen = read_u32(&mut self.inp, what)?;
                let vlen = read_u32(&mut self.inp, what)?;
                if klen > MAX_RECORD_BYTES || vlen > MAX_RECORD_BYTES {
                    return Err(Error::InvalidData(format!(
                        "{what}: the record at byte {at} claims {klen} + {vlen} bytes, over the \
                         limit of {MAX_RECORD_BYTES} (corrupt?)"
                    )));
                }
                let mut k = vec![0u8; klen as usize];
                read_exact(&mut self.inp, &mut k, what)?;
                let mut v = vec![0u8; vlen as usize];
                read_exact(&mut self.inp, &mut v, what)?;
                if self.entries > 0 && k <= self.last {
                    return Err(Error::InvalidData(format!(
                        "{what}: the record at byte {at} is out of key order (corrupt?)"
                    )));
                }
                check_entry(&k, &v, self.header.seqno, &mut self.digest).map_err(|e| {
                    Error::InvalidData(format!(
                        "{what}: corrupt: the record at byte {at} holds {e}"
                    ))
                })?;
                self.last.clone_from(&k);
                self.entries += 1;
                Ok(Some((k, v)))
            }
            RECORD_TRAILER => {
                let entries = read_u64(&mut self.inp, what)?;
                let keys = read_u64(&mut self.inp, what)?;
                let checksum = read_u64(&mut self.inp, what)?;
                let computed = self.inp.hasher.digest();
                let stored = read_u64(&mut self.inp, what)?;
                let mut footer = [0u8; 8];
                read_exact(&mut self.inp, &mut footer, what)?;
                if footer != FOOTER_MAGIC {
                    return Err(Error::InvalidData(format!(
                        "{what}: no end marker after the trailer at byte {at} (corrupt?)"
                    )));
                }
                if stored != computed {
                    return Err(Error::InvalidData(format!(
                        "{what}: corrupt: the stream hashes to {computed:016x}, its footer says \
                         {stored:016x}"
                    )));
                }
                let (sum, live) = self.digest.result();
                if (entries, keys, checksum) != (self.entries, live, sum) {
                    return Err(Error::InvalidData(format!(
                        "{what}: corrupt: the trailer says {entries} entries, {keys} keys, \
                         checksum {checksum}; the stream holds {} entries, {live} keys, \
                         checksum {sum}",
                        self.entries
                    )));
                }
                let mut extra = [0u8; 1];
                if self.inp.inner.read(&mut extra)? != 0 {
                    return Err(Error::InvalidData(format!(
                        "{what}: corrupt: bytes follow the end marker at byte {}",
                        self.inp.bytes
                    )));
                }
                self.summary = Some(Summary {
                    entries,
                    keys,
                    checksum,
                    bytes: self.inp.bytes,
                });
                Ok(None)
            }
            other => Err(Error::InvalidData(format!(
                "{what}: unknown record kind {other:#04x} at byte {at} (corrupt?)"
            ))),
        }
    }

    /// Reads to the end, checking everything; returns the verified summary.
    pub fn verify(mut self) -> Result<(SnapshotHeader, Summary)> {
        while self.next_entry()?.is_some() {}
        let summary = self.summary.expect("set at the end");
        Ok((self.header, summary))
    }

    /// The verified summary, once [`StreamReader::next_entry`] returned `None`.
    pub fn summary(&self) -> Option<Summary> {
        self.summary
    }
}

fn read_exact<R: Read>(inp: &mut Hashed<R>, buf: &mut [u8], what: &str) -> Result<()> {
    match inp.inner.read_exact(buf) {
        Ok(()) => {
            inp.hasher.update(buf);
            inp.bytes += buf.len() as u64;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(Error::InvalidData(format!(
                "{what}: truncated or corrupt: it ends within {} bytes after byte {}, before \
             its end marker",
                buf.len(),
                inp.bytes
            )))
        }
        Err(e) => Err(Error::Storage(format!("{what}: reading: {e}"))),
    }
}

fn read_u32<R: Read>(inp: &mut Hashed<R>, what: &str) -> Result<u32> {
    let mut b = [0u8; 4];
    read_exact(inp, &mut b, what)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64<R: Read>(inp: &mut Hashed<R>, what: &str) -> Result<u64> {
    let mut b = [0u8; 8];
    read_exact(inp, &mut b, what)?;
    Ok(u64::from_le_bytes(b))
}

/// Reads and verifies the whole stream file at `path`.
pub fn verify_file(path: &std::path::Path) -> Result<(SnapshotHeader, Summary)> {
    let what = format!("snapshot file {}", path.display());
    let f = std::fs::File::open(path)
        .map_err(|e| Error::InvalidInput(format!("{what}: cannot open: {e}")))?;
    StreamReader::open(std::io::BufReader::with_capacity(1 << 20, f), &what)?.verify()
}

/// Reads only the header of the stream file at `path`.
pub fn read_header(path: &std::path::Path) -> Result<SnapshotHeader> {
    let what = format!("snapshot file {}", path.display());
    let f = std::fs::File::open(path)?;
    Ok(StreamReader::open(std::io::BufReader::new(f), &what)?.header)
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryEngine, Mvcc};
    use std::sync::Arc;

    fn header(seqno: Seqno) -> SnapshotHeader {
        SnapshotHeader {
            seqno,
            last_log_id: None,
            membership: StoredMembership::default(),
            snapshot_id: "t".into(),
            chain: 7,
            departed: BTreeSet::new(),
            params: None,
            created_unix_ms: 0,
        }
    }

    /// A store with overwritten and deleted keys and write-set ids.
    fn store() -> Mvcc {
        let m = Mvcc::new(Arc::new(MemoryEngine::new()));
        let mut ops = Vec::new();
        for i in 0..50u32 {
            let k = format!("k{i:03}");
            ops.push(Mvcc::version_op(k.as_bytes(), 1, Some(b"one")));
            if i % 3 == 0 {
                ops.push(Mvcc::version_op(k.as_bytes(), 2, Some(b"two")));
            }
            if i % 7 == 0 {
                ops.push(Mvcc::version_op(k.as_bytes(), 3, None));
            }
            ops.push(Mvcc::txn_op(crate::txn::TxnId(u128::from(i) + 1), 2));
        }
        m.apply(ops).unwrap();
        m
    }

    fn write(m: &Mvcc, at: Seqno) -> (Vec<u8>, Summary) {
        let mut w = StreamWriter::new(Vec::new(), &header(at)).unwrap();
        m.dump(&mut |k, v| {
            w.entry(k, v).unwrap();
            true
        })
        .unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_and_matches_the_store_checksum() {
        let m = store();
        let (bytes, summary) = write(&m, 3);
        assert_eq!(summary.bytes, bytes.len() as u64);
        let (checksum, keys) = m.checksum(3).unwrap();
        assert_eq!((summary.checksum, summary.keys), (checksum, keys));
        let mut r = StreamReader::open(bytes.as_slice(), "test").unwrap();
        assert_eq!(r.header().chain, 7);
        let mut n = 0;
        while let Some((k, v)) = r.next_entry().unwrap() {
            n += 1;
            assert!(!k.is_empty() && !v.is_empty());
        }
        assert_eq!(r.summary(), Some(summary));
        assert_eq!(n, summary.entries);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let (bytes, _) = write(&store(), 3);
        for len in 0..bytes.len() {
            let err = StreamReader::open(&bytes[..len], "f")
                .and_then(|r| r.verify())
                .expect_err("truncated")
                .to_string();
            assert!(
                err.contains("truncated") || err.contains("not in a Trireme format"),
                "{len}: {err}"
            );
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                StreamReader::open(bad.as_slice(), "f")
                    .and_then(|r| r.verify())
                    .is_err(),
                "a flip at byte {i} went unnoticed"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        let err = StreamReader::open(long.as_slice(), "f")
            .and_then(|r| r.verify())
            .expect_err("trailing")
            .to_string();
        assert!(err.contains("follow the end marker"), "{err}");
    }

    #[test]
    fn versions_above_the_seqno_are_refused_by_the_writer() {
        let m = store();
        let mut w = StreamWriter::new(Vec::new(), &header(2)).unwrap();
        let mut err = None;
        m.dump(&mut |k, v| match w.entry(k, v) {
            Ok(()) => true,
            Err(e) => {
                err = Some(e.to_string());
                false
            }
        })
        .unwrap();
        assert!(err
            .expect("refused")
            .contains("above the snapshot's seqno 2"));
    }
}
