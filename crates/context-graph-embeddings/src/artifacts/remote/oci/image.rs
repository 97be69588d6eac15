//! A regular OCI image whose file system is a Hugging Face cache (`models--…/blobs`,
//! `snapshots`, `refs` and our set records), so that a Kubernetes ImageVolume or a KServe
//! modelcar mounted at `HF_HUB_CACHE` is a ready, read-only cache.
//!
//! Each blob is a layer of its own: a tar of that one file with fixed metadata (owner 0,
//! mode 0444, time 0), so the same blob gives the same layer in every image and a registry
//! stores it once. One last small layer holds the folders, the snapshot links, the refs and
//! the records. Only the tar framing is made here (pure); the publisher streams the file
//! between a layer's head and tail and hashes the whole.

use std::collections::BTreeMap;

use serde::Serialize;

use super::modelpack::{digest_of, Descriptor, ImageManifest, MANIFEST_MEDIA_TYPE};

/// An uncompressed tar layer.
pub(crate) const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// An image config.
pub(crate) const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

const BLOCK: u64 = 512;

/// A folder, link or small file of the metadata layer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ImageEntry {
    /// A folder.
    Dir(String),
    /// A symbolic link and its (relative) target.
    Link(String, String),
    /// A small file and its bytes.
    File(String, Vec<u8>),
}

impl ImageEntry {
    fn path(&self) -> &str {
        match self {
            ImageEntry::Dir(p) | ImageEntry::Link(p, _) | ImageEntry::File(p, _) => p,
        }
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    header
}

/// The bytes before a blob's content in its layer (its folders and its header) and after it
/// (padding and the two end blocks), for the file `path` of `size` bytes.
pub(crate) fn blob_layer_frame(path: &str, size: u64) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut builder = tar::Builder::new(Vec::new());
    for folder in parent_folders(path) {
        let mut dir = header(tar::EntryType::Directory, 0o755, 0);
        builder
            .append_data(&mut dir, format!("{folder}/"), std::io::empty())
            .map_err(|e| format!("{folder}: {e}"))?;
    }
    let mut file = header(tar::EntryType::Regular, 0o444, size);
    // The header alone: `append_data` with a reader of the right length would copy it.
    let mut head = builder.into_inner().map_err(|e| e.to_string())?;
    // `into_inner` finished the archive with two end blocks; the file comes before them.
    head.truncate(head.len() - 2 * BLOCK as usize);
    let mut header_only = tar::Builder::new(Vec::new());
    file.set_size(0);
    header_only
        .append_data(&mut file, path, std::io::empty())
        .map_err(|e| format!("{path}: {e}"))?;
    let mut bytes = header_only.into_inner().map_err(|e| e.to_string())?;
    bytes.truncate(bytes.len() - 2 * BLOCK as usize);
    // Patch the size into the last header (a long name adds a GNU extension header before it).
    let last = bytes.len() - BLOCK as usize;
    let mut real = tar::Header::from_byte_slice(&bytes[last..]).clone();
    real.set_size(size);
    real.set_cksum();
    bytes[last..].copy_from_slice(real.as_bytes());
    head.extend_from_slice(&bytes);
    let padding = (BLOCK - size % BLOCK) % BLOCK;
    let tail = vec![0u8; (padding + 2 * BLOCK) as usize];
    Ok((head, tail))
}

/// Every folder above `path` (`a/b/c` → `a`, `a/b`), outermost first.
fn parent_folders(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(at, _)| &path[..at])
}

/// The metadata layer: every entry and every folder above one, in path order, then the end
/// blocks.
pub(crate) fn metadata_layer(entries: &[ImageEntry]) -> Result<Vec<u8>, String> {
    let folders: Vec<ImageEntry> = entries
        .iter()
        .flat_map(|e| parent_folders(e.path()))
        .map(|folder| ImageEntry::Dir(folder.to_owned()))
        .collect();
    let mut sorted: Vec<&ImageEntry> = entries.iter().chain(&folders).collect();
    sorted.sort_by(|a, b| a.path().cmp(b.path()));
    sorted.dedup_by(|a, b| a.path() == b.path());
    let mut builder = tar::Builder::new(Vec::new());
    for entry in sorted {
        match entry {
            ImageEntry::Dir(path) => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                builder
                    .append_data(&mut h, format!("{path}/"), std::io::empty())
                    .map_err(|e| format!("{path}: {e}"))?;
            }
            ImageEntry::Link(path, target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                builder
                    .append_link(&mut h, path, target)
                    .map_err(|e| format!("{path}: {e}"))?;
            }
            ImageEntry::File(path, bytes) => {
                let mut h = header(tar::EntryType::Regular, 0o444, bytes.len() as u64);
                builder
                    .append_data(&mut h, path, bytes.as_slice())
                    .map_err(|e| format!("{path}: {e}"))?;
            }
        }
    }
    builder.into_inner().map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: &'a [String],
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    architecture: &'static str,
    os: &'static str,
    config: BTreeMap<String, String>,
    rootfs: RootFs<'a>,
}

