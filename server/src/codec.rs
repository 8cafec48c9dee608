//! Every encoding Trireme persists or sends to a peer, behind one envelope.
//!
//! Each encoded value starts with an 8-byte header: the magic `TRRM`, the
//! format version (`u16` LE) and a [`Tag`] (`u16` LE) naming what follows; the
//! body after it is bincode. The header is what makes a format evolvable:
//!
//! - a reader refuses a version newer than [`FORMAT_VERSION`] with an error
//!   naming both versions, instead of misreading it;
//! - a tag is an explicit number, never a Rust enum's variant index, so
//!   reordering code cannot change the meaning of stored bytes; an unknown tag
//!   is refused;
//! - the tags inside the log's own payload ([`Request`]) are explicit too.
//!
//! What carries the envelope: every log record (entry, truncation, purge), the
//! vote and committed files, snapshot streams (state transfer, the kept
//! snapshot and backup files: the envelope starts the stream and its header,
//! records follow, see `group::snapshot`), every metadata value in the store, and the payload
//! of every peer message (`RaftMessage.payload`, both directions).
//!
//! CAVEATS: openraft's own types (log ids, votes, memberships, entry payload
//! kinds) are encoded as the pinned openraft version serializes them: changing
//! the openraft version is a format change and must bump [`FORMAT_VERSION`].
//! Data written before versioning existed (no magic) is refused, not migrated.

use serde::de::{self, DeserializeOwned, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::raft::types::Request;

/// The first bytes of every encoded value.
pub const MAGIC: [u8; 4] = *b"TRRM";

/// The format this build writes, and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;

/// The oldest format this build still reads.
pub const MIN_FORMAT_VERSION: u16 = 1;

/// Bytes of the envelope before the body: magic, version, tag.
pub const HEADER_LEN: usize = 8;

/// What an envelope holds. The numbers are the format: never reuse or change one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Tag {
    /// A log record: one entry.
    LogEntry = 1,
    /// A log record: entries from this index on are gone.
    LogTruncate = 2,
    /// A log record: entries up to this log id are purged.
    LogPurge = 3,
    /// The `vote` file.
    Vote = 4,
    /// The `committed` file.
    Committed = 5,
    /// A state-transfer snapshot's data (first layout: one bincode value;
    /// no longer written or read).
    SnapshotData = 16,
    /// The file keeping the last snapshot (first layout; no longer written or read).
    SnapshotFile = 17,
    /// A snapshot stream (state transfer, the kept snapshot, backup files):
    /// this envelope starts the stream; see `group::snapshot`.
    SnapshotStream = 18,
    /// A snapshot stream's header.
    SnapshotHeader = 19,
    /// Store metadata: the applied log id.
    MetaApplied = 32,
    /// Store metadata: the membership.
    MetaMembership = 33,
    /// Store metadata: the verdict chain.
    MetaChain = 34,
    /// Store metadata: the departed nodes.
    MetaDeparted = 35,
    /// Store metadata: the replicated cluster parameters.
    MetaParams = 36,
    /// Store metadata: the format of the store itself.
    MetaFormat = 37,
    /// Store metadata: the applied log id and the verdict chain, together
    /// (one key, so that an apply written in order cannot tear them apart).
    MetaTail = 38,
    /// Peer message: `AppendEntries` request.
    AppendEntries = 64,
    /// Peer message: `AppendEntries` reply.
    AppendEntriesReply = 65,
    /// Peer message: `Vote` request.
    VoteRequest = 66,
    /// Peer message: `Vote` reply.
    VoteReply = 67,
    /// Peer message: `InstallSnapshot` request.
    InstallSnapshot = 68,
    /// Peer message: `InstallSnapshot` reply.
    InstallSnapshotReply = 69,
    /// Peer message: `Forward` request (write sets for the leader to order).
    Forward = 70,
    /// Peer message: `Forward` reply.
    ForwardReply = 71,
    /// Peer message: `ReadIndex` request.
    ReadIndex = 72,
    /// Peer message: `ReadIndex` reply.
    ReadIndexReply = 73,
    /// Peer message: `Lease` request (a keep-alive or deadline question for the leader).
    LeaseCall = 74,
    /// Peer message: `Lease` reply.
    LeaseReply = 75,
}

impl Tag {
    /// Every tag, for decoding.
    const ALL: [Tag; 28] = [
        Tag::LogEntry,
        Tag::LogTruncate,
        Tag::LogPurge,
        Tag::Vote,
        Tag::Committed,
        Tag::SnapshotData,
        Tag::SnapshotFile,
        Tag::SnapshotStream,
        Tag::SnapshotHeader,
        Tag::MetaApplied,
        Tag::MetaMembership,
        Tag::MetaChain,
        Tag::MetaDeparted,
        Tag::MetaParams,
        Tag::MetaFormat,
        Tag::MetaTail,
        Tag::AppendEntries,
        Tag::AppendEntriesReply,
        Tag::VoteRequest,
        Tag::VoteReply,
        Tag::InstallSnapshot,
        Tag::InstallSnapshotReply,
        Tag::Forward,
        Tag::ForwardReply,
        Tag::ReadIndex,
        Tag::ReadIndexReply,
        Tag::LeaseCall,
        Tag::LeaseReply,
    ];

