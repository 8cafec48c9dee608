//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn and Compact on any node.
//! A request that must read before it writes runs as a certified
//! transaction (see the module essay of [`super`]): [`Exec`] reads at one
//! snapshot, records what it read, buffers the writes, and commits them as
//! one SERIALIZABLE write set, again from a new snapshot on a conflict.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tonic::{Request, Response, Status};
use trireme_proto::etcd::etcdserverpb as epb;
use trireme_proto::etcd::etcdserverpb::kv_server::Kv;

use super::convert::{self, status, Keys};
use super::{header, meta, TXN_ATTEMPTS};
use crate::certify::Abort;
use crate::error::{Error, Result};
use crate::node::{Consistency, Node, ReadOptions};
use crate::storage::Versioned;
use crate::txn::{reserved, Isolation, Key, KeyRange, Mutation, Seqno, TxnId, WriteSet};

/// The etcd KV service.
pub struct KvService {
    node: Arc<Node>,
}

impl KvService {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> Self {
        KvService { node }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        req: Request<epb::RangeRequest>,
    ) -> Result<Response<epb::RangeResponse>, Status> {
        let req = req.into_inner();
        let node = &self.node;
        let consistency = if req.serializable {
            Consistency::Local
        } else {
            Consistency::Linearizable
        };
        let fresh = node
            .read_seqno(ReadOptions {
                consistency,
                snapshot: None,
            })
            .await
            .map_err(status)?;
        let at = match convert::revision(req.revision, "revision").map_err(status)? {
            0 => fresh,
            rev => check_revision(node, rev, fresh).map_err(status)?,
        };
        let resp = range_at(node, &req, at).await.map_err(status)?;
        Ok(Response::new(epb::RangeResponse {
            header: Some(header(node, at)),
            ..resp
        }))
    }

    async fn put(
        &self,
        req: Request<epb::PutRequest>,
    ) -> Result<Response<epb::PutResponse>, Status> {
        let req = req.into_inner();
        let node = &self.node;
        check_put(&req).map_err(status)?;
        if !req.prev_kv && !req.ignore_value && !req.ignore_lease {
            // A blind write: it always succeeds, as in etcd.
            let mut ws = WriteSet::blind(0, vec![convert::put(req.key, req.value, req.lease)]);
            reserved::check_client_write_set(&mut ws).map_err(status)?;
            node.leases()
                .attach(&mut ws)
                .await
                .map_err(lease_not_found)
                .map_err(status)?;
            let seqno = node.commit(ws, false).await.map_err(status)?;
            return Ok(Response::new(epb::PutResponse {
                header: Some(header(node, seqno)),
                prev_kv: None,
            }));
        }
        let (resp, rev) = run(node, |exec| {
            let req = req.clone();
            Box::pin(async move { exec.put(req).await })
        })
        .await
        .map_err(status)?;
        Ok(Response::new(epb::PutResponse {
            header: Some(header(node, rev)),
            ..resp
        }))
    }

    async fn delete_range(
        &self,
        req: Request<epb::DeleteRangeRequest>,
    ) -> Result<Response<epb::DeleteRangeResponse>, Status> {
        let req = req.into_inner();
        let node = &self.node;
        let (resp, rev) = run(node, |exec| {
            let req = req.clone();
            Box::pin(async move { exec.delete(req).await })
        })
        .await
        .map_err(status)?;
        Ok(Response::new(epb::DeleteRangeResponse {
            header: Some(header(node, rev)),
            ..resp
        }))
    }

