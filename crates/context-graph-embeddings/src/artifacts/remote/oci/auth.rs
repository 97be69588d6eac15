//! Registry credentials the way users already have them, and the registry's challenge: which
//! scheme a `401` asks for (`WWW-Authenticate: Basic …` or `Bearer realm=…,service=…,scope=…`).
//!
//! Where credentials come from, first found wins: the configuration (`--registry-user` with
//! `CG_MODELS_REGISTRY_PASSWORD`), `CG_MODELS_REGISTRY_USERNAME`/`CG_MODELS_REGISTRY_PASSWORD`,
//! `REGISTRY_AUTH_FILE` (podman, skopeo, buildah), `$XDG_RUNTIME_DIR/containers/auth.json`, then
//! `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`: an `auths` entry for the host, or a
//! credential helper (`credHelpers`, `credsStore`: the `docker-credential-<name> get` program).
//! Passwords live in [`Secret`]s: never in `Debug`, logs or errors.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use data_encoding::BASE64;
use serde::Deserialize;

use crate::artifacts::environment::EnvLookup;
use crate::artifacts::remote::client::Secret;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    /// The user name.
    pub username: String,
    pub(crate) password: Secret,
    /// Where they came from, for `-v` output (a file or variable name, never the secret).
    pub origin: String,
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("origin", &self.origin)
            .finish()
    }
}

impl RegistryCredentials {
    /// Credentials given directly.
    pub fn new(username: impl Into<String>, password: impl Into<String>, origin: &str) -> Self {
        RegistryCredentials {
            username: username.into(),
            password: Secret::new(password.into()),
            origin: origin.to_owned(),
        }
    }

    /// `Basic base64(user:password)`.
    pub(crate) fn basic_header(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password.expose());
        format!("Basic {}", BASE64.encode(pair.as_bytes()))
    }
}

/// The name under which a `--registry-auth-file` reaches [`find_credentials`] (not a variable
/// users set: the manager puts the flag there, ahead of `REGISTRY_AUTH_FILE`).
pub(crate) const AUTH_FILE_FLAG: &str = "--registry-auth-file";

/// The environment with a `--registry-auth-file` in front of it.
pub(crate) struct WithAuthFile<'a> {
    pub(crate) env: &'a dyn EnvLookup,
    pub(crate) file: Option<&'a Path>,
}

impl EnvLookup for WithAuthFile<'_> {
    fn var(&self, name: &str) -> Option<String> {
        if name == AUTH_FILE_FLAG {
            return self.file.map(|f| f.display().to_string());
        }
        self.env.var(name)
    }
}

/// The credentials for `registry` (`host[:port]`) from the environment and the usual files,
/// in the order of the module note. Blocking (reads files, may run a credential helper).
pub(crate) fn find_credentials(
    registry: &str,
    env: &dyn EnvLookup,
) -> Result<Option<RegistryCredentials>, String> {
    if let (Some(user), Some(password)) = (
        env.var("CG_MODELS_REGISTRY_USERNAME"),
        env.var("CG_MODELS_REGISTRY_PASSWORD"),
    ) {
        return Ok(Some(RegistryCredentials::new(
            user,
            password,
            "CG_MODELS_REGISTRY_USERNAME/PASSWORD",
        )));
    }
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(file) = env.var(AUTH_FILE_FLAG) {
        files.push(PathBuf::from(file));
    }
    if let Some(file) = env.var("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(file));
    }
    if let Some(runtime) = env.var("XDG_RUNTIME_DIR") {
        files.push(Path::new(&runtime).join("containers/auth.json"));
    }
    match env.var("DOCKER_CONFIG") {
        Some(dir) => files.push(Path::new(&dir).join("config.json")),
        None => {
            if let Some(home) = env.var("HOME") {
                files.push(Path::new(&home).join(".docker/config.json"));
            }
        }
    }
    for file in files {
        let Ok(text) = std::fs::read(&file) else {
            continue;
        };
        let config: AuthFile = serde_json::from_slice(&text)
            .map_err(|e| format!("{} is not a registry auth file: {e}", file.display()))?;
        let origin = file.display().to_string();
        if let Some(found) = config.credentials_for(registry, &origin)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// `config.json` / `auth.json`: the parts we read.
#[derive(Debug, Default, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

impl fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthEntry(<redacted>)")
    }
}

impl AuthFile {
    fn credentials_for(
        &self,
        registry: &str,
        origin: &str,
    ) -> Result<Option<RegistryCredentials>, String> {
        let entry = self
            .auths
            .iter()
            .find_map(|(key, entry)| (normalise_auth_key(key) == registry).then_some(entry));
        if let Some(entry) = entry {
            if entry.identity_token.is_some() && entry.auth.is_none() && entry.password.is_none() {
                return Err(format!(
                    "{origin} holds an identity token for {registry}, which cg-models does not use; log in with a user name and password (or token) instead, or set CG_MODELS_REGISTRY_USERNAME and CG_MODELS_REGISTRY_PASSWORD"
                ));
            }
            if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
                return Ok(Some(RegistryCredentials::new(
                    user.clone(),
                    password.clone(),
                    origin,
                )));
            }
            if let Some(auth) = &entry.auth {
                let decoded = BASE64
                    .decode(auth.trim().as_bytes())
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| {
                        format!("{origin}: the `auth` of {registry} is not base64 of user:password")
                    })?;
                let (user, password) = decoded.split_once(':').ok_or_else(|| {
                    format!("{origin}: the `auth` of {registry} is not base64 of user:password")
                })?;
                return Ok(Some(RegistryCredentials::new(user, password, origin)));
            }
        }
        let helper = self
            .cred_helpers
            .get(registry)
            .or(self.creds_store.as_ref());
        match helper {
            Some(helper) => run_helper(helper, registry),
            None => Ok(None),
        }
    }
}

