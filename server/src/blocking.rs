//! Where blocking work (storage calls, certification, snapshot encoding) runs.
//!
//! Normally on tokio's blocking thread pool, off the async workers. A
//! deterministic simulation (turmoil) cannot allow real threads, whose timing
//! the simulation does not control: there it runs inline on the calling task.
//! The mode is chosen per node, by [`crate::node::Backend::blocking`].

use crate::error::{Error, Result};

/// How blocking work runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Blocking {
    /// On tokio's blocking pool (`spawn_blocking`): the production mode.
    #[default]
    Pool,
    /// Inline on the calling task: deterministic, for simulation.
    Inline,
}

impl Blocking {
    /// Runs `f` in this mode; a panic on the pool becomes [`Error::Internal`]
    /// (inline, it unwinds through the caller).
    pub async fn run<T, F>(self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self {
            Blocking::Pool => tokio::task::spawn_blocking(f)
                .await
                .map_err(|e| Error::Internal(e.to_string())),
            Blocking::Inline => Ok(f()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_modes_return_the_value() {
        assert_eq!(Blocking::Pool.run(|| 7).await.expect("pool"), 7);
        assert_eq!(Blocking::Inline.run(|| 8).await.expect("inline"), 8);
        let err = Blocking::Pool
            .run(|| -> u32 { panic!("boom") })
            .await
            .expect_err("a panic on the pool is an error");
        assert!(matches!(err, Error::Internal(_)), "{err:?}");
    }
}
