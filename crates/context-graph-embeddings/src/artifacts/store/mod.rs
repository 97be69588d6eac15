//! Everything that knows a file name in the Hugging Face cache: the layout (paths, partial and
//! sidecar names, defined once), snapshot links and refs, verification stamps, blob locks, `huggingface_hub`'s
//! shared blob store (read and swept by its rules, never published into), the size budget and eviction, what clearing a model removes, and what the cache says a commit holds (`huggingface_hub`'s tree listing, the snapshot folder). Also where copies of a file may be elsewhere on the machine (`adopt.rs`). Uses only the leaf modules, so
//! a change of on-disk naming touches this folder and nothing else.

pub(crate) mod adopt;
pub(crate) mod budget;
pub(crate) mod clear;
pub(crate) mod fs;
pub(crate) mod layout;
pub(crate) mod listing;
pub(crate) mod lock;
pub(crate) mod shared;
pub(crate) mod stamp;
