//! The Hugging Face ecosystem's environment variables, read the way `huggingface_hub` reads
//! them, so that one cache, one token and one endpoint serve Python tools and ours alike.
//!
//! Everything here takes a variable lookup function, so the rules are testable without
//! touching the process environment. `tests/python_compat.rs` checks every rule against
//! `huggingface_hub.constants` itself.
//!
//! One deliberate difference: an empty variable counts as unset here. `huggingface_hub` takes
//! an empty `HF_HOME` or `HF_HUB_CACHE` literally (a cache relative to the working directory),
//! which is never what anyone means.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arms a crash point (`<point>[:<n>]`); read only in builds with the `failpoints` feature.
#[cfg(feature = "failpoints")]
pub const CRASH_AT_ENV: &str = "CG_MODELS_CRASH_AT";

/// Turns blob locks into silent no-ops (the network-file-system case); read only in builds
/// with the `failpoints` feature.
#[cfg(feature = "failpoints")]
pub const NO_LOCKS_ENV: &str = "CG_MODELS_TEST_NO_LOCKS";

/// A PEM file of CA certificates trusted besides the system store (OpenSSL's variable).
pub(super) const SSL_CERT_FILE_ENV: &str = "SSL_CERT_FILE";

/// Folders (`:`-separated) of PEM CA certificates trusted besides the system store.
pub(super) const SSL_CERT_DIR_ENV: &str = "SSL_CERT_DIR";

/// The CA bundle of the configuration (`ca_bundle`, `--ca-bundle`).
pub(super) const CA_BUNDLE_ENV: &str = "CG_MODELS_CA_BUNDLE";

/// Places to adopt a model's files from before fetching them (`:`-separated folders).
pub(super) const ADOPT_ENV: &str = "CG_MODELS_ADOPT";

/// `SSL_CERT_DIR` split at `:`, empty parts dropped.
pub(super) fn path_list(env: &dyn EnvLookup, name: &str) -> Vec<PathBuf> {
    env.var(name)
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The public Hub.
pub(super) const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Reads one environment variable; empty values count as unset.
pub trait EnvLookup {
    /// The variable's value, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ProcessEnv;

impl EnvLookup for ProcessEnv {
    // The one place the process environment is read (clippy.toml bans it elsewhere).
    #[allow(clippy::disallowed_methods)]
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<F: Fn(&str) -> Option<String>> EnvLookup for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name).filter(|v| !v.is_empty())
    }
}

/// `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub(super) fn hf_home(env: &dyn EnvLookup) -> PathBuf {
    if let Some(home) = env.var("HF_HOME") {
        return expand_path(&home, env);
    }
    let cache = env
        .var("XDG_CACHE_HOME")
        .map(|x| expand_path(&x, env))
        .unwrap_or_else(|| home_dir(env).join(".cache"));
    cache.join("huggingface")
}

/// The hub cache: `HF_HUB_CACHE`, else the legacy `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`.
pub(super) fn hub_cache_dir(env: &dyn EnvLookup) -> PathBuf {
    env.var("HF_HUB_CACHE")
        .or_else(|| env.var("HUGGINGFACE_HUB_CACHE"))
        .map(|p| expand_path(&p, env))
        .unwrap_or_else(|| hf_home(env).join("hub"))
}

