//! A real OCI registry on loopback for the OCI tests (issue 27), and the real clients that judge
//! what is in it. Included by the test binaries that need them
//! (`#[path = "common/registry.rs"] mod registry;`).
//!
//! The registry is Debian's `docker-registry` (distribution 2.8), started as a child process:
//! TLS with a CA and server certificate made by the test (SAN `127.0.0.1` and `localhost`),
//! htpasswd (bcrypt) basic auth, filesystem storage in a temporary folder, delete enabled, and
//! its access log (the combined log format, on the child's stdout) kept in a file the harness
//! parses: [`Registry::requests`] and [`Registry::uploads`] read what the registry itself saw.
//!
//! The judges: `skopeo` and `umoci` (Debian) and oras-py (PyPI `oras`, a library without a
//! CLI, driven by a small Python script). All of them come from `scripts/install-registry` and
//! `scripts/setup-python`. Tools are found as follows: the registry is `CG_TEST_REGISTRY`, else
//! `docker-registry` on `PATH`; `skopeo`, `umoci` and `htpasswd` are `CG_TEST_SKOPEO`,
//! `CG_TEST_UMOCI`, `CG_TEST_HTPASSWD`, else on `PATH`; Python is `CG_TEST_PYTHON`, default
//! `target/pyenv/bin/python`, and must import `oras`. A missing tool fails the test with a
//! message naming the install script, unless `CG_SKIP_REGISTRY_TESTS=1`: then [`require`]
//! (and the [`require_tools!`] macro) says why on stderr and the test returns.

// Each test binary uses part of this harness.
#![allow(dead_code)]
// Tests read their own switches (CG_TEST_*, CG_SKIP_*) and say on stderr why they skip.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::print_stderr)]

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long the registry may take to listen after it is started.
const BOOT_LIMIT: Duration = Duration::from_secs(30);

/// The variable that turns a missing tool into a skipped test instead of a failure.
pub(crate) const SKIP_VAR: &str = "CG_SKIP_REGISTRY_TESTS";

/// A tool the OCI tests need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tool {
    /// `docker-registry` (distribution 2.8), from `CG_TEST_REGISTRY` or `PATH`.
    Registry,
    /// `htpasswd` (apache2-utils), which makes the bcrypt password file the registry needs.
    Htpasswd,
    /// `skopeo`.
    Skopeo,
    /// `umoci`.
    Umoci,
    /// A Python that imports oras-py (`CG_TEST_PYTHON`, default `target/pyenv/bin/python`).
    Oras,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Registry => "docker-registry",
            Tool::Htpasswd => "htpasswd",
            Tool::Skopeo => "skopeo",
            Tool::Umoci => "umoci",
            Tool::Oras => "python with oras",
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Tool::Oras => {
                "run scripts/setup-python (target/pyenv gets oras), or point CG_TEST_PYTHON at \
                 a Python that imports oras"
            }
            Tool::Registry => {
                "run scripts/install-registry (Debian package docker-registry), or point \
                 CG_TEST_REGISTRY at a distribution 2.8 binary"
            }
            _ => "run scripts/install-registry",
        }
    }

    /// The tool's path when it is there and runs; otherwise what is wrong. Looked up once
    /// per test binary (the switches do not change while it runs).
    pub(crate) fn locate(self) -> Result<PathBuf, String> {
        static FOUND: [std::sync::OnceLock<Result<PathBuf, String>>; 5] =
            [const { std::sync::OnceLock::new() }; 5];
        FOUND[self as usize].get_or_init(|| self.find()).clone()
    }

    fn find(self) -> Result<PathBuf, String> {
        let (var, program) = match self {
            Tool::Registry => ("CG_TEST_REGISTRY", "docker-registry"),
            Tool::Htpasswd => ("CG_TEST_HTPASSWD", "htpasswd"),
            Tool::Skopeo => ("CG_TEST_SKOPEO", "skopeo"),
            Tool::Umoci => ("CG_TEST_UMOCI", "umoci"),
            Tool::Oras => {
                let python = std::env::var_os("CG_TEST_PYTHON")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| {
                        PathBuf::from(concat!(
                            env!("CARGO_MANIFEST_DIR"),
                            "/../../target/pyenv/bin/python"
                        ))
                    });
                let works = Command::new(&python)
                    .args(["-c", "import oras.provider"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                return if works {
                    Ok(python)
                } else {
                    Err(format!(
                        "no Python that imports oras at {} (CG_TEST_PYTHON, default target/pyenv/bin/python)",
                        python.display()
                    ))
                };
            }
        };
        let found = std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|dir| dir.join(program))
                        .find(|candidate| candidate.is_file())
                })
            });
        let Some(path) = found else {
            return Err(format!(
                "`{program}` is not installed ({var} unset, not on PATH)"
            ));
        };
        // Every one of them prints a usage or version and exits 0 with --help.
        let runs = Command::new(&path)
            .arg(if self == Tool::Htpasswd {
                "-h"
            } else {
                "--help"
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match runs {
            Ok(_) => Ok(path),
            Err(e) => Err(format!("cannot run {}: {e}", path.display())),
        }
    }
}