    /// The tag numbered `n`, if this build knows it.
    pub fn from_u16(n: u16) -> Option<Tag> {
        Tag::ALL.into_iter().find(|t| *t as u16 == n)
    }
}

/// The envelope header for `tag` at this build's version.
pub fn header(tag: Tag) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[6..].copy_from_slice(&(tag as u16).to_le_bytes());
    h
}

/// Encodes `body` under `tag`.
pub fn encode<T: Serialize + ?Sized>(tag: Tag, body: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(&mut out, tag, body)?;
    Ok(out)
}

/// Appends `body` encoded under `tag` to `out`; on error `out` is unchanged.
pub fn encode_into<T: Serialize + ?Sized>(out: &mut Vec<u8>, tag: Tag, body: &T) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&header(tag));
    if let Err(e) = bincode::serialize_into(&mut *out, body) {
        out.truncate(start);
        return Err(Error::InvalidData(format!("encoding {tag:?}: {e}")));
    }
    Ok(())
}

/// Checks the envelope of `bytes` (`what` names them in errors): the magic, a
/// version this build reads and a known tag. Returns the tag and the body.
pub fn open<'a>(bytes: &'a [u8], what: &str) -> Result<(Tag, &'a [u8])> {
    if bytes.len() < HEADER_LEN || bytes[..4] != MAGIC {
        return Err(Error::InvalidData(format!(
            "{what}: not in a Trireme format (no {:?} header); data written before format \
             version {MIN_FORMAT_VERSION} is not readable",
            String::from_utf8_lossy(&MAGIC)
        )));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version > FORMAT_VERSION {
        return Err(Error::InvalidData(format!(
            "{what}: written in format version {version}, newer than version {FORMAT_VERSION}, \
             the newest this node reads: upgrade this node"
        )));
    }
    if version < MIN_FORMAT_VERSION {
        return Err(Error::InvalidData(format!(
            "{what}: written in format version {version}, older than version \
             {MIN_FORMAT_VERSION}, the oldest this node reads"
        )));
    }
    let n = u16::from_le_bytes([bytes[6], bytes[7]]);
    let tag = Tag::from_u16(n).ok_or_else(|| {
        Error::InvalidData(format!(
            "{what}: unknown tag {n} in format version {version}"
        ))
    })?;
    Ok((tag, &bytes[HEADER_LEN..]))
}

/// Decodes `bytes`, which must hold a `tag` envelope.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], tag: Tag, what: &str) -> Result<T> {
    let (found, body) = open(bytes, what)?;
    if found != tag {
        return Err(Error::InvalidData(format!(
            "{what}: holds {found:?} ({}), expected {tag:?} ({})",
            found as u16, tag as u16
        )));
    }
    body_of(body, what)
}

/// Decodes an envelope's body (after [`open`]).
pub fn body_of<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    bincode::deserialize(body).map_err(|e| Error::InvalidData(format!("{what}: {e}")))
}

/// A type sent to peers, and the tag it travels under.
pub trait PeerMessage {
    /// The tag of this message.
    const TAG: Tag;
}

macro_rules! peer_message {
    ($tag:ident: $($t:tt)*) => {
        impl<$($t)* {
            const TAG: Tag = Tag::$tag;
        }
    };
}

peer_message!(AppendEntries: > PeerMessage for openraft::raft::AppendEntriesRequest<crate::raft::types::TypeConfig>);
peer_message!(AppendEntriesReply: E> PeerMessage for std::result::Result<openraft::raft::AppendEntriesResponse<u64>, E>);
peer_message!(VoteRequest: > PeerMessage for openraft::raft::VoteRequest<u64>);
peer_message!(VoteReply: E> PeerMessage for std::result::Result<openraft::raft::VoteResponse<u64>, E>);
peer_message!(InstallSnapshot: > PeerMessage for openraft::raft::InstallSnapshotRequest<crate::raft::types::TypeConfig>);
peer_message!(InstallSnapshotReply: E> PeerMessage for std::result::Result<openraft::raft::InstallSnapshotResponse<u64>, E>);
peer_message!(Forward: > PeerMessage for Vec<crate::txn::WriteSet>);
peer_message!(Forward: 'a> PeerMessage for Vec<&'a crate::txn::WriteSet>);
peer_message!(ForwardReply: E> PeerMessage for std::result::Result<(), E>);
peer_message!(ReadIndex: > PeerMessage for ());
peer_message!(ReadIndexReply: E> PeerMessage for std::result::Result<crate::txn::Seqno, E>);
peer_message!(LeaseCall: > PeerMessage for crate::lease::LeaderCall);
peer_message!(LeaseReply: E> PeerMessage for std::result::Result<crate::lease::LeaderAnswer, E>);

