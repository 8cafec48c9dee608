//! Structural validity of a write set: what must hold whatever the node's
//! configured limits, so that certification can check it identically on
//! every node (see `certify`, which aborts a write set that fails it).

use super::WriteSet;

impl WriteSet {
    /// The first structural problem of this write set, if any: an empty key
    /// (written, compared or read) or a scanned range that ends before it
    /// starts. Depends on nothing but the write set, so every node finds the
    /// same problem.
    pub fn structural_problem(&self) -> Option<String> {
        if let Some(i) = self.mutations.iter().position(|m| m.key().is_empty()) {
            return Some(format!("mutation {i} has an empty key"));
        }
        if let Some(i) = self.compares.iter().position(|c| c.key.is_empty()) {
            return Some(format!("compare {i} has an empty key"));
        }
        if let Some(i) = self.reads.iter().position(Vec::is_empty) {
            return Some(format!("read {i} has an empty key"));
        }
        for (i, r) in self.ranges.iter().enumerate() {
            if let Some(end) = r.end.as_deref().filter(|end| *end < r.start.as_slice()) {
                return Some(format!(
                    "read range {i} ends ({:?}) before it starts ({:?})",
                    String::from_utf8_lossy(end),
                    String::from_utf8_lossy(&r.start)
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::txn::{Compare, Condition, KeyRange, Mutation, WriteSet};

    fn put(key: &[u8]) -> Mutation {
        Mutation::Put {
            key: key.to_vec(),
            value: b"v".to_vec(),
            lease: 0,
        }
    }

    #[test]
    fn names_each_structural_problem() {
        assert_eq!(
            WriteSet::blind(1, vec![put(b"k")]).structural_problem(),
            None
        );
        let ws = WriteSet::blind(1, vec![put(b"k"), put(b"")]);
        assert_eq!(
            ws.structural_problem().as_deref(),
            Some("mutation 1 has an empty key")
        );
        let mut ws = WriteSet::blind(1, vec![put(b"k")]);
        ws.compares.push(Compare {
            key: Vec::new(),
            condition: Condition::Exists(true),
        });
        assert_eq!(
            ws.structural_problem().as_deref(),
            Some("compare 0 has an empty key")
        );
        let mut ws = WriteSet::blind(1, vec![put(b"k")]);
        ws.reads = vec![b"a".to_vec(), Vec::new()];
        assert_eq!(
            ws.structural_problem().as_deref(),
            Some("read 1 has an empty key")
        );
        let mut ws = WriteSet::blind(1, vec![put(b"k")]);
        ws.ranges = vec![
            KeyRange::prefix(b"a"),
            KeyRange {
                start: b"b".to_vec(),
                end: Some(b"b".to_vec()),
            },
            KeyRange {
                start: b"z".to_vec(),
                end: Some(b"a".to_vec()),
            },
        ];
        assert_eq!(
            ws.structural_problem().as_deref(),
            Some("read range 2 ends (\"a\") before it starts (\"z\")")
        );
    }
}