/// Whether the test can go on: true when every tool is there. A missing tool panics with a
/// message naming the install script, unless `CG_SKIP_REGISTRY_TESTS=1`: then this says why on
/// stderr and returns false (the test returns; see [`require_tools!`]).
pub(crate) fn require(tools: &[Tool]) -> bool {
    let skip = std::env::var(SKIP_VAR).is_ok_and(|v| v == "1" || v == "true");
    for tool in tools {
        if let Err(problem) = tool.locate() {
            if skip {
                eprintln!("skipped: {problem}; {SKIP_VAR}=1");
                return false;
            }
            panic!(
                "{} is missing: {problem}. To install it, {}; set {SKIP_VAR}=1 to skip the OCI tests",
                tool.name(),
                tool.install_hint()
            );
        }
    }
    true
}

/// Returns from the test (skipped on purpose, `CG_SKIP_REGISTRY_TESTS=1`) unless every tool
/// named is there; fails the test when one is missing otherwise.
/// `require_tools!(Tool::Registry, Tool::Skopeo);`
macro_rules! require_tools {
    ($($tool:expr),+ $(,)?) => {
        if !$crate::registry::require(&[$($tool),+]) {
            return;
        }
    };
}
pub(crate) use require_tools;

/// A running `docker-registry` on `127.0.0.1`, killed when dropped. Start it after
/// [`require_tools!`]`(Tool::Registry, Tool::Htpasswd)`. Everything here blocks (child
/// processes, files): from an async test, call it through `tokio::task::spawn_blocking`.
/// Blobs are served as stored (no digest check on read) and with `Range` support, so
/// altering [`Registry::blob_data`] or [`Registry::stop`] mid-transfer tests the client.
/// How the registry authenticates clients.
pub(crate) enum RegistryAuth {
    /// htpasswd (basic): the harness's user and password.
    Htpasswd,
    /// Bearer tokens (JWT) from a token service at `realm`, signed by a key whose certificate
    /// is in `root_certificates` (distribution's `auth.token`).
    Token {
        realm: String,
        service: String,
        issuer: String,
        root_certificates: PathBuf,
    },
}

