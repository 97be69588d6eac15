//! One blob from a byte source into `blobs/<etag>`, verified: the request types, adopting a
//! partial download, one stream or parallel ranges, and the atomic persist. Knows nothing of
//! the manifest or of which model a blob belongs to beyond the location it reports.

pub(crate) mod adapt;
pub(crate) mod blob;
pub(crate) mod partial;
pub(crate) mod persist;
pub(crate) mod ranged;
pub(crate) mod request;
pub(crate) mod serial;
