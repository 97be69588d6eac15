//! Identifier rules shared by the manifest, the cache and the Hub client: what a commit id
//! and a SHA-256 look like. A leaf, so that checking a name never pulls in the parser that
//! first needed it.

/// Whether `text` is a full 40-hex git commit id (lower case).
pub(super) fn is_commit_hash(text: &str) -> bool {
    text.len() == 40
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks a SHA-256 and returns it in lower case.
pub(super) fn validate_sha256(sha256: &str) -> Result<String, String> {
    if sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(sha256.to_ascii_lowercase())
    } else {
        Err(format!(
            "`{}` is not a SHA-256 (64 hex digits); use null when it is not known",
            shown(sha256)
        ))
    }
}

/// At most 80 characters of user input, for messages.
fn shown(text: &str) -> String {
    text.chars().take(80).collect()
}