pub(crate) struct Registry {
    /// `127.0.0.1:PORT`, the registry's name in references (`{host}/repo:tag`).
    pub(crate) host: String,
    /// The port it listens on (the same after [`Registry::restart`]).
    pub(crate) port: u16,
    /// The test CA (PEM) that signed the server certificate; nothing else trusts it.
    pub(crate) ca_pem: PathBuf,
    /// A folder holding only `ca.crt` (the CA), the form `skopeo --cert-dir` and Docker's
    /// `certs.d` expect.
    pub(crate) cert_dir: PathBuf,
    /// The user the htpasswd file knows.
    pub(crate) username: String,
    /// Its password (random per registry).
    pub(crate) password: String,
    /// The registry's storage root (`docker/registry/v2/...` below it).
    pub(crate) storage: PathBuf,
    /// A folder holding `config.json` with `auths[host].auth = base64(user:pass)` (also under
    /// `localhost:PORT`): point `DOCKER_CONFIG` here, or `REGISTRY_AUTH_FILE` at the file.
    pub(crate) docker_config_dir: PathBuf,
    /// The access log (combined log format), appended across restarts.
    pub(crate) access_log: PathBuf,
    /// The registry's own log (logrus, stderr), appended across restarts.
    pub(crate) app_log: PathBuf,
    config: PathBuf,
    binary: PathBuf,
    /// A private home for the judges (no user's `~/.docker` or containers config is read).
    home: PathBuf,
    policy: PathBuf,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Makes the CA, server certificate, htpasswd file, storage and configuration in a fresh
    /// temporary folder and starts the registry; returns once it accepts connections. Panics
    /// (with the registry's log) when it cannot start.
    pub(crate) fn start() -> Registry {
        Self::start_with(RegistryAuth::Htpasswd)
    }

    /// Like [`start`](Self::start), with the authentication `mode` (htpasswd, or tokens from a
    /// token service the test runs).
    pub(crate) fn start_with(mode: RegistryAuth) -> Registry {
        let binary = Tool::Registry
            .locate()
            .unwrap_or_else(|e| panic!("{e}: run scripts/install-registry"));
        let htpasswd = Tool::Htpasswd
            .locate()
            .unwrap_or_else(|e| panic!("{e}: run scripts/install-registry"));
        let dir = tempfile::tempdir().expect("temporary folder for the registry");
        let root = dir.path().to_path_buf();
        let storage = root.join("storage");
        let cert_dir = root.join("certs");
        let docker_config_dir = root.join("docker");
        let home = root.join("home");
        for d in [&storage, &cert_dir, &docker_config_dir, &home] {
            std::fs::create_dir_all(d).expect("registry folders");
        }

        // The CA and the server certificate.
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cg-models test registry CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().expect("server key");
        let mut leaf_params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("server cert");
        leaf_params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("sign the server certificate");
        let ca_pem = root.join("ca.pem");
        std::fs::write(&ca_pem, ca_cert.pem()).expect("write ca.pem");
        std::fs::write(cert_dir.join("ca.crt"), ca_cert.pem()).expect("write certs/ca.crt");
        let server_pem = root.join("server.pem");
        let server_key = root.join("server.key");
        std::fs::write(&server_pem, leaf.pem()).expect("write server.pem");
        std::fs::write(&server_key, leaf_key.serialize_pem()).expect("write server.key");

        // The user, with a bcrypt entry (distribution's htpasswd accepts nothing else); the
        // password goes through stdin, not the command line.
        let username = "cg-test".to_owned();
        let password = random_hex(16);
        let htpasswd_file = root.join("htpasswd");
        let mut child = Command::new(&htpasswd)
            .args(["-B", "-i", "-c"])
            .arg(&htpasswd_file)
            .arg(&username)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run htpasswd");
        child
            .stdin
            .take()
            .expect("htpasswd stdin")
            .write_all(password.as_bytes())
            .expect("password to htpasswd");
        let made = child.wait_with_output().expect("htpasswd finishes");
        assert!(
            made.status.success(),
            "htpasswd -B failed: {}",
            String::from_utf8_lossy(&made.stderr)
        );

        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let host = format!("127.0.0.1:{port}");
        let auth = base64(format!("{username}:{password}").as_bytes());
        let docker_config = serde_json::json!({
            "auths": {
                host.clone(): { "auth": auth },
                format!("localhost:{port}"): { "auth": auth },
            }
        });
        std::fs::write(
            docker_config_dir.join("config.json"),
            serde_json::to_vec_pretty(&docker_config).expect("config.json"),
        )
        .expect("write docker config.json");
        let policy = root.join("policy.json");
        std::fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .expect("write the containers policy");

        let config = root.join("config.yml");
        std::fs::write(
            &config,
            format!(
                r#"version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {host}
  secret: {secret}
  tls:
    certificate: {server_pem}
    key: {server_key}
{auth}
health:
  storagedriver:
    enabled: false
"#,
                storage = storage.display(),
                secret = random_hex(16),
                server_pem = server_pem.display(),
                server_key = server_key.display(),
                auth = match &mode {
                    RegistryAuth::Htpasswd => format!(
                        "auth:\n  htpasswd:\n    realm: cg-test-registry\n    path: {}",
                        htpasswd_file.display()
                    ),
                    RegistryAuth::Token {
                        realm,
                        service,
                        issuer,
                        root_certificates,
                    } => format!(
                        "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}",
                        root_certificates.display()
                    ),
                },
            ),
        )
        .expect("write config.yml");

        let mut registry = Registry {
            host,
            port,
            ca_pem,
            cert_dir,
            username,
            password,
            storage,
            docker_config_dir,
            access_log: root.join("access.log"),
            app_log: root.join("registry.log"),
            config,
            binary,
            home,
            policy,
            child: None,
            dir,
        };
        registry.launch();
        registry
    }