    async fn txn(
        &self,
        req: Request<epb::TxnRequest>,
    ) -> Result<Response<epb::TxnResponse>, Status> {
        let req = req.into_inner();
        let node = &self.node;
        let ops = count_ops(&req);
        let max = node.config().limits.max_ops;
        if ops > max {
            return Err(Status::invalid_argument(format!(
                "etcdserver: too many operations in txn request ({ops} compares and operations; \
                 the limit is max_ops = {max})"
            )));
        }
        let (mut resp, rev) = run(node, |exec| {
            let req = req.clone();
            Box::pin(async move { exec.txn(req).await })
        })
        .await
        .map_err(status)?;
        set_headers(node, &mut resp, rev);
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        req: Request<epb::CompactionRequest>,
    ) -> Result<Response<epb::CompactionResponse>, Status> {
        let req = req.into_inner();
        let node = &self.node;
        let rev = convert::revision(req.revision, "compaction revision").map_err(status)?;
        let fresh = node
            .begin(Consistency::Linearizable)
            .await
            .map_err(status)?;
        check_revision(node, rev, fresh).map_err(status)?;
        // History is kept by cert_window on each node: nothing to remove here.
        Ok(Response::new(epb::CompactionResponse {
            header: Some(header(node, fresh)),
        }))
    }
}

/// Checks that `rev` is readable on this node (at most `fresh`, at or above
/// the history horizon).
fn check_revision(node: &Node, rev: Seqno, fresh: Seqno) -> Result<Seqno> {
    if rev > fresh {
        return Err(future_rev());
    }
    let horizon = node.applied().horizon();
    if rev < horizon {
        return Err(Error::SnapshotTooOld(format!(
            "revision {rev} is below this node's history horizon {horizon}"
        )));
    }
    Ok(rev)
}

/// etcd's future-revision error, carried as an input error with etcd's text.
fn future_rev() -> Error {
    Error::InvalidInput(convert::FUTURE_REV.into())
}

/// Reads `keys` at `at`: the live pairs (at most `max_scan_limit`) and
/// whether the range holds more.
async fn read(
    node: &Node,
    keys: &Keys,
    at: Seqno,
    keys_only: bool,
) -> Result<(Vec<Versioned>, bool)> {
    let max = node.config().limits.max_scan_limit;
    let (pairs, more, _) = node
        .scan(
            keys.range(),
            max,
            keys_only,
            ReadOptions {
                consistency: Consistency::Local,
                snapshot: Some(at),
            },
        )
        .await?;
    Ok((pairs, more))
}

/// A Range at `at` (header left to the caller).
async fn range_at(node: &Node, req: &epb::RangeRequest, at: Seqno) -> Result<epb::RangeResponse> {
    let keys = Keys::from(&req.key, &req.range_end)?;
    let (pairs, over) = read(
        node,
        &keys,
        at,
        req.keys_only && sort_target(req)? != Sort::Value,
    )
    .await?;
    shape_range(node, req, pairs, over)
}

/// What a Range sorts by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sort {
    None,
    Key,
    Mod,
    Value,
}

fn sort_target(req: &epb::RangeRequest) -> Result<Sort> {
    use epb::range_request::{SortOrder, SortTarget};
    let order = SortOrder::try_from(req.sort_order)
        .map_err(|_| Error::InvalidInput("etcdserver: invalid sort option".into()))?;
    let target = SortTarget::try_from(req.sort_target)
        .map_err(|_| Error::InvalidInput("etcdserver: invalid sort option".into()))?;
    // As etcd: no order with a target other than the key means ascending.
    if order == SortOrder::None && target == SortTarget::Key {
        return Ok(Sort::None);
    }
    match target {
        SortTarget::Key => Ok(Sort::Key),
        SortTarget::Mod => Ok(Sort::Mod),
        SortTarget::Value => Ok(Sort::Value),
        SortTarget::Version | SortTarget::Create => Err(Error::InvalidInput(
            "sorting by version or create revision needs per-key metadata this build does not \
             store; sort by key, mod revision or value"
                .into(),
        )),
    }
}

