//! Fuzz target: `context_graph_embeddings::fuzzing::range_round_trip` against the Hub
//! emulator's own `Range` parser (see its documentation for what it checks).
#![no_main]

use context_graph_embeddings::fuzzing::{range_round_trip, ServerRange};
use hub_emulator::{parse_range, RangeRequest};

fn emulator(header: &str, total: u64) -> ServerRange {
    match parse_range(header, total) {
        RangeRequest::Full => ServerRange::Full,
        RangeRequest::Span(start, end) => ServerRange::Span(start, end),
        RangeRequest::Unsatisfiable => ServerRange::Unsatisfiable,
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    range_round_trip(data, emulator);
});