/// The image's config (`rootfs.diff_ids` are the layers' digests: they are uncompressed) and
/// its manifest, with `annotations`. Returns (config, manifest) bytes.
pub(crate) fn image_manifest(
    layers: &[Descriptor],
    annotations: BTreeMap<String, String>,
) -> (Vec<u8>, Vec<u8>) {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
    let config = serde_json::to_vec(&ImageConfig {
        // Data only: any platform may mount it; amd64/linux is what runtimes expect to see.
        architecture: "amd64",
        os: "linux",
        config: BTreeMap::new(),
        rootfs: RootFs {
            kind: "layers",
            diff_ids: &diff_ids,
        },
    })
    .unwrap_or_default();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
        artifact_type: None,
        config: Descriptor {
            media_type: CONFIG_MEDIA_TYPE.to_owned(),
            digest: digest_of(&config),
            size: config.len() as u64,
            annotations: None,
        },
        layers: layers.to_vec(),
        annotations: Some(annotations),
    };
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    (config, manifest)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn unpack(bytes: &[u8]) -> Vec<(String, tar::EntryType, Vec<u8>, Option<String>)> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().display().to_string();
                let kind = e.header().entry_type();
                let link = e.link_name().unwrap().map(|l| l.display().to_string());
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, kind, data, link)
            })
            .collect()
    }

    #[test]
    fn a_blob_layer_is_a_tar_of_that_file_under_its_folders() {
        let name = format!(
            "models--{}--{}/blobs/{}",
            "o".repeat(60),
            "n".repeat(90),
            "a".repeat(64)
        );
        let content = b"hello, layer";
        let (head, tail) = blob_layer_frame(&name, content.len() as u64).unwrap();
        let whole = [head.as_slice(), content, tail.as_slice()].concat();
        assert_eq!(whole.len() % 512, 0);
        let entries = unpack(&whole);
        let last = entries.last().unwrap();
        assert_eq!(last.0, name);
        assert_eq!(last.2, content);
        assert_eq!(entries[0].1, tar::EntryType::Directory);
        assert_eq!(entries.len(), 3);
        assert_eq!(blob_layer_frame(&name, 12).unwrap(), (head, tail));
    }

    #[test]
    fn the_metadata_layer_holds_links_files_and_folders_in_order() {
        let layer = metadata_layer(&[
            ImageEntry::Link(
                "models--o--n/snapshots/c/1_Pooling/config.json".to_owned(),
                "../../../blobs/abc".to_owned(),
            ),
            ImageEntry::Dir("models--o--n".to_owned()),
            ImageEntry::File("models--o--n/refs/main".to_owned(), b"c".to_vec()),
        ])
        .unwrap();
        let entries = unpack(&layer);
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "models--o--n/",
                "models--o--n/refs/",
                "models--o--n/refs/main",
                "models--o--n/snapshots/",
                "models--o--n/snapshots/c/",
                "models--o--n/snapshots/c/1_Pooling/",
                "models--o--n/snapshots/c/1_Pooling/config.json",
            ]
        );
        assert_eq!(entries[2].2, b"c");
        assert_eq!(entries[6].3.as_deref(), Some("../../../blobs/abc"));
    }

    #[test]
    fn the_image_config_lists_every_layer() {
        let layer = Descriptor {
            media_type: LAYER_MEDIA_TYPE.to_owned(),
            digest: format!("sha256:{}", "e".repeat(64)),
            size: 1024,
            annotations: None,
        };
        let (config, manifest) = image_manifest(&[layer], BTreeMap::new());
        let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", "e".repeat(64))
        );
        let manifest = super::super::modelpack::parse_manifest(&manifest).unwrap();
        assert_eq!(manifest.config.media_type, CONFIG_MEDIA_TYPE);
    }
}