/// Filters, sorts, counts and limits what a Range read.
fn shape_range(
    node: &Node,
    req: &epb::RangeRequest,
    mut pairs: Vec<Versioned>,
    over: bool,
) -> Result<epb::RangeResponse> {
    use epb::range_request::SortOrder;
    let sort = sort_target(req)?;
    let max = node.config().limits.max_scan_limit;
    if over && (req.limit <= 0 || sort != Sort::None || req.count_only) {
        return Err(Error::InvalidInput(format!(
            "the range holds more than max_scan_limit = {max} keys: give a limit (without \
             sorting), or a smaller range"
        )));
    }
    if req.min_create_revision != 0 || req.max_create_revision != 0 {
        return Err(Error::InvalidInput(
            "min/max_create_revision need per-key metadata this build does not store".into(),
        ));
    }
    if req.min_mod_revision != 0 || req.max_mod_revision != 0 {
        pairs.retain(|v| {
            let m = v.version as i64;
            (req.min_mod_revision == 0 || m >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || m <= req.max_mod_revision)
        });
    }
    match sort {
        Sort::None | Sort::Key => {}
        Sort::Mod => pairs.sort_by_key(|v| v.version),
        Sort::Value => pairs.sort_by(|a, b| a.value.cmp(&b.value)),
    }
    if req.sort_order == SortOrder::Descend as i32 {
        pairs.reverse();
    }
    let count = pairs.len() as i64;
    let mut more = over;
    if req.limit > 0 && pairs.len() > req.limit as usize {
        pairs.truncate(req.limit as usize);
        more = true;
    }
    let kvs = if req.count_only {
        Vec::new()
    } else {
        pairs
            .iter()
            .map(|v| convert::kv(v, req.keys_only))
            .collect()
    };
    Ok(epb::RangeResponse {
        header: None,
        kvs,
        more,
        count,
    })
}

/// A put naming a lease that does not exist fails with etcd's own words
/// (etcdctl and client libraries look for them), NOT_FOUND as in etcd.
fn lease_not_found(e: Error) -> Error {
    match e {
        Error::NotFound(detail) => {
            Error::NotFound(format!("{} ({detail})", convert::LEASE_NOT_FOUND))
        }
        e => e,
    }
}

fn check_put(req: &epb::PutRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::InvalidInput(convert::EMPTY_KEY.into()));
    }
    if req.lease < 0 {
        return Err(Error::InvalidInput(format!(
            "{} (lease {}: ids are positive)",
            convert::LEASE_NOT_FOUND,
            req.lease
        )));
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(Error::InvalidInput("etcdserver: value is provided".into()));
    }
    Ok(())
}

/// Operations and compares in a Txn, nested ones included.
fn count_ops(req: &epb::TxnRequest) -> usize {
    let ops = req
        .success
        .iter()
        .chain(&req.failure)
        .map(|op| match &op.request {
            Some(epb::request_op::Request::RequestTxn(t)) => 1 + count_ops(t),
            _ => 1,
        });
    req.compare.len() + ops.sum::<usize>()
}

/// Sets the header of a Txn answer and of every answer inside it.
fn set_headers(node: &Node, resp: &mut epb::TxnResponse, rev: Seqno) {
    use epb::response_op::Response as R;
    resp.header = Some(header(node, rev));
    for op in &mut resp.responses {
        match &mut op.response {
            Some(R::ResponseRange(r)) => r.header = Some(header(node, rev)),
            Some(R::ResponsePut(r)) => r.header = Some(header(node, rev)),
            Some(R::ResponseDeleteRange(r)) => r.header = Some(header(node, rev)),
            Some(R::ResponseTxn(t)) => set_headers(node, t, rev),
            None => {}
        }
    }
}

type ExecFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send + 'a>>;

/// Runs `body` as a certified transaction: from a linearizable snapshot,
/// committing what it wrote; again from a new snapshot on a certification
/// conflict, up to [`TXN_ATTEMPTS`] times. Returns the body's answer and the
/// revision it reflects (the commit seqno, or the snapshot if it wrote
/// nothing).
async fn run<T, F>(node: &Arc<Node>, mut body: F) -> Result<(T, Seqno)>
where
    F: for<'a> FnMut(&'a mut Exec<'_>) -> ExecFuture<'a, T>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let at = node.begin(Consistency::Linearizable).await?;
        let mut exec = Exec {
            node,
            at,
            reads: BTreeSet::new(),
            ranges: Vec::new(),
            writes: BTreeMap::new(),
        };
        let answer = body(&mut exec).await?;
        if exec.writes.is_empty() {
            return Ok((answer, at));
        }
        let mut ws = WriteSet {
            id: TxnId::random(),
            origin: 0,
            snapshot: Some(at),
            isolation: Isolation::Serializable,
            mutations: exec.writes.into_values().collect(),
            compares: Vec::new(),
            reads: exec.reads.into_iter().collect(),
            ranges: exec.ranges,
        };
        reserved::check_client_write_set(&mut ws)?;
        node.leases()
            .attach(&mut ws)
            .await
            .map_err(lease_not_found)?;
        match node.commit(ws, false).await {
            Ok(seqno) => return Ok((answer, seqno)),
            Err(Error::Aborted(
                Abort::WriteConflict { .. }
                | Abort::ReadConflict { .. }
                | Abort::RangeConflict { .. }
                | Abort::SnapshotTooOld { .. },
            )) if attempt < TXN_ATTEMPTS => {
                tracing::debug!(attempt, "etcd transaction conflicted: running it again");
            }
            Err(e) => return Err(e),
        }
    }
}

