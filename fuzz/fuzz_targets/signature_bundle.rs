//! Fuzz target: `context_graph_embeddings::fuzzing::SignatureChecker` (OpenSSF model signature
//! bundles under a trusted key and a trusted certificate root; see its documentation for what
//! it checks beyond "no panic"). The trust material and the valid bundles are the OMS test
//! vectors of the crate's fixtures, built into the binary.
#![no_main]

use std::sync::OnceLock;

use context_graph_embeddings::fuzzing::SignatureChecker;

macro_rules! vectors {
    ($path:literal) => {
        include_bytes!(concat!(
            "../../crates/context-graph-embeddings/tests/fixtures/oms-vectors/",
            $path
        ))
    };
}

fn checker() -> &'static SignatureChecker {
    static CHECKER: OnceLock<SignatureChecker> = OnceLock::new();
    CHECKER.get_or_init(|| {
        let seeds: [&[u8]; 6] = [
            vectors!("v1.0.0-certificate/model.sig"),
            vectors!("v1.0.1-certificate/model.sig"),
            vectors!("v1.1.0-certificate/model.sig"),
            vectors!("v1.0.0-elliptic-key/model.sig"),
            vectors!("v1.0.1-elliptic-key/model.sig"),
            vectors!("v1.1.0-elliptic-key/model.sig"),
        ];
        SignatureChecker::new(
            vectors!("keys/signing-key-pub.pem"),
            vectors!("keys/ca-cert.pem"),
            "CN=intermediate-ca",
            &seeds,
        )
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checker().check(data);
});
