//! A Hugging Face Hub on loopback, for tests, benchmarks and offline demos.
//!
//! [`HubBuilder`] starts a real HTTP/1.1 server on `127.0.0.1` speaking the Hub's download
//! protocol (resolve URLs, the JSON API, an LFS "CDN" on a second host name), with a
//! [request log](HubEmulator::requests) and [fault injection](fault). The official Python
//! client accepts it through `HF_ENDPOINT`.
//!
//! ```no_run
//! use hub_emulator::{Fault, FaultRule, FaultTarget, HubBuilder, RepoSpec};
//!
//! let hub = HubBuilder::new()
//!     .repo(
//!         RepoSpec::new("org/model")
//!             .file("config.json", r#"{"hidden_size": 8}"#)
//!             .file("model.safetensors", hub_emulator::synth::safetensors(4096, 1)),
//!     )
//!     .start()?;
//! hub.add_fault(FaultRule::new(FaultTarget::get("model.safetensors"), Fault::CutAfter { bytes: 100 }).times(1));
//! // point the client under test at hub.endpoint() ...
//! assert!(hub.requests().iter().all(|r| r.status < 500));
//! # Ok::<(), std::io::Error>(())
//! ```

mod api;
pub mod chaos;
pub mod fault;
mod http;
mod http2;
mod log;
pub mod manifest;
pub mod pacing;
mod quirks;
mod repo;
mod routes;
mod server;
mod signing;
pub mod synth;
mod tls;

pub use chaos::{ChaosConfig, ChaosFault, ChaosProxy, ChaosStats};
pub use fault::{Fault, FaultRule, FaultTarget};
pub use http::{encode_component, parse_range, RangeRequest};
pub use log::{Host, HttpVersion, RequestRecord};
pub use pacing::EdgeMix;
pub use quirks::MirrorQuirks;
pub use repo::{is_commit_sha, is_lfs_path, RepoSpec, LFS_EXTENSIONS};
pub use server::{FileInfo, HubBuilder, HubEmulator};
pub use tls::{Alpn, CdnTls};