/// One attempt of a transaction: its snapshot, its read set and its
/// buffered writes.
pub struct Exec<'n> {
    node: &'n Node,
    at: Seqno,
    reads: BTreeSet<Key>,
    ranges: Vec<KeyRange>,
    writes: BTreeMap<Key, Mutation>,
}

impl Exec<'_> {
    /// Reads `keys` at the snapshot and adds them to the read set.
    async fn read(&mut self, keys: &Keys, keys_only: bool) -> Result<(Vec<Versioned>, bool)> {
        let out = read(self.node, keys, self.at, keys_only).await?;
        match keys {
            Keys::One(k) => {
                self.reads.insert(k.clone());
            }
            Keys::Range(r) => self.ranges.push(r.clone()),
        }
        Ok(out)
    }

    fn write(&mut self, m: Mutation) -> Result<()> {
        let key = m.key().to_vec();
        if self.writes.insert(key.clone(), m).is_some() {
            return Err(Error::InvalidInput(format!(
                "etcdserver: duplicate key given in txn request ({:?})",
                String::from_utf8_lossy(&key)
            )));
        }
        Ok(())
    }

    async fn put(&mut self, req: epb::PutRequest) -> Result<epb::PutResponse> {
        check_put(&req)?;
        let keys = Keys::from(&req.key, &[])?;
        let prev = if req.prev_kv || req.ignore_value || req.ignore_lease {
            self.read(&keys, false).await?.0.into_iter().next()
        } else {
            None
        };
        let (value, lease) = if req.ignore_value || req.ignore_lease {
            match &prev {
                None => {
                    return Err(Error::InvalidInput("etcdserver: key not found".into()));
                }
                Some(p) => (
                    if req.ignore_value {
                        p.value.clone()
                    } else {
                        req.value
                    },
                    if req.ignore_lease { p.lease } else { req.lease },
                ),
            }
        } else {
            (req.value, req.lease)
        };
        self.write(convert::put(req.key, value, lease))?;
        Ok(epb::PutResponse {
            header: None,
            prev_kv: prev.filter(|_| req.prev_kv).map(|p| convert::kv(&p, false)),
        })
    }

    async fn delete(&mut self, req: epb::DeleteRangeRequest) -> Result<epb::DeleteRangeResponse> {
        let keys = Keys::from(&req.key, &req.range_end)?;
        let (pairs, over) = self.read(&keys, !req.prev_kv).await?;
        if over {
            let max = self.node.config().limits.max_scan_limit;
            return Err(Error::InvalidInput(format!(
                "the range to delete holds more than max_scan_limit = {max} keys: delete it in parts"
            )));
        }
        for p in &pairs {
            self.write(Mutation::Delete { key: p.key.clone() })?;
        }
        Ok(epb::DeleteRangeResponse {
            header: None,
            deleted: pairs.len() as i64,
            prev_kvs: if req.prev_kv {
                pairs.iter().map(|p| convert::kv(p, false)).collect()
            } else {
                Vec::new()
            },
        })
    }

    async fn range(&mut self, req: epb::RangeRequest) -> Result<epb::RangeResponse> {
        let rev = convert::revision(req.revision, "revision")?;
        if rev != 0 && rev != self.at {
            // A read of the past inside a Txn: fixed history, no read set.
            check_revision(self.node, rev, self.at)?;
            return range_at(self.node, &req, rev).await;
        }
        let keys = Keys::from(&req.key, &req.range_end)?;
        let keys_only = req.keys_only && sort_target(&req)? != Sort::Value;
        let (pairs, over) = self.read(&keys, keys_only).await?;
        shape_range(self.node, &req, pairs, over)
    }

    fn txn(&mut self, req: epb::TxnRequest) -> ExecFuture<'_, epb::TxnResponse> {
        Box::pin(async move {
            let mut succeeded = true;
            for c in &req.compare {
                if !self.compare(c).await? {
                    succeeded = false;
                    break;
                }
            }
            // The first failed compare decides the branch: the keys it read
            // are in the read set, so the choice holds at commit.
            let ops = if succeeded { req.success } else { req.failure };
            let mut responses = Vec::with_capacity(ops.len());
            for op in ops {
                use epb::request_op::Request as Q;
                use epb::response_op::Response as R;
                let response = match op.request {
                    Some(Q::RequestRange(r)) => R::ResponseRange(self.range(r).await?),
                    Some(Q::RequestPut(p)) => R::ResponsePut(self.put(p).await?),
                    Some(Q::RequestDeleteRange(d)) => R::ResponseDeleteRange(self.delete(d).await?),
                    Some(Q::RequestTxn(t)) => R::ResponseTxn(self.txn(t).await?),
                    None => {
                        return Err(Error::InvalidInput(
                            "a txn operation names no request (range, put, delete_range or txn)"
                                .into(),
                        ))
                    }
                };
                responses.push(epb::ResponseOp {
                    response: Some(response),
                });
            }
            Ok(epb::TxnResponse {
                header: None,
                succeeded,
                responses,
            })
        })
    }

    /// Evaluates one compare at the snapshot, as etcd does: every key in
    /// the range must satisfy it; no key at all compares as an absent key
    /// (zero revisions, version and lease), except a value compare, which fails.
    async fn compare(&mut self, c: &epb::Compare) -> Result<bool> {
        use epb::compare::{CompareTarget as T, TargetUnion as U};
        let keys = Keys::from(&c.key, &c.range_end)?;
        let target = T::try_from(c.target)
            .map_err(|_| Error::InvalidInput(format!("unknown compare target {}", c.target)))?;
        let result = epb::compare::CompareResult::try_from(c.result)
            .map_err(|_| Error::InvalidInput(format!("unknown compare result {}", c.result)))?;
        let (pairs, over) = self.read(&keys, target != T::Value).await?;
        if over {
            let max = self.node.config().limits.max_scan_limit;
            return Err(Error::InvalidInput(format!(
                "a compare's range holds more than max_scan_limit = {max} keys"
            )));
        }
        if pairs.is_empty() {
            if target == T::Value {
                return Ok(false);
            }
            let absent = decide(result, meta::Known::Exact(0), int_target(&c.target_union));
            return Ok(absent.unwrap_or(false));
        }
        for p in &pairs {
            let ok = match target {
                T::Value => {
                    let want = match &c.target_union {
                        Some(U::Value(v)) => v.as_slice(),
                        _ => &[],
                    };
                    holds(result, p.value.as_slice().cmp(want))
                }
                _ => {
                    let m = meta::of(p);
                    let known = match target {
                        T::Mod => meta::Known::Exact(m.mod_revision),
                        T::Version => meta::Known::from(m.version, 1, i64::MAX),
                        T::Create => meta::Known::from(m.create_revision, 1, m.mod_revision),
                        T::Lease => meta::Known::from(m.lease, 0, i64::MAX),
                        T::Value => unreachable!("handled above"),
                    };
                    decide(result, known, int_target(&c.target_union)).ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "a compare on the {} of {:?} needs per-key metadata this build does \
                             not store; only compares decided by whether the key exists \
                             (e.g. version = 0, create_revision > 0) and compares on mod \
                             revision and value are served",
                            target.as_str_name().to_lowercase(),
                            String::from_utf8_lossy(&p.key)
                        ))
                    })?
                }
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The integer a compare checks against (0 when the union holds another kind).
fn int_target(u: &Option<epb::compare::TargetUnion>) -> i64 {
    use epb::compare::TargetUnion as U;
    match u {
        Some(U::Version(v) | U::CreateRevision(v) | U::ModRevision(v) | U::Lease(v)) => *v,
        _ => 0,
    }
}

