//! Talking to servers, knowing nothing of the cache: the Hub protocol's pure parsing, the Hub
//! client, byte sources (the Hub, the S3 mirror) behind one `ByteSource` seam, and the retry
//! policy with the one retry state every retry loop uses, and a model's file set read from
//! the Hub's tree at a commit.

pub(crate) mod client;
pub(crate) mod mirror;
pub(crate) mod protocol;
pub(crate) mod retry;
pub(crate) mod source;
pub(crate) mod tls;
pub(crate) mod tree;
