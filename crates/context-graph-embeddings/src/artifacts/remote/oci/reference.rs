//! Names in a registry: `oci://HOST[:PORT]/REPO[:TAG]` as users write them, checked against
//! the distribution spec's grammar before any request is made, and the one rule that names a
//! model's artifact in a mirror repository (`mirror_tag`), so that every node finds what any
//! other node (or `cg-models push`) put there without a catalog.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::{EmbeddingError, EmbeddingResult};

/// Longest tag the distribution spec allows.
const MAX_TAG: usize = 128;
/// Longest repository name (host excluded) accepted, as most registries do.
const MAX_REPOSITORY: usize = 255;

/// A repository in a registry, with the tag when one was named.
#[derive(Clone, PartialEq, Eq)]
pub struct OciReference {
    /// `host[:port]`.
    pub registry: String,
    /// `path/of/repo`, lower case.
    pub repository: String,
    /// The tag, when named.
    pub tag: Option<String>,
    /// `https` (`oci://`), or `http` for a plain-text registry (`oci+http://`).
    pub scheme: &'static str,
}

impl fmt::Debug for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = if self.scheme == "http" {
            "oci+http"
        } else {
            "oci"
        };
        write!(f, "{prefix}://{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        Ok(())
    }
}

impl OciReference {
    /// Parses `oci://HOST[:PORT]/REPO[:TAG]` (or `oci+http://` for a registry without TLS).
    pub fn parse(text: &str) -> EmbeddingResult<OciReference> {
        let bad = |why: &str| {
            EmbeddingError::Config(format!(
                "`{text}` is not a registry reference ({why}); write oci://HOST[:PORT]/REPOSITORY[:TAG], e.g. oci://registry.example.com/models/e5:v1"
            ))
        };
        let (scheme, rest) = if let Some(rest) = text.strip_prefix("oci://") {
            ("https", rest)
        } else if let Some(rest) = text.strip_prefix("oci+http://") {
            ("http", rest)
        } else {
            return Err(bad("it must start with oci://"));
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no repository after the host"))?;
        if registry.is_empty()
            || !registry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        {
            return Err(bad("the host is not a host name with an optional port"));
        }
        if path.contains('@') {
            return Err(bad("digests are not accepted here; name a tag"));
        }
        // A tag follows the last `:` of the last path segment.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        check_repository(repository).map_err(|why| bad(&why))?;
        if let Some(tag) = tag {
            check_tag(tag).map_err(|why| bad(&why))?;
        }
        Ok(OciReference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            scheme,
        })
    }

    /// The same repository with `tag`.
    pub fn with_tag(&self, tag: &str) -> OciReference {
        OciReference {
            tag: Some(tag.to_owned()),
            ..self.clone()
        }
    }

    /// `https://host[:port]`.
    pub(crate) fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.registry)
    }
}

/// The distribution spec's repository grammar: lower-case path components of
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` separated by `/`.
fn check_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() || repository.len() > MAX_REPOSITORY {
        return Err(format!(
            "the repository must be 1 to {MAX_REPOSITORY} characters"
        ));
    }
    for component in repository.split('/') {
        let bytes = component.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let valid = !bytes.is_empty()
            && bytes.first().is_some_and(alnum)
            && bytes.last().is_some_and(alnum)
            && bytes
                .iter()
                .all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
            && !component.contains("..")
            && !component.contains("___")
            && !component.contains("._")
            && !component.contains("_.")
            && !component.contains(".-")
            && !component.contains("-.")
            && !component.contains("_-")
            && !component.contains("-_");
        if !valid {
            return Err(format!(
                "repository component `{component}` must be lower-case letters and digits, separated by `.`, `_`, `__` or dashes"
            ));
        }
    }
    Ok(())
}

/// The distribution spec's tag grammar: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub(crate) fn check_tag(tag: &str) -> Result<(), String> {
    let valid = !tag.is_empty()
        && tag.len() <= MAX_TAG
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "tag `{tag}` must be 1 to {MAX_TAG} letters, digits, `.`, `_` or `-`, not starting with `.` or `-`"
        ))
    }
}

/// The tag under which a mirror repository holds a model's artifact at a commit:
/// `<org>--<name>--<commit>` (the cache's folder naming, so it reads the same), shortened with
/// a hash of the repo id where the limit of 128 characters demands it. Every node and
/// `cg-models push` derive it the same way, so nothing needs a catalog.
pub fn mirror_tag(repo_id: &str, commit: &str) -> String {
    let mut name: String = repo_id
        .replace('/', "--")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        name.insert(0, '_');
    }
    let commit: String = commit
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect();
    let whole = format!("{name}--{commit}");
    if whole.len() <= MAX_TAG {
        return whole;
    }
    let hash = hex::encode(&Sha256::digest(repo_id.as_bytes())[..8]);
    let room = MAX_TAG - commit.len() - hash.len() - 4;
    let kept: String = name.chars().take(room).collect();
    format!("{kept}-{hash}--{commit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_and_without_tags() {
        let r = OciReference::parse("oci://127.0.0.1:5000/models/e5:v1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "models/e5");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.base_url(), "https://127.0.0.1:5000");
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/models/e5:v1");
        let r = OciReference::parse("oci+http://registry.local/cache").unwrap();
        assert_eq!((r.scheme, r.tag.clone()), ("http", None));
        assert_eq!(r.base_url(), "http://registry.local");
    }

    #[test]
    fn bad_references_say_what_to_write() {
        for bad in [
            "s3://bucket",
            "oci://host",
            "oci://host/Models",
            "oci://host/a//b",
            "oci://host/repo:-tag",
            "oci://host/repo@sha256:00",
            "oci://ho st/repo",
            "oci://host/repo:",
        ] {
            let error = OciReference::parse(bad).unwrap_err().to_string();
            assert!(error.contains("oci://HOST"), "{bad}: {error}");
        }
    }

    #[test]
    fn mirror_tags_are_valid_tags_and_distinct() {
        let commit = "a".repeat(40);
        let tag = mirror_tag("sentence-transformers/all-MiniLM-L6-v2", &commit);
        assert_eq!(
            tag,
            format!("sentence-transformers--all-MiniLM-L6-v2--{commit}")
        );
        check_tag(&tag).unwrap();
        let long_a = format!("{}/{}", "o".repeat(40), "n".repeat(55));
        let long_b = format!("{}/{}", "o".repeat(40), "n".repeat(56));
        let (a, b) = (mirror_tag(&long_a, &commit), mirror_tag(&long_b, &commit));
        assert!(a.len() <= MAX_TAG && b.len() <= MAX_TAG, "{a} {b}");
        assert_ne!(a, b);
        assert!(a.ends_with(&commit));
        check_tag(&a).unwrap();
        check_tag(&mirror_tag(".hidden/x", &commit)).unwrap();
    }
}