/// `https://index.docker.io/v1/`, `http://host:5000`, `host:5000/` → `host:5000`.
fn normalise_auth_key(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// `docker-credential-<helper> get` with the host on stdin: `{"Username": …, "Secret": …}`.
fn run_helper(helper: &str, registry: &str) -> Result<Option<RegistryCredentials>, String> {
    if !helper
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "credential helper name `{helper}` is not a plain name"
        ));
    }
    let program = format!("docker-credential-{helper}");
    let mut child = match Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            return Err(format!(
                "the credential helper {program} configured for {registry} cannot be run ({e}); install it, or set CG_MODELS_REGISTRY_USERNAME and CG_MODELS_REGISTRY_PASSWORD"
            ))
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(registry.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("{program} failed: {e}"))?;
    if !output.status.success() {
        // "credentials not found in native keychain": no credentials, not an error.
        return Ok(None);
    }
    #[derive(Deserialize)]
    struct HelperAnswer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
        .map_err(|_| format!("{program} answered something that is not its JSON"))?;
    if answer.username == "<token>" {
        return Err(format!(
            "{program} gives an identity token for {registry}, which cg-models does not use; set CG_MODELS_REGISTRY_USERNAME and CG_MODELS_REGISTRY_PASSWORD"
        ));
    }
    Ok(Some(RegistryCredentials::new(
        answer.username,
        answer.secret,
        &program,
    )))
}

/// What a `401` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm="…"`: send the credentials with every request.
    Basic,
    /// `Bearer realm=…,service=…,scope=…`: get a token from `realm` for the scope.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The registry's service name, passed back.
        service: Option<String>,
        /// The scope the registry asked for, if it said.
        scope: Option<String>,
    },
}

/// Parses `WWW-Authenticate` (one challenge; quoted or bare values, any order). `None` for a
/// scheme we do not speak.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let realm = params.get("realm")?.clone();
    if !(realm.starts_with("https://") || realm.starts_with("http://")) {
        return None;
    }
    Some(Challenge::Bearer {
        realm,
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `a="x, y",b=z` → {a: "x, y", b: "z"}.
fn parse_params(text: &str) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(escaped) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        if params.len() > 32 {
            break;
        }
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn challenges_parse_as_registries_send_them() {
        assert_eq!(
            parse_challenge("Basic realm=\"Registry Realm\""),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:library/x:pull,push\""
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".to_owned(),
                service: Some("registry.docker.io".to_owned()),
                scope: Some("repository:library/x:pull,push".to_owned()),
            })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Bearer realm=file:///etc/passwd"), None);
    }

    #[test]
    fn docker_config_and_auth_files_are_read_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker");
        std::fs::create_dir_all(&docker).unwrap();
        let auth = BASE64.encode(b"alice:s3cret");
        std::fs::write(
            docker.join("config.json"),
            format!(r#"{{"auths":{{"https://reg.example:5000/v1/":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
        let env = env_of(vec![("DOCKER_CONFIG", docker.display().to_string())]);
        let found = find_credentials("reg.example:5000", &env).unwrap().unwrap();
        assert_eq!(found.username, "alice");
        assert!(found.basic_header().starts_with("Basic "));
        assert!(!format!("{found:?}").contains("s3cret"));
        assert!(find_credentials("other:5000", &env).unwrap().is_none());

        let podman = dir.path().join("auth.json");
        std::fs::write(
            &podman,
            r#"{"auths":{"reg.example:5000":{"username":"bob","password":"pw"}}}"#,
        )
        .unwrap();
        let env = env_of(vec![
            ("DOCKER_CONFIG", docker.display().to_string()),
            ("REGISTRY_AUTH_FILE", podman.display().to_string()),
        ]);
        assert_eq!(
            find_credentials("reg.example:5000", &env)
                .unwrap()
                .unwrap()
                .username,
            "bob"
        );
        let env = env_of(vec![
            ("REGISTRY_AUTH_FILE", podman.display().to_string()),
            ("CG_MODELS_REGISTRY_USERNAME", "carol".to_owned()),
            ("CG_MODELS_REGISTRY_PASSWORD", "pw2".to_owned()),
        ]);
        assert_eq!(
            find_credentials("reg.example:5000", &env)
                .unwrap()
                .unwrap()
                .username,
            "carol"
        );
    }

    #[test]
    fn broken_files_and_identity_tokens_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        std::fs::write(&file, r#"{"auths":{"r:1":{"identitytoken":"tok"}}}"#).unwrap();
        let env = env_of(vec![("REGISTRY_AUTH_FILE", file.display().to_string())]);
        let error = find_credentials("r:1", &env).unwrap_err();
        assert!(
            error.contains("identity token") && !error.contains("tok\""),
            "{error}"
        );
        std::fs::write(&file, "not json").unwrap();
        assert!(find_credentials("r:1", &env)
            .unwrap_err()
            .contains("not a registry auth file"));
    }
}
