//! Named crash points for fault injection (the `failpoints` feature).
//!
//! `crash_point!("name")` aborts the process at that point when the failpoint
//! is set to `return` (for example `FAILPOINTS=crash-after-certify=return`, or
//! `1*return` for once, `5%return` for sometimes). Without the feature the
//! macro compiles to nothing. The points:
//!
//! - `crash-after-log-fsync`: the log is durable, no append acknowledged yet.
//! - `crash-mid-certify`: some write sets of a run certified, nothing written.
//! - `crash-after-certify`: every verdict decided, nothing written.
//! - `crash-after-apply`: versions written, no client answered.
//! - `crash-mid-snapshot-install`: a received snapshot partly written to the
//!   staging store, not yet switched to (the old state must survive).

/// Aborts the process here when the named failpoint is set to `return`.
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| {
            eprintln!(concat!(
                "trireme: crash point ",
                $name,
                " reached: aborting"
            ));
            std::process::abort()
        })
    };
}