    /// Starts the child on the configured port and waits until it accepts connections.
    fn launch(&mut self) {
        let open = |path: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open a registry log")
        };
        let child = Command::new(&self.binary)
            .arg("serve")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .env_remove("REGISTRY_HTTP_ADDR")
            .stdin(Stdio::null())
            .stdout(open(&self.access_log))
            .stderr(open(&self.app_log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + BOOT_LIMIT;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "docker-registry exited ({status}) while starting on {}:\n{}",
                        self.host,
                        self.log_tail()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {} within {BOOT_LIMIT:?}:\n{}",
                self.host,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the registry's own log, for failure messages.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.app_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills the registry (a registry that dies); storage and logs stay.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same storage, CA and users (stopping it
    /// first if it runs).
    pub(crate) fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Whether the child process is alive.
    pub(crate) fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The access log, once it has stopped growing: the registry writes a request's line just
    /// after answering it, so a client can be done before its last line is there.
    fn settled_access_log(&self) -> String {
        let mut last = std::fs::read_to_string(&self.access_log).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = std::fs::read_to_string(&self.access_log).unwrap_or_default();
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    /// Every request the registry answered, in order: (method, path with query, status),
    /// from its access log (all runs since [`Registry::start`]).
    pub(crate) fn requests(&self) -> Vec<(String, String, u16)> {
        self.settled_access_log()
            .lines()
            .filter_map(parse_access_line)
            .collect()
    }

    /// The digests of blobs whose upload completed, in order, one entry per completed upload:
    /// `PUT …/blobs/uploads/<id>?digest=…` answered 201, a monolithic
    /// `POST …/blobs/uploads/?digest=…` answered 201, and a cross-repository mount
    /// `POST …/blobs/uploads/?mount=<digest>&from=…` answered 201. A digest that appears twice
    /// was uploaded twice.
    pub(crate) fn uploads(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|(_, _, status)| *status == 201)
            .filter_map(|(method, path, _)| {
                let (route, query) = path.split_once('?')?;
                if !route.contains("/blobs/uploads/") {
                    return None;
                }
                let key = match method.as_str() {
                    "PUT" => "digest",
                    "POST" if query_value(query, "mount").is_some() => "mount",
                    "POST" => "digest",
                    _ => return None,
                };
                query_value(query, key)
            })
            .collect()
    }

    /// Where the registry keeps the bytes of blob `digest` (`sha256:<hex>`):
    /// `docker/registry/v2/blobs/sha256/<hex[..2]>/<hex>/data` under the storage root.
    pub(crate) fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// A command for a judge with a private home: only this registry's CA and credentials
    /// are known to it.
    fn judge(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env("HOME", &self.home)
            .env("DOCKER_CONFIG", &self.docker_config_dir)
            .env(
                "REGISTRY_AUTH_FILE",
                self.docker_config_dir.join("config.json"),
            )
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("SSL_CERT_FILE")
            .env_remove("ORAS_USER")
            .env_remove("ORAS_PASS")
            .stdin(Stdio::null());
        command
    }

    fn auth_file(&self) -> PathBuf {
        self.docker_config_dir.join("config.json")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a judge; its output when it succeeded, else panics with its stderr.
fn run_judge(mut command: Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// One line of the combined log format:
/// `127.0.0.1 - - [date] "PUT /v2/…?digest=… HTTP/1.1" 201 0 "referer" "agent"`.
fn parse_access_line(line: &str) -> Option<(String, String, u16)> {
    let start = line.find('"')?;
    let rest = &line[start + 1..];
    let end = rest.find('"')?;
    let mut request = rest[..end].split(' ');
    let method = request.next()?.to_owned();
    let path = request.next()?.to_owned();
    let status = rest[end + 1..].split_whitespace().next()?.parse().ok()?;
    Some((method, path, status))
}

/// The (percent-decoded) value of `key` in a query string.
fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&value[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64 with padding (RFC 4648), for the `auth` field of a Docker config.
pub(crate) fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `2 * bytes` random hex characters (from the standard library's per-process random keys).
fn random_hex(bytes: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < bytes * 2 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_usize(out.len());
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out.truncate(bytes * 2);
    out
}

// ---------------------------------------------------------------------------------------
// oras-py
// ---------------------------------------------------------------------------------------

/// The script behind [`oras_pull`] and [`oras_push`]: oras-py's `Registry` over HTTPS trusting
/// only the test CA (`tls_verify` = the CA file), with basic auth read from the Docker config
/// the harness wrote (`config_path`). Prints JSON on stdout.
const ORAS_SCRIPT: &str = r#"
import json, sys
import oras.provider
op, host, ref, ca, config, arg = sys.argv[1:7]
reg = oras.provider.Registry(hostname=host, tls_verify=ca, auth_backend="basic")
if op == "pull":
    files = reg.pull(target=ref, config_path=config, outdir=arg)
    print(json.dumps(files))
else:
    spec = json.loads(arg)
    response = reg.push(
        target=ref,
        config_path=config,
        files=[path + ":" + media_type for path, media_type in spec["files"]],
        annotation_file=spec["annotation_file"],
        manifest_annotations=spec["annotations"] or None,
        quiet=True,
    )
    print(json.dumps({"status": response.status_code,
                      "digest": response.headers.get("Docker-Content-Digest")}))
"#;

/// Pulls `reference` (`{host}/repo:tag`) with oras-py into `outdir`; the files it wrote.
///
/// How oras-py names pulled files (oras 0.2.x, `Registry.pull`): each layer is written to
/// `outdir/<org.opencontainers.image.title>` (parent folders created; a title that resolves
/// outside `outdir` is refused); a layer without a title is written under its digest
/// (`outdir/sha256:<hex>`). A layer of media type `application/vnd.oci.image.layer.v1.tar+gzip`
/// is not written as a file but extracted into the folder that holds `outdir/<title>` (oras's
/// convention for a pushed directory). oras-py does not check a pulled blob's digest or size:
/// the tests hash the files themselves. It retries a request that fails to connect, sleeping
/// 3, 5, 11, 29 and 83 seconds: pull from a registry that is up.
pub(crate) fn oras_pull(reg: &Registry, reference: &str, outdir: &Path) -> Vec<PathBuf> {
    let python = Tool::Oras.locate().unwrap_or_else(|e| panic!("{e}"));
    let mut command = reg.judge(&python);
    command
        .arg("-c")
        .arg(ORAS_SCRIPT)
        .arg("pull")
        .arg(&reg.host)
        .arg(reference)
        .arg(&reg.ca_pem)
        .arg(reg.auth_file())
        .arg(outdir);
    let output = run_judge(command, &format!("oras-py pull {reference}"));
    let files: Vec<String> = serde_json::from_slice(last_line(&output.stdout))
        .unwrap_or_else(|e| panic!("oras-py pull printed no file list ({e})"));
    files.into_iter().map(PathBuf::from).collect()
}

/// Pushes `files` (paths relative to `dir`, each with its layer media type) to `reference`
/// with oras-py, with `annotations` on the manifest; the manifest digest the registry
/// answered.
///
/// oras-py by itself titles a layer with the file's basename (`os.path.basename`), which would
/// lose the folders of nested paths; this wrapper sets `org.opencontainers.image.title` to the
/// path relative to `dir` (as the Go `oras push` CLI does) through oras-py's annotation file.
/// oras-py asks `HEAD` for each blob first and uploads only the ones the registry lacks in
/// that repository (one `POST` + `PUT ?digest=`; it never offers a cross-repository mount);
/// the config is the empty `{}` with media type `application/vnd.unknown.config.v1+json`. With
/// basic auth it sends every request without credentials first and repeats it after the 401,
/// so [`Registry::requests`] shows a 401 before each of its requests.
pub(crate) fn oras_push(
    reg: &Registry,
    reference: &str,
    dir: &Path,
    files: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> String {
    let python = Tool::Oras.locate().unwrap_or_else(|e| panic!("{e}"));
    let titles: serde_json::Map<String, serde_json::Value> = files
        .iter()
        .map(|(path, _)| {
            (
                (*path).to_owned(),
                serde_json::json!({ "org.opencontainers.image.title": path }),
            )
        })
        .collect();
    let annotation_file = reg
        .dir
        .path()
        .join(format!("oras-annotations-{}.json", random_hex(4)));
    std::fs::write(
        &annotation_file,
        serde_json::Value::Object(titles).to_string(),
    )
    .expect("write the oras annotation file");
    let manifest_annotations: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
        .collect();
    let spec = serde_json::json!({
        "files": files,
        "annotation_file": annotation_file,
        "annotations": manifest_annotations,
    });
    let mut command = reg.judge(&python);
    command
        .current_dir(dir)
        .arg("-c")
        .arg(ORAS_SCRIPT)
        .arg("push")
        .arg(&reg.host)
        .arg(reference)
        .arg(&reg.ca_pem)
        .arg(reg.auth_file())
        .arg(spec.to_string());
    let output = run_judge(command, &format!("oras-py push {reference}"));
    let answer: serde_json::Value = serde_json::from_slice(last_line(&output.stdout))
        .unwrap_or_else(|e| panic!("oras-py push printed no answer ({e})"));
    assert_eq!(answer["status"], 201, "manifest PUT answered {answer}");
    answer["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no Docker-Content-Digest in {answer}"))
        .to_owned()
}

/// The last non-empty line of a judge's stdout (libraries may print before it).
fn last_line(stdout: &[u8]) -> &[u8] {
    stdout
        .split(|b| *b == b'\n')
        .rev()
        .find(|line| !line.iter().all(u8::is_ascii_whitespace))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// skopeo and umoci
// ---------------------------------------------------------------------------------------

/// `skopeo` with the registry's CA (`--cert-dir`) and credentials (`--authfile`, the Docker
/// config the harness wrote; the password never appears on a command line).
fn skopeo(reg: &Registry) -> Command {
    let skopeo = Tool::Skopeo.locate().unwrap_or_else(|e| panic!("{e}"));
    let mut command = reg.judge(&skopeo);
    command.arg("--policy").arg(&reg.policy);
    command
}

/// The manifest of `reference` (`{host}/repo:tag` or `@sha256:…`) as the registry serves it
/// (`skopeo inspect --raw`).
pub(crate) fn skopeo_inspect_raw(reg: &Registry, reference: &str) -> serde_json::Value {
    let mut command = skopeo(reg);
    command
        .args(["inspect", "--raw", "--cert-dir"])
        .arg(&reg.cert_dir)
        .arg("--authfile")
        .arg(reg.auth_file())
        .arg(format!("docker://{reference}"));
    let output = run_judge(command, &format!("skopeo inspect --raw {reference}"));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("skopeo printed a manifest that is not JSON: {e}"))
}

/// The config blob of `reference`, raw (`skopeo inspect --raw --config`).
pub(crate) fn skopeo_config(reg: &Registry, reference: &str) -> serde_json::Value {
    let mut command = skopeo(reg);
    command
        .args(["inspect", "--raw", "--config", "--cert-dir"])
        .arg(&reg.cert_dir)
        .arg("--authfile")
        .arg(reg.auth_file())
        .arg(format!("docker://{reference}"));
    let output = run_judge(command, &format!("skopeo inspect --config {reference}"));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("skopeo printed a config that is not JSON: {e}"))
}

/// Copies `reference` from the registry into the OCI image layout `dir` under `tag`
/// (`skopeo copy docker://… oci:dir:tag`).
pub(crate) fn skopeo_copy_to_oci_layout(reg: &Registry, reference: &str, dir: &Path, tag: &str) {
    let mut command = skopeo(reg);
    command
        .args(["copy", "--quiet", "--src-cert-dir"])
        .arg(&reg.cert_dir)
        .arg("--src-authfile")
        .arg(reg.auth_file())
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:{tag}", dir.display()));
    run_judge(
        command,
        &format!("skopeo copy {reference} to {}", dir.display()),
    );
}

/// Copies the image `tag` of the OCI layout `dir` to `reference` in the registry
/// (`skopeo copy oci:dir:tag docker://…`), to put an image made with umoci there.
pub(crate) fn skopeo_copy_from_oci_layout(reg: &Registry, dir: &Path, tag: &str, reference: &str) {
    let mut command = skopeo(reg);
    command
        .args(["copy", "--quiet", "--dest-cert-dir"])
        .arg(&reg.cert_dir)
        .arg("--dest-authfile")
        .arg(reg.auth_file())
        .arg(format!("oci:{}:{tag}", dir.display()))
        .arg(format!("docker://{reference}"));
    run_judge(
        command,
        &format!("skopeo copy {} to {reference}", dir.display()),
    );
}

/// `umoci` itself, for tests that build an image (`init`, `new`, `insert`).
pub(crate) fn umoci(args: &[&std::ffi::OsStr]) -> Output {
    let umoci = Tool::Umoci.locate().unwrap_or_else(|e| panic!("{e}"));
    let mut command = Command::new(&umoci);
    command.args(args).stdin(Stdio::null());
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    run_judge(command, &format!("umoci {}", shown.join(" ")))
}

/// Unpacks image `tag` of the OCI layout `oci_dir` into the runtime bundle `bundle`
/// (`umoci unpack --rootless --image dir:tag bundle`); returns `bundle/rootfs`.
pub(crate) fn umoci_unpack(oci_dir: &Path, tag: &str, bundle: &Path) -> PathBuf {
    let image = format!("{}:{tag}", oci_dir.display());
    umoci(&[
        "unpack".as_ref(),
        "--rootless".as_ref(),
        "--image".as_ref(),
        image.as_ref(),
        bundle.as_os_str(),
    ]);
    let rootfs = bundle.join("rootfs");
    assert!(rootfs.is_dir(), "umoci unpack made no {}", rootfs.display());
    rootfs
}