fn holds(result: epb::compare::CompareResult, ord: std::cmp::Ordering) -> bool {
    use epb::compare::CompareResult as C;
    use std::cmp::Ordering::*;
    match result {
        C::Equal => ord == Equal,
        C::NotEqual => ord != Equal,
        C::Greater => ord == Greater,
        C::Less => ord == Less,
    }
}

/// `field <result> target` when the field is known exactly or the bounds
/// decide it; `None` when they do not.
fn decide(result: epb::compare::CompareResult, field: meta::Known, target: i64) -> Option<bool> {
    use epb::compare::CompareResult as C;
    match field {
        meta::Known::Exact(v) => Some(holds(result, v.cmp(&target))),
        meta::Known::Within(lo, hi) => {
            let eq = if target < lo || target > hi {
                Some(false)
            } else if lo == hi {
                Some(true)
            } else {
                None
            };
            match result {
                C::Equal => eq,
                C::NotEqual => eq.map(|e| !e),
                C::Greater if lo > target => Some(true),
                C::Greater if hi <= target => Some(false),
                C::Less if hi < target => Some(true),
                C::Less if lo >= target => Some(false),
                C::Greater | C::Less => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use epb::compare::CompareResult as C;
    use meta::Known;

    #[test]
    fn bounds_decide_only_what_existence_decides() {
        let present = Known::Within(1, i64::MAX);
        assert_eq!(decide(C::Equal, present, 0), Some(false));
        assert_eq!(decide(C::NotEqual, present, 0), Some(true));
        assert_eq!(decide(C::Greater, present, 0), Some(true));
        assert_eq!(decide(C::Less, present, 1), Some(false));
        assert_eq!(decide(C::Equal, present, 3), None);
        assert_eq!(decide(C::Greater, present, 3), None);
        assert_eq!(decide(C::Less, present, 3), None);
        let absent = Known::Exact(0);
        assert_eq!(decide(C::Equal, absent, 0), Some(true));
        assert_eq!(decide(C::Greater, absent, 0), Some(false));
        assert_eq!(decide(C::Less, absent, 5), Some(true));
        assert_eq!(decide(C::NotEqual, Known::Exact(7), 7), Some(false));
    }

    #[test]
    fn keys_follow_etcds_conventions() {
        assert_eq!(Keys::from(b"a", b"").unwrap(), Keys::One(b"a".to_vec()));
        let all_from = Keys::from(b"a", b"\0").unwrap().range();
        assert_eq!(all_from.start, b"a".to_vec());
        // "All keys from" stops where Trireme's reserved range begins.
        assert_eq!(all_from.end, Some(reserved::PREFIX.to_vec()));
        let r = Keys::from(b"a", b"c").unwrap().range();
        assert_eq!((r.start, r.end), (b"a".to_vec(), Some(b"c".to_vec())));
        assert!(Keys::from(b"", b"").is_err());
        assert!(Keys::from(&[0xff, 0xff, 1], b"").is_err());
        let one = Keys::from(b"k", b"").unwrap().range();
        assert!(one.contains(b"k") && !one.contains(b"k\0") && !one.contains(b"ka"));
    }

    #[test]
    fn ops_are_counted_through_nested_txns() {
        let put = epb::RequestOp {
            request: Some(epb::request_op::Request::RequestPut(Default::default())),
        };
        let inner = epb::TxnRequest {
            compare: vec![Default::default()],
            success: vec![put.clone(), put.clone()],
            failure: vec![],
        };
        let outer = epb::TxnRequest {
            compare: vec![],
            success: vec![put],
            failure: vec![epb::RequestOp {
                request: Some(epb::request_op::Request::RequestTxn(inner)),
            }],
        };
        assert_eq!(count_ops(&outer), 1 + 1 + 3);
    }
}
