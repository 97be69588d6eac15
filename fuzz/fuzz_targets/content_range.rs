//! Fuzz target: `context_graph_embeddings::fuzzing::content_range` (see its documentation for what it
//! checks beyond "no panic").
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    context_graph_embeddings::fuzzing::content_range(data);
});
