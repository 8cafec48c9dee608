//! Bad input gets a clear INVALID_ARGUMENT naming the limit, nothing is
//! applied, and the node stays healthy with an unchanged checksum.

use std::time::Duration;

use anyhow::{ensure, Result};
use trireme_client::proto::{self, CommitRequest, Mutation};
use trireme_client::{Client, Error};
use trireme_tests::inproc::InProcCluster;

fn mutation(key: &[u8], value: Vec<u8>) -> Mutation {
    Mutation {
        key: key.to_vec(),
        value,
        delete: false,
        lease: 0,
    }
}

fn expect_invalid(result: trireme_client::Result<u64>, needle: &str) -> Result<()> {
    match result {
        Err(Error::InvalidInput(msg)) => {
            ensure!(
                msg.contains(needle),
                "error {msg:?} should mention {needle:?}"
            );
            Ok(())
        }
        other => anyhow::bail!("expected INVALID_ARGUMENT mentioning {needle:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_requests_are_rejected_and_change_nothing() -> Result<()> {
    let cluster = InProcCluster::start(1, |_| {}).await?;
    cluster.wait_leader(Duration::from_secs(10)).await?;
    let client: Client = cluster.client(1)?;
    client.put("existing", "value").await?;
    let before = client.checksum().await?;

    expect_invalid(client.put("", "v").await, "empty key")?;
    expect_invalid(client.put(vec![b'k'; 4097], "v").await, "max_key_bytes")?;
    expect_invalid(
        client.put("k", vec![0u8; (1 << 20) + 1]).await,
        "max_value_bytes",
    )?;
    expect_invalid(client.delete("", None).await, "empty key")?;

    let too_many = CommitRequest {
        mutations: (0..1001)
            .map(|i| mutation(format!("k{i}").as_bytes(), b"v".to_vec()))
            .collect(),
        ..Default::default()
    };
    expect_invalid(client.commit(too_many).await, "max_ops")?;

    let too_big = CommitRequest {
        mutations: (0..17)
            .map(|i| mutation(format!("big{i}").as_bytes(), vec![7u8; 1 << 20]))
            .collect(),
        ..Default::default()
    };
    expect_invalid(client.commit(too_big).await, "max_write_set_bytes")?;

    expect_invalid(
        client.commit(CommitRequest::default()).await,
        "no mutations",
    )?;

    let duplicate = CommitRequest {
        mutations: vec![mutation(b"d", b"1".to_vec()), mutation(b"d", b"2".to_vec())],
        ..Default::default()
    };
    expect_invalid(client.commit(duplicate).await, "twice")?;

    let empty_compare = CommitRequest {
        mutations: vec![mutation(b"c", b"1".to_vec())],
        compares: vec![proto::Compare {
            key: b"c".to_vec(),
            target: None,
        }],
        ..Default::default()
    };
    expect_invalid(client.commit(empty_compare).await, "compare needs")?;

    // One over-limit mutation among good ones: nothing of the write set applies.
    let partial = CommitRequest {
        mutations: vec![
            mutation(b"good", b"1".to_vec()),
            mutation(&[b'x'; 5000], b"2".to_vec()),
        ],
        ..Default::default()
    };
    expect_invalid(client.commit(partial).await, "max_key_bytes")?;

    // Keys beginning with 0xFF 0xFF are Trireme's own (leases, users).
    expect_invalid(client.put(vec![0xff, 0xff, b'x'], "v").await, "reserved")?;
    expect_invalid(client.delete(vec![0xff, 0xff], None).await, "reserved")?;
    match client.get(vec![0xff, 0xff, b'x'], Default::default()).await {
        Err(Error::InvalidInput(msg)) if msg.contains("reserved") => {}
        other => anyhow::bail!("a reserved key read: expected INVALID_ARGUMENT, got {other:?}"),
    }

    // get_many: the key count, an empty key, a reserved key among good ones.
    let many: Vec<String> = (0..10_001).map(|i| format!("k{i}")).collect();
    expect_invalid(
        client
            .get_many(&many, Default::default())
            .await
            .map(|(_, s)| s),
        "over the limit of 10000 (max_scan_limit)",
    )?;
    expect_invalid(
        client
            .get_many(&["existing", ""], Default::default())
            .await
            .map(|(_, s)| s),
        "key is empty",
    )?;
    expect_invalid(
        client
            .get_many(
                &[b"existing".to_vec(), vec![0xff, 0xff, b'x']],
                Default::default(),
            )
            .await
            .map(|(_, s)| s),
        "reserved",
    )?;

    let after = client.checksum().await?;
    ensure!(
        after.checksum == before.checksum,
        "bad input changed the data"
    );
    ensure!(
        client.get("good", Default::default()).await?.is_none(),
        "half a write set applied"
    );
    // Still healthy: it takes a write.
    client.put("after", "ok").await?;
    // A get_many whose answer would pass 64 MiB is refused, naming the limit;
    // 63 of the same values are answered.
    let big: Vec<String> = (0..65).map(|i| format!("big/{i}")).collect();
    for key in &big {
        client.put(key.clone(), vec![b'v'; 1 << 20]).await?;
    }
    expect_invalid(
        client
            .get_many(&big, Default::default())
            .await
            .map(|(_, s)| s),
        "over 64 MiB",
    )?;
    let (found, _) = client.get_many(&big[..63], Default::default()).await?;
    ensure!(
        found
            .iter()
            .all(|v| v.as_ref().is_some_and(|v| v.value.len() == 1 << 20)),
        "63 values of 1 MiB"
    );
    cluster.shutdown().await?;
    Ok(())
}
