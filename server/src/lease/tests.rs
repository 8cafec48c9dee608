use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::*;

const S: Duration = Duration::from_secs(1);

/// A lease seen for the first time gets its whole TTL from then; it is due
/// exactly when that has passed, not before.
#[test]
fn a_lease_first_seen_gets_its_full_ttl() {
    let t0 = Instant::now();
    let mut d = HashMap::new();
    assert_eq!(decide(&[(1, 2), (2, 5)], &mut d, t0), Vec::<i64>::new());
    assert_eq!(d[&1], t0 + 2 * S);
    assert_eq!(
        decide(
            &[(1, 2), (2, 5)],
            &mut d,
            t0 + 2 * S - Duration::from_millis(1)
        ),
        Vec::<i64>::new()
    );
    assert_eq!(decide(&[(1, 2), (2, 5)], &mut d, t0 + 2 * S), vec![1]);
    assert_eq!(decide(&[(1, 2), (2, 5)], &mut d, t0 + 6 * S), vec![1, 2]);
}

/// A keep-alive (a new deadline) moves the expiry; a lease no longer
/// recorded (revoked or removed) loses its deadline, so one granted again
/// with the same id starts over.
#[test]
fn keep_alive_moves_the_deadline_and_removed_leases_are_forgotten() {
    let t0 = Instant::now();
    let mut d = HashMap::new();
    decide(&[(7, 3)], &mut d, t0);
    d.insert(7, t0 + 2 * S + 3 * S); // kept alive at t0 + 2 s
    assert_eq!(decide(&[(7, 3)], &mut d, t0 + 4 * S), Vec::<i64>::new());
    assert_eq!(decide(&[(7, 3)], &mut d, t0 + 5 * S), vec![7]);
    assert_eq!(decide(&[], &mut d, t0 + 5 * S), Vec::<i64>::new());
    assert!(d.is_empty());
    assert_eq!(decide(&[(7, 3)], &mut d, t0 + 6 * S), Vec::<i64>::new());
    assert_eq!(d[&7], t0 + 9 * S);
}

/// After a leader change the new leader's table is empty: a lease whose
/// old deadline had nearly passed still gets a whole TTL from the moment
/// the new leader first decides.
#[test]
fn a_new_leader_never_expires_a_lease_early() {
    let t0 = Instant::now();
    let mut old_leader = HashMap::new();
    decide(&[(1, 10)], &mut old_leader, t0);
    // The old leader dies at t0 + 9 s; the new one takes over at t0 + 12 s.
    let mut new_leader = HashMap::new();
    let took_over = t0 + 12 * S;
    assert_eq!(
        decide(&[(1, 10)], &mut new_leader, took_over),
        Vec::<i64>::new()
    );
    assert_eq!(
        decide(&[(1, 10)], &mut new_leader, took_over + 9 * S),
        Vec::<i64>::new()
    );
    assert_eq!(
        decide(&[(1, 10)], &mut new_leader, took_over + 10 * S),
        vec![1]
    );
}

/// The table is per term: a term change empties it.
#[test]
fn deadlines_are_kept_per_term() {
    let table = Deadlines::default();
    let now = Instant::now();
    table.with(3, |d| d.insert(1, now));
    assert_eq!(table.len(), 1);
    table.with(3, |d| assert!(d.contains_key(&1)));
    table.with(4, |d| assert!(d.is_empty()));
    table.with(4, |d| d.insert(2, now));
    table.clear();
    assert!(table.is_empty());
}

#[test]
fn remaining_seconds_round_up() {
    let now = Instant::now();
    assert_eq!(remaining_secs(now + Duration::from_millis(1), now), 1);
    assert_eq!(remaining_secs(now + 2 * S, now), 2);
    assert_eq!(remaining_secs(now, now + S), 0);
}

/// The removal write set reads what it deletes at its snapshot and scans
/// the lease's index range; a lease that does not exist has none.
#[test]
fn a_removal_reads_and_deletes_the_lease_and_its_keys() {
    let mvcc = Mvcc::new(std::sync::Arc::new(crate::storage::MemoryEngine::new()));
    mvcc.apply(vec![
        Mvcc::version_op(&keys::record(5), 1, Some(&keys::encode_record(10))),
        Mvcc::version_op(&keys::attached(5, b"a"), 2, Some(&[])),
        Mvcc::version_op(&keys::attached(5, b"b"), 2, Some(&[])),
        Mvcc::version_op(&keys::attached(6, b"c"), 2, Some(&[])),
    ])
    .unwrap();
    assert_eq!(removal(&mvcc, 1, 9, 2).unwrap(), None);
    let ws = removal(&mvcc, 1, 5, 2).unwrap().expect("lease 5 exists");
    assert_eq!(ws.snapshot, Some(2));
    assert_eq!(ws.isolation, Isolation::Serializable);
    let deleted: Vec<_> = ws.mutations.iter().map(|m| m.key().to_vec()).collect();
    assert_eq!(deleted, vec![keys::record(5), b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(ws.reads, deleted);
    assert_eq!(ws.ranges, vec![keys::attached_range(5)]);
    assert_eq!(records(&mvcc, 2).unwrap(), vec![(5, 10)]);
    assert_eq!(attached_keys(&mvcc, 5, 1).unwrap(), Vec::<Key>::new());
}
