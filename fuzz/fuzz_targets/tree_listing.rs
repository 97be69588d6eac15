//! Fuzz target: `context_graph_embeddings::fuzzing::tree_listing` (huggingface_hub's
//! `trees/<commit>.json`; see its documentation for what it checks beyond "no panic").
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = context_graph_embeddings::fuzzing::tree_listing(data);
});
