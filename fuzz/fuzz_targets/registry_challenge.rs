//! Fuzz target: `context_graph_embeddings::fuzzing::registry_challenge` (see its documentation for what it
//! checks beyond "no panic").
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    context_graph_embeddings::fuzzing::registry_challenge(data);
});
