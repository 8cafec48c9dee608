//! Arbitrary bytes through decode -> certify -> apply on the in-memory engine
//! (`trireme_server::group::replay`): anything that decodes as log payloads
//! must apply without a panic or an error, identically on two replicas that
//! group the entries differently.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = trireme_server::group::replay::replay_bytes(data) {
        panic!("{broken}");
    }
});
