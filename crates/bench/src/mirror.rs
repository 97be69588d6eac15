//! The warm-mirror measurement: one Garage node (an S3-compatible object store) on
//! loopback, filled by a pull-through `cg-models ensure --mirror-write`, then nodes with a
//! fresh cache reading from it against nodes with a fresh cache going to the emulated Hub.
//!
//! The Garage harness is a trimmed copy of the one in
//! `crates/context-graph-embeddings/tests/mirror.rs` (one node, readiness checked with the
//! garage CLI and a plain HTTP request instead of an S3 client).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hub_emulator::Host;

use crate::bench::Bench;
use crate::contenders::{check_outputs, Contender};
use crate::emulator::{FileSpec, Served};
use crate::process::{self, Job};
use crate::results::{median, num, secs, table, Row, Sample, MB};

/// Bucket the mirror lives in.
pub(crate) const BUCKET: &str = "cg-bench";
/// Key prefix of the mirror inside the bucket.
pub(crate) const PREFIX: &str = "models";
/// Garage's S3 region.
const REGION: &str = "garage";
/// Name of the access key created for the benchmark.
const KEY_NAME: &str = "cg-bench";
/// How long any one step of bringing the node up may take.
const BOOT_LIMIT: Duration = Duration::from_secs(60);

/// The Garage binary: `CG_TEST_GARAGE`, else `garage` on `PATH`, else `~/.cargo/bin/garage`;
/// `Err` says why there is none.
pub(crate) fn garage_binary() -> std::result::Result<PathBuf, String> {
    let configured = std::env::var_os("CG_TEST_GARAGE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let found = configured.or_else(|| process::which("garage")).or_else(|| {
        std::env::var_os("HOME")
            .map(|home| Path::new(&home).join(".cargo/bin/garage"))
            .filter(|path| path.is_file())
    });
    let Some(path) = found else {
        return Err(
            "Garage not found (neither CG_TEST_GARAGE nor `garage` on PATH nor ~/.cargo/bin/garage); \
             install it with scripts/install-garage"
                .to_owned(),
        );
    };
    let works = Command::new(&path)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        Ok(path)
    } else {
        Err(format!(
            "Garage not usable: `{} --version` failed",
            path.display()
        ))
    }
}

/// One Garage node on loopback with one bucket and one key that may read and write it.
/// The node is killed when this is dropped.
pub(crate) struct Garage {
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    s3_port: u16,
    child: Option<Child>,
    /// Access key id of the bucket's key.
    pub key_id: String,
    /// Its secret.
    pub secret: String,
    _dir: tempfile::TempDir,
}

impl Garage {
    /// Starts a node with its data in a temporary directory under `parent` and waits until
    /// its S3 API answers; a node that dies while booting (a port taken meanwhile) makes it
    /// start over, at most three times.
    pub(crate) fn start(binary: &Path, parent: &Path) -> Result<Garage> {
        let mut last = anyhow!("not started");
        for _ in 0..3 {
            match Self::try_start(binary, parent) {
                Ok(garage) => return Ok(garage),
                Err(error) => {
                    eprintln!("cg-bench: garage did not come up, retrying: {error:#}");
                    last = error;
                }
            }
        }
        Err(last.context("garage did not come up"))
    }

