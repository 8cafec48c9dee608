//! Crafted peer messages: what a hostile program that reaches a node's peer
//! port can send on the Raft service, and what each must get back. Used by `tests/hostile_peer.rs` and by the chaos
//! tier's crafted-peer-message nemesis.
//!
//! `Forward` asks the leader to order write sets: every crafted one is
//! refused whole, nothing of its batch ordered: a batch that decodes gets the
//! typed peer error `Invalid` naming the problem, bytes that do not decode
//! get INVALID_ARGUMENT.
//! `AppendEntries` carries a vote older than the cluster's (a spoof that
//! reuses the live leader's vote would be a Byzantine peer, which Raft does
//! not claim to survive): the node answers with its higher vote and stores
//! nothing; undecodable ones are refused with INVALID_ARGUMENT.

use anyhow::Result;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
use tonic::Code;
use trireme_proto::v1::raft_client::RaftClient;
use trireme_proto::v1::RaftMessage;
use trireme_server::raft::network::{decode, encode};
use trireme_server::raft::peer_error::PeerError;
use trireme_server::raft::types::{Entry, Request, TypeConfig};
use trireme_server::txn::{KeyRange, Mutation, WriteSet};

/// Every key a crafted write set writes starts with this: none may ever be readable.
pub const HOSTILE_PREFIX: &[u8] = b"hostile/";

/// Which RPC a crafted message goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    /// Write-set forwarding to the leader.
    Forward,
    /// Raft log replication.
    AppendEntries,
}

/// One crafted message and the refusal it must get.
pub struct Crafted {
    /// What it is, for failure messages.
    pub name: &'static str,
    /// Where it goes.
    pub rpc: Rpc,
    /// The bytes.
    pub msg: RaftMessage,
    /// A part of the INVALID_ARGUMENT message that names the problem; `None`
    /// for a decodable AppendEntries, which must be answered with a higher vote.
    pub refusal: Option<&'static str>,
}

fn hostile_put(tag: &str, value_len: usize) -> Mutation {
    let mut key = HOSTILE_PREFIX.to_vec();
    key.extend_from_slice(tag.as_bytes());
    Mutation::Put {
        key,
        value: vec![b'x'; value_len],
        lease: 0,
    }
}

fn inverted(origin: u64) -> WriteSet {
    let mut ws = WriteSet::blind(origin, vec![hostile_put("inverted", 1)]);
    ws.snapshot = Some(1);
    ws.ranges = vec![KeyRange {
        start: b"z".to_vec(),
        end: Some(b"b".to_vec()),
    }];
    ws
}

/// A valid write set; batched with an invalid one it must not be ordered either.
fn innocent(origin: u64) -> WriteSet {
    WriteSet::blind(origin, vec![hostile_put("innocent", 1)])
}

fn stale_append(entries: Vec<WriteSet>) -> Result<RaftMessage> {
    // Term 0 is below every vote a running cluster holds.
    let log_id = |index| LogId::new(CommittedLeaderId::new(0, 1), index);
    let entry = Entry {
        log_id: log_id(1_000_000),
        payload: EntryPayload::Normal(Request::Batch(entries)),
    };
    let rpc: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
        vote: Vote::new_committed(0, 1),
        prev_log_id: None,
        entries: vec![entry],
        leader_commit: Some(log_id(1_000_000)),
    };
    Ok(encode(&rpc)?)
}

fn raw(payload: Vec<u8>) -> RaftMessage {
    RaftMessage {
        payload,
        data: Vec::new(),
        health: None,
        mark: 0,
    }
}

