//! The chaos tier's check that a minority refuses fast: once a partition
//! leaves some nodes without a quorum, each of them must report NON_PRIMARY
//! and refuse a write with UNAVAILABLE (not hang until the client's deadline)
//! within a bound.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use trireme_client::Error;

use crate::netns::NetCluster;

/// How long after a cut the minority must refuse: the server's bound is
/// about `election_timeout_max_ms` plus one ping (about 1.2 s by default), or
/// plus `down_after_ms` when a follower hears a leader it cannot reach; the
/// rest is margin for a loaded machine under chaos traffic.
pub const REFUSE_WITHIN: Duration = Duration::from_secs(8);

/// The nodes of `ids` on the minority side of a clean cut by `links` (a
/// node counts the nodes it has no blocked link with, itself included; at
/// most half of all is a minority). Meaningful for cuts into two sides, not
/// for one-way cuts or rings.
pub fn minority_of(ids: &[u64], links: &[(u64, u64)]) -> Vec<u64> {
    let blocked = |a: u64, b: u64| links.contains(&(a, b)) || links.contains(&(b, a));
    ids.iter()
        .copied()
        .filter(|a| {
            let reach = ids.iter().filter(|b| *b == a || !blocked(*a, **b)).count();
            reach * 2 <= ids.len()
        })
        .collect()
}

/// Waits until every node of `minority` reports NON_PRIMARY and answers a
/// write with UNAVAILABLE (through a client of that node only, whose deadline
/// is 2 s, so a hang shows as DEADLINE_EXCEEDED), at most [`REFUSE_WITHIN`]
/// after `cut`. Returns how long after the cut each node refused.
pub async fn minority_refuses(
    cluster: &NetCluster,
    minority: &[u64],
    cut: Instant,
) -> Result<Vec<(u64, Duration)>> {
    let mut refused = Vec::new();
    for id in minority {
        loop {
            let state = cluster.status(*id).await.map(|s| s.state);
            if state.as_deref().ok() == Some("NON_PRIMARY") {
                let client = cluster.client_only(*id)?;
                match client.put("nemesis/minority-probe", "refused").await {
                    Err(Error::Unavailable(_)) => {
                        refused.push((*id, cut.elapsed()));
                        break;
                    }
                    // Still ending a write it had accepted: try again.
                    Ok(_) | Err(Error::Indeterminate(_)) => {}
                    Err(e) => bail!("n{id} is NON_PRIMARY but answered a write with {e:?}"),
                }
            }
            if cut.elapsed() > REFUSE_WITHIN {
                bail!(
                    "n{id} (minority {minority:?}) did not refuse within {REFUSE_WITHIN:?} of the cut: state {state:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(a: &[u64], b: &[u64]) -> Vec<(u64, u64)> {
        a.iter()
            .flat_map(|x| b.iter().flat_map(move |y| [(*x, *y), (*y, *x)]))
            .collect()
    }

    #[test]
    fn the_minority_side_of_a_cut() {
        assert_eq!(minority_of(&[1, 2, 3], &cut(&[2], &[1, 3])), vec![2]);
        assert_eq!(
            minority_of(&[1, 2, 3, 4, 5], &cut(&[1, 4], &[2, 3, 5])),
            vec![1, 4]
        );
        assert!(minority_of(&[1, 2, 3], &[]).is_empty());
    }
}
