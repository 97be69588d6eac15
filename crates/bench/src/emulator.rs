//! The Hub the contenders download from: `hub_emulator` started in this process from the
//! manifest compiled into it (so the harness reads its request log), plus the synthetic
//! manifest `cg-models` needs to accept the synthetic files.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use hub_emulator::manifest::{self, ManifestOptions};
use hub_emulator::{Fault, FaultRule, FaultTarget, HubBuilder, HubEmulator, RepoSpec};

/// One weight file the emulator serves.
#[derive(Debug, Clone)]
pub(crate) struct FileSpec {
    /// The manifest's `model_id` (what `cg-models ensure` takes).
    pub model_id: String,
    /// Hub repo.
    pub repo_id: String,
    /// Revision the manifest asks for (a commit for every entry of the built-in manifest).
    pub revision: String,
    /// Commit the revision resolves to.
    pub commit: String,
    /// Path of the file in the repo.
    pub filename: String,
    /// Size of the synthetic file in bytes.
    pub size: u64,
    /// SHA-256 of its content (hex).
    pub sha256: String,
    /// Resolve URL (redirects to the emulator's CDN host).
    pub url: String,
}

impl FileSpec {
    /// `repo_id` with `/` replaced, for output file names.
    pub(crate) fn flat_name(&self) -> String {
        format!(
            "{}--{}",
            self.repo_id.replace('/', "--"),
            self.filename.replace('/', "--")
        )
    }
}

/// A running emulator serving the manifest's downloadable models at one scale.
pub(crate) struct Served {
    /// The emulator (request log, faults).
    pub hub: HubEmulator,
    /// The files, in manifest order.
    pub files: Vec<FileSpec>,
    /// The synthetic manifest for `cg-models --manifest`.
    pub manifest_path: PathBuf,
}

impl Served {
    /// Generates the synthetic files (real sizes × `scale`; sizes of unpinned entries are the
    /// emulator's approximations) and starts serving them; writes the synthetic manifest
    /// into `dir`.
    pub(crate) fn start(scale: f64, dir: &Path) -> Result<Self> {
        Self::start_with(scale, dir, |builder| builder)
    }

    /// [`start`](Self::start) with a hook on the emulator's builder (TLS, pacing).
    pub(crate) fn start_with(
        scale: f64,
        dir: &Path,
        hook: impl FnOnce(HubBuilder) -> HubBuilder,
    ) -> Result<Self> {
        if !manifest::DEFAULT_MANIFEST_FOUND {
            bail!("hub-emulator was built without the library's manifest (manifests.json missing at build time)");
        }
        let manifest: serde_json::Value = serde_json::from_str(manifest::DEFAULT_MANIFEST)
            .context("parsing the embedded manifest")?;
        let options = ManifestOptions {
            scale,
            gate_token: None,
        };
        let served = manifest::hub_from_manifest(&manifest, &options).map_err(|e| anyhow!(e))?;
        let hub = hook(served.builder)
            .start()
            .context("starting the hub emulator")?;
        let mut synthetic = manifest::synthetic_manifest(&manifest, &hub);
        // The weight file of each model only, like the other contenders fetch: the shipped
        // entries name presets (whole sets with config and tokenizer files), which would have
        // ours fetch and verify several dozen files more than the others.
        if let Some(entries) = synthetic.as_array_mut() {
            for entry in entries.iter_mut().filter_map(|e| e.as_object_mut()) {
                for key in ["preset", "files", "include", "exclude"] {
                    entry.remove(key);
                }
            }
        }
        let manifest_path = dir.join(format!("manifest-scale-{scale}.json"));
        std::fs::write(
            &manifest_path,
            serde_json::to_string_pretty(&synthetic)? + "\n",
        )
        .with_context(|| format!("writing {}", manifest_path.display()))?;
        let mut files = Vec::new();
        for model in served.models {
            let commit = hub
                .commit_of(&model.repo_id, &model.revision)
                .ok_or_else(|| anyhow!("{}: revision does not resolve", model.model_id))?;
            let sha256 = hub
                .file_info(&model.repo_id, &model.revision, &model.filename)
                .ok_or_else(|| anyhow!("{}: file not served", model.model_id))?
                .sha256;
            files.push(FileSpec {
                sha256,
                url: hub.resolve_url(&model.repo_id, &model.revision, &model.filename),
                model_id: model.model_id,
                repo_id: model.repo_id,
                revision: model.revision,
                commit,
                filename: model.filename,
                size: model.size,
            });
        }
        Ok(Self {
            hub,
            files,
            manifest_path,
        })
    }

