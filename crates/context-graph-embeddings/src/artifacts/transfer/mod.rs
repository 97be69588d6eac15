//! One blob from a byte source into `blobs/<etag>`, verified: the request types, adopting a
//! partial download, one stream or parallel ranges, and the atomic persist. Knows nothing of
//! the manifest or of which model a blob belongs to beyond the location it reports. `fleet`
//! decides, for a blob the mirror lacks, whether this node fetches it for the fleet or follows
//! another node's upload. `write_behind` has the disk write a download while it arrives.

pub(crate) mod adapt;
pub(crate) mod blob;
pub(crate) mod fleet;
pub(crate) mod partial;
pub(crate) mod persist;
pub(crate) mod ranged;
pub(crate) mod request;
pub(crate) mod serial;
pub(crate) mod write_behind;
