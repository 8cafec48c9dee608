//! The cluster parameters that decide verdicts, kept in the replicated state.
//!
//! A verdict must be a function of the log alone, so whatever certification
//! depends on cannot be a per-node flag. Today that is the certification
//! window (which also sets the deduplication horizon and the horizon below
//! which garbage collection may remove versions). It lives in the state
//! machine, is written into every snapshot, and changes only through a log
//! entry ([`ParamsChange`]), which every node applies at the same seqno.
//!
//! Bootstrap: the first leader of a new cluster proposes its own configured
//! values (`bootstrap: true`); the first such entry applied wins and later
//! ones are ignored, so a cluster's parameters are the ones its first leader
//! was started with. Until that entry applies, certification uses
//! [`MIN_CERT_WINDOW`], the same on every node whatever their flags. A node
//! whose own flag differs from the cluster's logs a warning naming both values
//! and follows the cluster.
//!
//! Growing the window never lets certification look below a horizon already
//! in force: garbage collection may have removed what lies there, on some
//! nodes and not others. The horizon in force when the window changes is kept
//! as a floor ([`ClusterParams::horizon_floor`]), so horizons never go back.

use serde::{Deserialize, Serialize};

use crate::certify::Certifier;
use crate::txn::Seqno;

/// The smallest certification window a cluster accepts; also the window in
/// force before a new cluster's parameters are applied.
pub const MIN_CERT_WINDOW: u64 = 16;

/// The replicated parameters, as of the applied seqno.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterParams {
    /// How many seqnos a snapshot may lag its write set's seqno (Galera's `cert.max_length`).
    pub cert_window: u64,
    /// The certification horizon never goes below this seqno.
    pub horizon_floor: Seqno,
    /// The seqno of the entry that set these values.
    pub since: Seqno,
}

/// A log entry's request to change the parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamsChange {
    /// The new certification window.
    pub cert_window: u64,
    /// A new cluster's first leader proposing its configuration: ignored once
    /// the cluster has parameters.
    pub bootstrap: bool,
}

impl ParamsChange {
    /// Checks the values before they are proposed; the error names the limit.
    pub fn validate(&self) -> Result<(), String> {
        if self.cert_window < MIN_CERT_WINDOW {
            return Err(format!(
                "cert_window ({}) must be at least {MIN_CERT_WINDOW}",
                self.cert_window
            ));
        }
        Ok(())
    }
}

impl ClusterParams {
    /// The certifier these parameters define.
    pub fn certifier(&self) -> Certifier {
        Certifier::with_floor(self.cert_window, self.horizon_floor)
    }

    /// The parameters after `change` applied at `seqno` over `current`
    /// (`None`: not bootstrapped yet), or `None` when the change is ignored.
    /// Deterministic: every node computes the same result from the log.
    pub fn after(
        current: Option<&ClusterParams>,
        change: &ParamsChange,
        seqno: Seqno,
    ) -> Option<ClusterParams> {
        if change.bootstrap && current.is_some() {
            return None;
        }
        // A change the leader's validation missed (a crafted entry) is ignored
        // the same way on every node, never half-applied.
        change.validate().ok()?;
        let before = current.map_or_else(|| Certifier::new(MIN_CERT_WINDOW), |p| p.certifier());
        Some(ClusterParams {
            cert_window: change.cert_window,
            horizon_floor: before.horizon(seqno),
            since: seqno,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_applies_once_and_changes_always() {
        let boot = ParamsChange {
            cert_window: 1000,
            bootstrap: true,
        };
        let p = ClusterParams::after(None, &boot, 3).expect("first bootstrap applies");
        assert_eq!(p.cert_window, 1000);
        assert_eq!(p.since, 3);
        assert_eq!(ClusterParams::after(Some(&p), &boot, 4), None);
        let set = ParamsChange {
            cert_window: 20,
            bootstrap: false,
        };
        let q = ClusterParams::after(Some(&p), &set, 5000).expect("a change applies");
        assert_eq!((q.cert_window, q.since), (20, 5000));
        assert_eq!(q.certifier().horizon(6000), 5980);
        let too_small = ParamsChange {
            cert_window: 3,
            bootstrap: false,
        };
        assert_eq!(ClusterParams::after(Some(&q), &too_small, 5001), None);
    }

    /// Growing the window keeps the horizon that was in force: versions below
    /// it may already be garbage-collected on some nodes.
    #[test]
    fn growing_the_window_never_lowers_the_horizon() {
        let p = ClusterParams::after(
            None,
            &ParamsChange {
                cert_window: 20,
                bootstrap: true,
            },
            1,
        )
        .expect("bootstrap");
        let grown = ClusterParams::after(
            Some(&p),
            &ParamsChange {
                cert_window: 1000,
                bootstrap: false,
            },
            500,
        )
        .expect("grow");
        assert_eq!(grown.certifier().horizon(500), 480);
        assert_eq!(grown.certifier().horizon(900), 480);
        assert_eq!(grown.certifier().horizon(2000), 1000);
    }
}