    /// The real E11 Entity files (`scripts/fetch-real-model`'s folder) served as
    /// `sentence-transformers/all-MiniLM-L6-v2` at the commit the built-in manifest pins, and a
    /// manifest holding the built-in Entity entry verbatim (its real SHA-256 and size), every
    /// other model built in. Real bytes have real entropy; synthetic ones may not behave like
    /// them on compression-aware paths.
    pub(crate) fn real(real_dir: &Path, dir: &Path) -> Result<Self> {
        let manifest: serde_json::Value = serde_json::from_str(manifest::DEFAULT_MANIFEST)
            .context("parsing the embedded manifest")?;
        let entries = manifest
            .as_array()
            .ok_or_else(|| anyhow!("the embedded manifest is not a list"))?;
        let entity = entries
            .iter()
            .find(|e| e["model_id"] == "Entity")
            .ok_or_else(|| anyhow!("the embedded manifest has no Entity entry"))?
            .clone();
        let field = |name: &str| -> Result<String> {
            entity[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("the built-in Entity entry has no {name}"))
        };
        let (repo_id, revision, filename) =
            (field("repo_id")?, field("revision")?, field("filename")?);
        let spec = RepoSpec::from_dir(&repo_id, real_dir)
            .with_context(|| format!("reading {}", real_dir.display()))?
            .commit_sha(&revision);
        let hub = HubBuilder::new()
            .repo(spec)
            .start()
            .context("starting the hub emulator")?;
        let only_entity: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                if e["model_id"] == "Entity" {
                    e.clone()
                } else {
                    serde_json::json!({ "model_id": e["model_id"], "builtin": true })
                }
            })
            .collect();
        let manifest_path = dir.join("manifest-real-entity.json");
        std::fs::write(
            &manifest_path,
            serde_json::to_string_pretty(&only_entity)? + "\n",
        )
        .with_context(|| format!("writing {}", manifest_path.display()))?;
        let info = hub
            .file_info(&repo_id, &revision, &filename)
            .ok_or_else(|| anyhow!("{filename} is not in {}", real_dir.display()))?;
        let size = std::fs::metadata(real_dir.join(&filename))?.len();
        let file = FileSpec {
            model_id: "Entity".to_owned(),
            url: hub.resolve_url(&repo_id, &revision, &filename),
            commit: revision.clone(),
            sha256: info.sha256,
            repo_id,
            revision,
            filename,
            size,
        };
        Ok(Self {
            hub,
            files: vec![file],
            manifest_path,
        })
    }

    /// Sum of the file sizes.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The largest file.
    pub(crate) fn largest(&self) -> &FileSpec {
        self.files
            .iter()
            .max_by_key(|f| f.size)
            .expect("the manifest has downloadable models")
    }

    /// Caps every response body at `bytes_per_sec`, per connection.
    pub(crate) fn cap_bandwidth(&self, bytes_per_sec: u64) {
        self.hub.add_fault(FaultRule::new(
            FaultTarget::any(),
            Fault::BandwidthCap { bytes_per_sec },
        ));
    }

    /// Removes the bandwidth cap (every fault rule).
    pub(crate) fn uncap(&self) {
        self.hub.clear_faults();
    }

    /// Body bytes the emulator sent in `GET` responses answered `200` or `206` since the
    /// last [`HubEmulator::clear_requests`], and how many such responses there were.
    pub(crate) fn body_bytes_sent(&self) -> (u64, usize) {
        let records = self.hub.requests();
        // File bodies only: the API's answers (revision info, tree listings) are GETs too.
        let bodies = records.iter().filter(|r| {
            r.method.eq_ignore_ascii_case("GET")
                && matches!(r.status, 200 | 206)
                && !r.path.starts_with("/api/")
        });
        bodies.fold((0, 0), |(bytes, count), r| {
            (bytes + r.body_bytes_sent, count + 1)
        })
    }
}

/// The Hugging Face cache folder of a model repo.
pub(crate) fn repo_dir(cache: &Path, repo_id: &str) -> PathBuf {
    cache.join(format!("models--{}", repo_id.replace('/', "--")))
}

/// Where a Hugging Face cache holds a file: `snapshots/<commit>/<filename>`.
pub(crate) fn snapshot_path(cache: &Path, file: &FileSpec) -> PathBuf {
    repo_dir(cache, &file.repo_id)
        .join("snapshots")
        .join(&file.commit)
        .join(&file.filename)
}
