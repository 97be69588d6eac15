//! OCI registries: references and the mirror's tag rule (`reference.rs`), credentials and
//! challenges (`auth.rs`), the distribution protocol (`client.rs`), a model as a ModelPack
//! artifact (`modelpack.rs`), a cache as an image (`image.rs`) and the registry as a
//! pull-through mirror (`mirror.rs`). It knows nothing of the cache: `ensure/publish.rs`
//! decides what to push, and the downloader verifies every byte pulled.

pub(crate) mod auth;
pub(crate) mod client;
pub(crate) mod image;
pub(crate) mod mirror;
pub(crate) mod modelpack;
pub(crate) mod reference;