// The log's payload: a tag, then the variant's body. Tags are never reused.
const REQUEST_BATCH: u16 = 1;
const REQUEST_DEPART: u16 = 2;
const REQUEST_PARAMS: u16 = 3;

impl Serialize for Request {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        match self {
            Request::Batch(write_sets) => {
                t.serialize_element(&REQUEST_BATCH)?;
                t.serialize_element(write_sets)?;
            }
            Request::Depart(id) => {
                t.serialize_element(&REQUEST_DEPART)?;
                t.serialize_element(id)?;
            }
            Request::Params(change) => {
                t.serialize_element(&REQUEST_PARAMS)?;
                t.serialize_element(change)?;
            }
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Request, D::Error> {
        struct TaggedRequest;
        impl<'de> Visitor<'de> for TaggedRequest {
            type Value = Request;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a tag and a log request")
            }

            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Request, A::Error> {
                let tag: u16 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let missing = || de::Error::invalid_length(1, &"a tag and a log request");
                match tag {
                    REQUEST_BATCH => Ok(Request::Batch(seq.next_element()?.ok_or_else(missing)?)),
                    REQUEST_DEPART => Ok(Request::Depart(seq.next_element()?.ok_or_else(missing)?)),
                    REQUEST_PARAMS => Ok(Request::Params(seq.next_element()?.ok_or_else(missing)?)),
                    other => Err(de::Error::custom(format!(
                        "unknown log request tag {other} (format version {FORMAT_VERSION} knows \
                         {REQUEST_BATCH}..={REQUEST_PARAMS})"
                    ))),
                }
            }
        }
        d.deserialize_tuple(2, TaggedRequest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_their_numbers_and_round_trip() {
        for tag in Tag::ALL {
            assert_eq!(Tag::from_u16(tag as u16), Some(tag));
        }
        assert_eq!(Tag::LogEntry as u16, 1);
        assert_eq!(Tag::AppendEntries as u16, 64);
        assert_eq!(Tag::from_u16(999), None);
        let bytes = encode(Tag::MetaChain, &42u64).expect("encode");
        assert_eq!(&bytes[..8], b"TRRM\x01\x00\x22\x00");
        assert_eq!(
            decode::<u64>(&bytes, Tag::MetaChain, "chain").expect("decode"),
            42
        );
    }

    #[test]
    fn a_newer_version_is_refused_naming_both_versions() {
        let mut bytes = encode(Tag::MetaChain, &42u64).expect("encode");
        bytes[4..6].copy_from_slice(&7u16.to_le_bytes());
        let err = decode::<u64>(&bytes, Tag::MetaChain, "the chain")
            .expect_err("newer version")
            .to_string();
        assert!(err.contains("the chain"), "{err}");
        assert!(err.contains("format version 7"), "{err}");
        assert!(err.contains(&format!("version {FORMAT_VERSION}")), "{err}");
    }

    #[test]
    fn unknown_tags_missing_magic_and_wrong_tags_are_refused() {
        let mut bytes = encode(Tag::MetaChain, &42u64).expect("encode");
        bytes[6..8].copy_from_slice(&500u16.to_le_bytes());
        let err = open(&bytes, "x").expect_err("unknown tag").to_string();
        assert!(err.contains("unknown tag 500"), "{err}");
        let err = open(&42u64.to_le_bytes(), "x")
            .expect_err("no magic")
            .to_string();
        assert!(err.contains("not in a Trireme format"), "{err}");
        let bytes = encode(Tag::MetaChain, &42u64).expect("encode");
        let err = decode::<u64>(&bytes, Tag::MetaApplied, "x")
            .expect_err("wrong tag")
            .to_string();
        assert!(
            err.contains("holds MetaChain (34), expected MetaApplied (32)"),
            "{err}"
        );
    }

    #[test]
    fn log_requests_carry_explicit_tags() {
        let raw = bincode::serialize(&Request::Depart(9)).expect("encode");
        assert_eq!(raw[..2], REQUEST_DEPART.to_le_bytes());
        assert_eq!(
            bincode::deserialize::<Request>(&raw).expect("decode"),
            Request::Depart(9)
        );
        let mut bad = raw.clone();
        bad[..2].copy_from_slice(&77u16.to_le_bytes());
        let err = bincode::deserialize::<Request>(&bad)
            .expect_err("unknown tag")
            .to_string();
        assert!(err.contains("unknown log request tag 77"), "{err}");
    }
}
