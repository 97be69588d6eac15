//! Deciding what to do: the local state of one model and the one readiness rule, the
//! readiness report and verification, one model's steps (reuse, resolve, lock, fetch, place),
//! the file set of a model at a commit, the signature check under a model's policy, a batch of models (classify, verify, resolve, budget,
//! fan out), verified bundles (export and import for sites without network), and
//! models pushed to OCI registries (ModelPack artifacts, cache images, the OCI mirror's writes).

pub(crate) mod batch;
pub(crate) mod bundle;
pub(crate) mod context;
pub(crate) mod local;
pub(crate) mod maintain;
pub(crate) mod one;
pub(crate) mod plan;
pub(crate) mod publish;
pub(crate) mod readiness;
pub(crate) mod set;
pub(crate) mod signed;