    fn try_start(binary: &Path, parent: &Path) -> Result<Garage> {
        let dir = tempfile::Builder::new()
            .prefix("garage-")
            .tempdir_in(parent)?;
        let home = dir.path();
        let (s3_port, rpc_port) = free_ports()?;
        let rpc_secret: String = {
            use sha2::{Digest, Sha256};
            format!(
                "{:x}",
                Sha256::digest(format!("{home:?}{s3_port}").as_bytes())
            )
        };
        let config = home.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{home}/meta"
data_dir = "{home}/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{rpc_secret}"
bootstrap_peers = []

[s3_api]
api_bind_addr = "127.0.0.1:{s3_port}"
s3_region = "{REGION}"
"#,
                home = home.display(),
            ),
        )?;
        let log = home.join("garage.log");
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut garage = Garage {
            binary: binary.to_path_buf(),
            config,
            log,
            s3_port,
            child: Some(child),
            key_id: String::new(),
            secret: String::new(),
            _dir: dir,
        };
        garage.wait_for("answers", |g| g.run(&["status"]).map(|_| ()))?;
        let id = garage.run(&["node", "id", "-q"])?;
        let id = id.trim().split('@').next().unwrap_or_default().to_owned();
        garage.run(&["layout", "assign", "-z", "dc1", "-c", "1G", &id])?;
        garage.run(&["layout", "apply", "--version", "1"])?;
        garage.wait_for("is healthy", |g| {
            let text = g.run(&["json-api", "GetClusterHealth"])?;
            let health: serde_json::Value = serde_json::from_str(&text)?;
            if health["status"] == "healthy" {
                Ok(())
            } else {
                bail!("health: {health}")
            }
        })?;
        let key: serde_json::Value = serde_json::from_str(&garage.run(&[
            "json-api",
            "CreateKey",
            &format!(r#"{{"name":"{KEY_NAME}"}}"#),
        ])?)
        .context("CreateKey answered no JSON")?;
        garage.key_id = key["accessKeyId"].as_str().unwrap_or_default().to_owned();
        garage.secret = key["secretAccessKey"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if garage.key_id.is_empty() || garage.secret.is_empty() {
            bail!("CreateKey returned no key: {key}");
        }
        garage.run(&["bucket", "create", BUCKET])?;
        garage.run(&[
            "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", KEY_NAME,
        ])?;
        garage.wait_for("serves S3", |g| g.s3_answers())?;
        Ok(garage)
    }

    /// Retries `check` until it passes, at most [`BOOT_LIMIT`]; fails at once when the node
    /// process has exited.
    fn wait_for(&mut self, what: &str, check: impl Fn(&Garage) -> Result<()>) -> Result<()> {
        let deadline = Instant::now() + BOOT_LIMIT;
        loop {
            let Err(error) = check(self) else {
                return Ok(());
            };
            if !self.is_running() {
                bail!(
                    "garage exited while waiting until it {what}: {error:#}\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "garage never {what} within {BOOT_LIMIT:?}: {error:#}\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs the garage CLI against the node; its standard output, or what went wrong.
    fn run(&self, args: &[&str]) -> Result<String> {
        let output = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .context("running garage")?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            bail!(
                "`garage {}`: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        }
    }

    /// Whether the S3 API answers an (unsigned) HTTP request with an HTTP status line.
    fn s3_answers(&self) -> Result<()> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.s3_port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            stream,
            "GET /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.s3_port
        )?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        if head.starts_with(b"HTTP/1.") {
            Ok(())
        } else {
            bail!("not HTTP: {:?}", String::from_utf8_lossy(&head))
        }
    }

    fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn log_tail(&self) -> String {
        process::tail(&self.log, 10)
    }

    /// The S3 endpoint.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The environment `cg-models` reads the store's endpoint, region and key from.
    pub(crate) fn env(&self, job: Job) -> Job {
        job.env("AWS_ENDPOINT_URL", self.endpoint())
            .env("AWS_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
    }

    /// Objects and bytes stored in the bucket (`garage bucket info`), as Garage words it.
    pub(crate) fn bucket_summary(&self) -> Option<String> {
        let text = self.run(&["bucket", "info", BUCKET]).ok()?;
        let pick = |word: &str| {
            text.lines()
                .find(|l| l.trim_start().to_ascii_lowercase().starts_with(word))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        };
        let parts: Vec<String> = [pick("size"), pick("objects")]
            .into_iter()
            .flatten()
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Two loopback ports free right now (held together, so they are distinct).
fn free_ports() -> Result<(u16, u16)> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// What the Hub emulator served one node, from its request log.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HubTraffic {
    /// Body bytes of `GET` answers 200/206 from the CDN host (the blobs).
    pub blob_bytes: u64,
    /// Requests to the Hub host (resolve URLs, API), any method.
    pub hub_requests: usize,
    /// Of which `HEAD`.
    pub heads: usize,
}

impl HubTraffic {
    /// The traffic in the emulator's log since it was last cleared.
    pub(crate) fn read(served: &Served) -> Self {
        let mut traffic = HubTraffic::default();
        for r in served.hub.requests() {
            match r.host {
                Host::Cdn => {
                    if r.method.eq_ignore_ascii_case("GET") && matches!(r.status, 200 | 206) {
                        traffic.blob_bytes += r.body_bytes_sent;
                    }
                }
                Host::Hub => {
                    traffic.hub_requests += 1;
                    if r.method.eq_ignore_ascii_case("HEAD") {
                        traffic.heads += 1;
                    }
                }
            }
        }
        traffic
    }
}

/// The runs of one kind of node.
#[derive(Debug, Clone)]
pub(crate) struct MirrorNode {
    /// Name, wall times, failures, command.
    pub row: Row,
    /// Hub traffic per successful run.
    pub traffic: Vec<HubTraffic>,
}

impl MirrorNode {
    fn new(name: &str, unavailable: Option<String>) -> Self {
        MirrorNode {
            row: Row::new(name, unavailable),
            traffic: Vec::new(),
        }
    }

    fn median_of(&self, f: impl Fn(&HubTraffic) -> f64) -> Option<f64> {
        median(self.traffic.iter().map(f).collect())
    }
}

/// The warm-mirror measurement.
#[derive(Debug, Clone, Default)]
pub(crate) struct MirrorReport {
    /// Why it was not measured (Garage missing or not starting).
    pub unavailable: Option<String>,
    /// `garage --version`.
    pub garage_version: Option<String>,
    /// Files every node ensures.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// Entries of the manifest without a pinned hash.
    pub unpinned: Vec<String>,
    /// Node A (fills the store), the warm-store node, the Hub node.
    pub nodes: Vec<MirrorNode>,
    /// What `garage bucket info` said after node A.
    pub bucket: Option<String>,
}

/// Name of node A in the table.
const FILL: &str = "node A: fresh cache, empty store, `--mirror-write` (fills it)";
/// Name of the warm-store node.
const WARM: &str = "fresh cache + warm store (`--mirror`)";
/// Name of the Hub node.
const HUB: &str = "fresh cache, Hub only (no mirror)";

impl Bench {
    /// The warm-mirror measurement with a Garage node at `garage`.
    pub(crate) fn mirror(&self, served: &Served, garage: &Garage) -> Result<MirrorReport> {
        let files: Vec<&FileSpec> = served.files.iter().collect();
        let mirror_url = format!("s3://{BUCKET}/{PREFIX}");
        let unavailable = self.tools.unavailable(Contender::Ours);
        let mut report = MirrorReport {
            files: files.len(),
            bytes: served.total_bytes(),
            nodes: vec![
                MirrorNode::new(FILL, unavailable.clone()),
                MirrorNode::new(WARM, unavailable.clone()),
                MirrorNode::new(HUB, unavailable.clone()),
            ],
            ..MirrorReport::default()
        };
        report.unpinned = unpinned(served, &files);
        if unavailable.is_some() {
            return Ok(report);
        }
        let job_for = |kind: usize, dir: &Path| -> Result<Job> {
            let job = self
                .tools
                .cg_models(served, &dir.join("cache"))
                .context("cg-models")?
                .arg("--quiet");
            Ok(match kind {
                0 => garage
                    .env(job)
                    .arg("--mirror")
                    .arg(&mirror_url)
                    .arg("--mirror-write")
                    .arg("ensure"),
                1 => garage
                    .env(job)
                    .arg("--mirror")
                    .arg(&mirror_url)
                    .arg("ensure"),
                _ => job.arg("ensure"),
            })
        };
        let once = |kind: usize, label: &str, nodes: &mut Vec<MirrorNode>| -> Result<()> {
            let dir = tempfile::Builder::new()
                .prefix("mirror-")
                .tempdir_in(&self.work)?;
            let job = job_for(kind, dir.path())?;
            let node = &mut nodes[kind];
            node.row.command = Some(job.display(&[
                (&garage.secret, "$SECRET"),
                (&garage.key_id, "$KEY_ID"),
                (&garage.endpoint(), "http://127.0.0.1:$S3_PORT"),
                (&dir.path().to_string_lossy(), "$DIR"),
                (&self.work.to_string_lossy(), "$WORK"),
            ]));
            process::settle_disk();
            served.hub.clear_requests();
            let finished = process::run(&job, None, self.timeout, &self.work)?;
            let traffic = HubTraffic::read(served);
            let problem = if finished.success {
                check_outputs(Contender::Ours, &files, dir.path())
            } else {
                Some(finished.detail.clone())
            };
            match problem {
                None => {
                    eprintln!(
                        "cg-bench: mirror: {label:<8} {:>8.3} s, {:>8.1} MB of blobs from the Hub, {} Hub requests ({} HEAD)",
                        finished.wall.as_secs_f64(),
                        traffic.blob_bytes as f64 / MB,
                        traffic.hub_requests,
                        traffic.heads
                    );
                    node.row.samples.push(Sample {
                        wall: finished.wall,
                        peak_rss_kib: None,
                        cpu: None,
                        requests: None,
                    });
                    node.traffic.push(traffic);
                }
                Some(problem) => {
                    eprintln!("cg-bench: mirror: {label} failed: {problem}");
                    node.row.failures.push(problem);
                }
            }
            Ok(())
        };
        once(0, "node A", &mut report.nodes)?;
        if report.nodes[0].row.samples.is_empty() {
            let why = report.nodes[0]
                .row
                .failures
                .first()
                .cloned()
                .unwrap_or_default();
            for node in &mut report.nodes[1..] {
                node.row.unavailable = Some("node A did not fill the store".to_owned());
            }
            report.unavailable = Some(format!("node A failed: {why}"));
            return Ok(report);
        }
        report.bucket = garage.bucket_summary();
        for run in 0..self.runs {
            let order = if run % 2 == 0 { [1, 2] } else { [2, 1] };
            for kind in order {
                once(
                    kind,
                    if kind == 1 { "warm" } else { "hub" },
                    &mut report.nodes,
                )?;
            }
        }
        Ok(report)
    }
}

/// Model ids of `files` whose manifest entry has no pinned `sha256`.
fn unpinned(served: &Served, files: &[&FileSpec]) -> Vec<String> {
    let manifest: serde_json::Value = std::fs::read_to_string(&served.manifest_path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    let entries = manifest.as_array().cloned().unwrap_or_default();
    files
        .iter()
        .filter(|f| {
            entries.iter().any(|e| {
                e["model_id"].as_str() == Some(f.model_id.as_str()) && e["sha256"].is_null()
            })
        })
        .map(|f| f.model_id.clone())
        .collect()
}

/// The BENCHMARKS.md section.
pub(crate) fn render(report: &MirrorReport, runs: usize) -> String {
    let mut out = String::from("### Per-node time with a warm mirror\n\n");
    if let Some(why) = &report.unavailable {
        if report.nodes.is_empty() {
            out.push_str(&format!("Not measured: {why}.\n"));
            return out;
        }
        out.push_str(&format!("Incomplete: {why}.\n\n"));
    }
    out.push_str(&format!(
        "One Garage node{} on loopback (replication factor 1, LMDB metadata, data in the \
         harness's scratch directory) with bucket `{BUCKET}` and one key; the mirror is \
         `s3://{BUCKET}/{PREFIX}`. Node A runs `cg-models ensure` of all {} files ({:.0} MB) with \
         a fresh cache and `--mirror-write`, filling the store from the emulated Hub (pull-through, \
         once). Then, {runs} times, alternating which goes first: a node with a fresh cache and the \
         warm store (`--mirror`, no write), and a node with a fresh cache going to the emulated \
         Hub (no mirror). Wall time is spawn to exit of `cg-models`; every run is checked \
         afterwards (all files in place with the right SHA-256). \"Blobs from the Hub\" = body \
         bytes of `GET` answers 200/206 the emulator's CDN host sent during the run; \"Hub \
         requests\" = requests to the Hub host (resolve URLs, API), from the same log. Entries the \
         manifest leaves unpinned have no hash to look up in the store without asking the Hub \
         first, so they may still `HEAD` the Hub.{}\n\n",
        report
            .garage_version
            .as_deref()
            .map_or(String::new(), |v| format!(" ({v})")),
        report.files,
        report.bytes as f64 / MB,
        if report.unpinned.is_empty() {
            String::new()
        } else {
            format!(" Unpinned here: {}.", report.unpinned.join(", "))
        }
    ));
    let rows: Vec<Vec<String>> = report
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.row.name.clone(),
                n.row.runs_cell(),
                secs(n.row.median_wall()),
                n.row.range_cell(),
                num(n.row.throughput(report.bytes), 1),
                num(n.median_of(|t| t.blob_bytes as f64 / MB), 1),
                num(n.median_of(|t| t.hub_requests as f64), 0),
                num(n.median_of(|t| t.heads as f64), 0),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "node",
            "runs ok",
            "wall, median (s)",
            "wall, min–max (s)",
            "MB/s (median)",
            "blobs from the Hub (MB, median)",
            "Hub requests (median)",
            "of which HEAD",
        ],
        &rows,
    ));
    if let (Some(warm), Some(hub)) = (
        report.nodes.get(1).and_then(|n| n.row.median_wall()),
        report.nodes.get(2).and_then(|n| n.row.median_wall()),
    ) {
        out.push_str(&format!(
            "\nWarm store / Hub wall time: {:.2}× (no target; both are loopback, so this \
             compares the two code paths and servers, not a real network).\n",
            warm.as_secs_f64() / hub.as_secs_f64().max(1e-9)
        ));
    }
    if let Some(bucket) = &report.bucket {
        out.push_str(&format!(
            "\nBucket after node A (`garage bucket info`): {bucket}.\n"
        ));
    }
    let inner: Vec<Row> = report.nodes.iter().map(|n| n.row.clone()).collect();
    out.push_str(&crate::results::render_commands_and_failures(&inner));
    out.push_str(
        "\n`$S3_PORT`, `$KEY_ID`, `$SECRET`: the Garage node's S3 port and the key created for \
         the run.\n",
    );
    out
}