/// Every crafted message, for a node whose limits are the defaults.
pub fn crafted() -> Result<Vec<Crafted>> {
    let forward = |wss: Vec<WriteSet>| -> Result<RaftMessage> { Ok(encode(&wss)?) };
    let mut out = vec![
        Crafted {
            name: "forward: inverted scanned range after a valid write set",
            rpc: Rpc::Forward,
            msg: forward(vec![innocent(2), inverted(2)])?,
            refusal: Some("forwarded write set 1 of 2"),
        },
        Crafted {
            name: "forward: empty key",
            rpc: Rpc::Forward,
            msg: forward(vec![WriteSet::blind(
                2,
                vec![Mutation::Delete { key: Vec::new() }],
            )])?,
            refusal: Some("empty key"),
        },
        Crafted {
            name: "forward: no mutations",
            rpc: Rpc::Forward,
            msg: forward(vec![WriteSet::blind(2, Vec::new())])?,
            refusal: Some("no mutations"),
        },
        Crafted {
            name: "forward: value over max_value_bytes",
            rpc: Rpc::Forward,
            msg: forward(vec![WriteSet::blind(
                2,
                vec![hostile_put("big-value", (1 << 20) + 1)],
            )])?,
            refusal: Some("max_value_bytes"),
        },
        Crafted {
            name: "forward: write set over max_write_set_bytes",
            rpc: Rpc::Forward,
            msg: forward(vec![WriteSet::blind(
                2,
                (0..17)
                    .map(|i| hostile_put(&format!("big-{i}"), 1 << 20))
                    .collect(),
            )])?,
            refusal: Some("max_write_set_bytes"),
        },
        Crafted {
            name: "forward: over max_ops",
            rpc: Rpc::Forward,
            msg: forward(vec![WriteSet::blind(
                2,
                (0..1001)
                    .map(|i| hostile_put(&format!("op-{i}"), 1))
                    .collect(),
            )])?,
            refusal: Some("max_ops"),
        },
        Crafted {
            name: "forward: garbage bytes",
            rpc: Rpc::Forward,
            msg: raw(vec![0xff; 64]),
            refusal: Some("undecodable"),
        },
        Crafted {
            name: "append entries: garbage bytes",
            rpc: Rpc::AppendEntries,
            msg: raw(b"\x07not an openraft message at all".to_vec()),
            refusal: Some("undecodable"),
        },
        Crafted {
            name: "append entries: stale vote carrying an inverted range",
            rpc: Rpc::AppendEntries,
            msg: stale_append(vec![innocent(1), inverted(1)])?,
            refusal: None,
        },
        Crafted {
            name: "append entries: stale vote carrying an over-limit write set",
            rpc: Rpc::AppendEntries,
            msg: stale_append(vec![WriteSet::blind(
                1,
                (0..17)
                    .map(|i| hostile_put(&format!("big-{i}"), 1 << 20))
                    .collect(),
            )])?,
            refusal: None,
        },
    ];
    // Cut short: the length prefixes promise more than there is.
    let mut cut = stale_append(vec![inverted(1)])?;
    cut.payload.truncate(cut.payload.len() / 2);
    out.push(Crafted {
        name: "append entries: truncated",
        rpc: Rpc::AppendEntries,
        msg: cut,
        refusal: Some("undecodable"),
    });
    let mut cut = forward(vec![innocent(2), innocent(2)])?;
    cut.payload.truncate(cut.payload.len() - 3);
    out.push(Crafted {
        name: "forward: truncated",
        rpc: Rpc::Forward,
        msg: cut,
        refusal: Some("undecodable"),
    });
    Ok(out)
}

/// What a node did with a crafted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Refused as it must be.
    Refused,
    /// Not delivered (the node is down or restarting): proves nothing.
    Unreachable(String),
    /// Anything else: accepted, or refused for the wrong reason. A broken promise.
    Wrong(String),
}

/// Sends `c` to the node at `addr` and says whether it was refused as it must be.
pub async fn send(addr: &str, c: &Crafted) -> Answer {
    let client = match RaftClient::connect(format!("http://{addr}")).await {
        Ok(client) => client,
        Err(e) => return Answer::Unreachable(format!("connect to {addr}: {e}")),
    };
    let mut client = client
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let mut request = tonic::Request::new(c.msg.clone());
    request.set_timeout(std::time::Duration::from_secs(10));
    let reply = match c.rpc {
        Rpc::Forward => client.forward(request).await,
        Rpc::AppendEntries => client.append_entries(request).await,
    };
    let wrong = |what: String| Answer::Wrong(format!("{} to {addr}: {what}", c.name));
    match (reply, c.refusal) {
        (Err(status), Some(want))
            if status.code() == Code::InvalidArgument && status.message().contains(want) =>
        {
            Answer::Refused
        }
        (Err(status), _) if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded) => {
            Answer::Unreachable(format!("{} to {addr}: {status}", c.name))
        }
        (Ok(reply), None) => {
            let answer: trireme_server::Result<
                Result<AppendEntriesResponse<u64>, openraft::error::RaftError<u64>>,
            > = decode(reply.get_ref());
            match answer {
                Ok(Ok(AppendEntriesResponse::HigherVote(_))) => Answer::Refused,
                other => wrong(format!("accepted ({other:?})")),
            }
        }
        // A well-formed Forward is answered in band: a typed peer error.
        (Ok(reply), Some(want)) if c.rpc == Rpc::Forward => {
            let answer: trireme_server::Result<Result<(), PeerError>> = decode(reply.get_ref());
            match answer {
                Ok(Err(PeerError::Invalid(why))) if why.contains(want) => Answer::Refused,
                other => wrong(format!(
                    "{other:?}, want a refusal as invalid naming {want:?}"
                )),
            }
        }
        (Ok(reply), Some(want)) => wrong(format!(
            "accepted ({} reply bytes), want INVALID_ARGUMENT naming {want:?}",
            reply.get_ref().payload.len()
        )),
        (Err(status), want) => wrong(format!(
            "{:?} {:?}, want {}",
            status.code(),
            status.message(),
            want.map_or("a higher vote".to_string(), |w| format!(
                "INVALID_ARGUMENT naming {w:?}"
            ))
        )),
    }
}
