//! Talking to servers, knowing nothing of the cache: the Hub protocol's pure parsing, the Hub
//! client, byte sources (the Hub, the S3 mirror, an OCI registry) behind one `ByteSource` seam, OCI
//! registries (push, pull, the ModelPack layout, cache images), the fleet
//! protocol over the mirror (one Hub fetch per blob for nodes starting together), the retry
//! policy with the one retry state every retry loop uses, and a model's file set read from
//! the Hub's tree at a commit.

pub(crate) mod client;
pub(crate) mod fleet;
pub(crate) mod mirror;
pub(crate) mod oci;
pub(crate) mod protocol;
pub(crate) mod retry;
pub(crate) mod source;
pub(crate) mod tls;
pub(crate) mod tree;