/// `HF_ENDPOINT` without a trailing `/`, else the public Hub.
pub(super) fn endpoint(env: &dyn EnvLookup) -> String {
    env.var("HF_ENDPOINT")
        .map(|e| e.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
}

/// Whether a boolean variable is true (`1`, `ON`, `YES`, `TRUE`, any case), as in `huggingface_hub`.
pub(super) fn is_true(env: &dyn EnvLookup, name: &str) -> bool {
    env.var(name).is_some_and(|v| is_true_value(&v))
}

/// `huggingface_hub`'s `_is_true`: the value itself, upper-cased, with no trimming (`" 1"` is
/// not true there, so it is not true here either).
fn is_true_value(value: &str) -> bool {
    matches!(
        value.to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

/// `HF_HUB_OFFLINE`, or when it is unset the legacy `TRANSFORMERS_OFFLINE`: a set
/// `HF_HUB_OFFLINE=0` wins over `TRANSFORMERS_OFFLINE=1`, as in `huggingface_hub`
/// (`_is_true(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"))`).
pub(super) fn offline(env: &dyn EnvLookup) -> bool {
    env.var("HF_HUB_OFFLINE")
        .or_else(|| env.var("TRANSFORMERS_OFFLINE"))
        .is_some_and(|v| is_true_value(&v))
}

/// A whole number of seconds from a variable such as `HF_HUB_DOWNLOAD_TIMEOUT`.
pub(super) fn seconds(env: &dyn EnvLookup, name: &str) -> Option<Duration> {
    env.var(name)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
}

/// Where a token was found, for messages (never the token itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// Given explicitly (configuration or `--token`).
    Explicit,
    /// `HF_TOKEN` or `HUGGING_FACE_HUB_TOKEN`.
    Environment,
    /// The token file (`HF_TOKEN_PATH` or `$HF_HOME/token`).
    File,
}

/// The implicit token: `HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`, else the file at `HF_TOKEN_PATH`
/// or `$HF_HOME/token`; nothing when `HF_HUB_DISABLE_IMPLICIT_TOKEN` is set.
pub fn implicit_token(env: &dyn EnvLookup) -> Option<(String, TokenSource)> {
    if is_true(env, "HF_HUB_DISABLE_IMPLICIT_TOKEN") {
        return None;
    }
    if let Some(token) = env
        .var("HF_TOKEN")
        .or_else(|| env.var("HUGGING_FACE_HUB_TOKEN"))
    {
        let token = token.trim().to_owned();
        if !token.is_empty() {
            return Some((token, TokenSource::Environment));
        }
    }
    let path = env
        .var("HF_TOKEN_PATH")
        .map(|p| expand_path(&p, env))
        .unwrap_or_else(|| hf_home(env).join("token"));
    read_token_file(&path).map(|t| (t, TokenSource::File))
}

/// Reads a token file: its content with surrounding white space removed, if not empty.
pub fn read_token_file(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

fn home_dir(env: &dyn EnvLookup) -> PathBuf {
    env.var("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `os.path.expandvars(os.path.expanduser(path))`, the way `huggingface_hub` expands
/// `HF_HOME`, `HF_HUB_CACHE` and `HF_TOKEN_PATH`.
fn expand_path(path: &str, env: &dyn EnvLookup) -> PathBuf {
    PathBuf::from(expand_vars(&expand_user(path, env).to_string_lossy(), env))
}

/// `os.path.expandvars` (POSIX): `$NAME` (ASCII letters, digits, `_`) and `${NAME}` are
/// replaced by the variable's value; unknown variables are left as written. Values are not
/// expanded again.
fn expand_vars(text: &str, env: &dyn EnvLookup) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let (name, consumed) = match after.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        match env.var(name).filter(|_| !name.is_empty()) {
            Some(value) => {
                out.push_str(&value);
                rest = &after[consumed..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn expand_user(path: &str, env: &dyn EnvLookup) -> PathBuf {
    if path == "~" {
        home_dir(env)
    } else if let Some(rest) = path.strip_prefix("~/") {
        home_dir(env).join(rest)
    } else {
        PathBuf::from(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    #[test]
    fn cache_dir_follows_huggingface_hub_precedence() {
        let e = env(&[("HOME", "/home/u")]);
        assert_eq!(
            hub_cache_dir(&e),
            PathBuf::from("/home/u/.cache/huggingface/hub")
        );
        let e = env(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg")]);
        assert_eq!(hub_cache_dir(&e), PathBuf::from("/xdg/huggingface/hub"));
        let e = env(&[
            ("HOME", "/home/u"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HF_HOME", "~/hf"),
        ]);
        assert_eq!(hub_cache_dir(&e), PathBuf::from("/home/u/hf/hub"));
        let e = env(&[("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/legacy")]);
        assert_eq!(hub_cache_dir(&e), PathBuf::from("/legacy"));
        let e = env(&[
            ("HF_HOME", "/hf"),
            ("HUGGINGFACE_HUB_CACHE", "/legacy"),
            ("HF_HUB_CACHE", "/new"),
        ]);
        assert_eq!(hub_cache_dir(&e), PathBuf::from("/new"));
        let e = env(&[("HF_HOME", ""), ("HOME", "/h")]);
        assert_eq!(
            hub_cache_dir(&e),
            PathBuf::from("/h/.cache/huggingface/hub")
        );
    }

    #[test]
    fn endpoint_and_flags() {
        assert_eq!(endpoint(&env(&[])), DEFAULT_ENDPOINT);
        assert_eq!(
            endpoint(&env(&[("HF_ENDPOINT", "http://localhost:1/")])),
            "http://localhost:1"
        );
        assert!(offline(&env(&[("HF_HUB_OFFLINE", "yes")])));
        assert!(offline(&env(&[("TRANSFORMERS_OFFLINE", "1")])));
        assert!(!offline(&env(&[("HF_HUB_OFFLINE", "0")])));
        assert!(!offline(&env(&[
            ("HF_HUB_OFFLINE", "0"),
            ("TRANSFORMERS_OFFLINE", "1")
        ])));
        assert!(!offline(&env(&[("HF_HUB_OFFLINE", " 1")])));
        assert!(offline(&env(&[
            ("HF_HUB_OFFLINE", ""),
            ("TRANSFORMERS_OFFLINE", "on")
        ])));
        assert_eq!(
            seconds(&env(&[("T", "2.5")]), "T"),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(seconds(&env(&[("T", "-1")]), "T"), None);
        assert_eq!(seconds(&env(&[("T", "x")]), "T"), None);
    }

    #[test]
    fn paths_expand_variables_like_os_path_expandvars() {
        let e = env(&[("HOME", "/h"), ("ROOT", "/data"), ("HF_HOME", "${ROOT}/hf")]);
        assert_eq!(hub_cache_dir(&e), PathBuf::from("/data/hf/hub"));
        let e = env(&[
            ("ROOT", "/data"),
            ("HF_HUB_CACHE", "$ROOT/c/$NOPE/${ROOT}x"),
        ]);
        assert_eq!(hub_cache_dir(&e), PathBuf::from("/data/c/$NOPE//datax"));
        let e = env(&[("HOME", "/h"), ("HF_HUB_CACHE", "~/$HOME-${}-${open-$")]);
        assert_eq!(hub_cache_dir(&e), PathBuf::from("/h//h-${}-${open-$"));
    }

    #[test]
    fn token_precedence_env_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap().to_owned();
        std::fs::write(dir.path().join("token"), "  hf_file\n").unwrap();
        let e = env(&[("HF_HOME", &home)]);
        assert_eq!(
            implicit_token(&e),
            Some(("hf_file".to_owned(), TokenSource::File))
        );
        let e = env(&[("HF_HOME", &home), ("HF_TOKEN", "hf_env")]);
        assert_eq!(
            implicit_token(&e),
            Some(("hf_env".to_owned(), TokenSource::Environment))
        );
        let other = dir.path().join("other");
        std::fs::write(&other, "hf_other").unwrap();
        let e = env(&[
            ("HF_HOME", &home),
            ("HF_TOKEN_PATH", other.to_str().unwrap()),
        ]);
        assert_eq!(
            implicit_token(&e),
            Some(("hf_other".to_owned(), TokenSource::File))
        );
        let e = env(&[
            ("HF_HOME", &home),
            ("HF_TOKEN", "x"),
            ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1"),
        ]);
        assert_eq!(implicit_token(&e), None);
        let e = env(&[("HF_HOME", "/nonexistent-dir-for-test")]);
        assert_eq!(implicit_token(&e), None);
    }
}
