//! The command line: every command, option and help text, as clap derive types. Nothing here
//! runs anything; [`crate::commands`] does.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};
use context_graph_embeddings::ModelId;

use crate::size::parse_size;

const MAIN_EXAMPLES: &str = "\
Keeps the embedding pipeline's twelve models on disk, complete and verified (SHA-256), in the
Hugging Face cache shared with Python tools.

Examples:
  cg-models ensure                     Download and verify every missing model
  cg-models ensure Semantic E11        Only these two (names or E1..E12)
  cg-models status                     What is ready, what is missing (exit 1 if any is not)
  cg-models status --json              The same as newline-delimited JSON
  cg-models verify --repair            Re-hash every file; re-download corrupt ones
  cg-models gc --max-size 20GiB        Shrink the cache to 20 GiB, oldest unused files first
  cg-models lock --manifest models.json   Pin commits, hashes and sizes from the Hub
  cg-models outdated                   Which pins are behind their branch (exit 3 if any)
  cg-models export models.tar          Carry the verified files to an air-gapped site
  cg-models import models.tar          ... and place them there, every byte verified
  cg-models push oci://registry.example/models   Verified models into an OCI registry

Environment: HF_TOKEN, HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_HUB_OFFLINE,
HF_HUB_DOWNLOAD_TIMEOUT and NO_COLOR are honoured like the Hugging Face tools do.
Exit codes: 0 success, 1 some model not ready or a failure, 2 usage or configuration
error, 3 `outdated` found a stale pin, 130 interrupted (Ctrl-C; partial downloads are kept and resume next time).";

/// The whole command line: global options and one command.
#[derive(Debug, Parser)]
#[command(
    name = "cg-models",
    version,
    about = "Fetch, verify and manage the context-graph pipeline's model files",
    long_about = None,
    help_expected = true,
    after_help = MAIN_EXAMPLES,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts, before or after the command name.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub(crate) struct GlobalArgs {
    /// Model manifest to use instead of the built-in one.
    #[arg(long, global = true, value_name = "FILE")]
    pub manifest: Option<PathBuf>,

    /// Hugging Face hub cache [default: $HF_HUB_CACHE, else $HF_HOME/hub, else
    /// ~/.cache/huggingface/hub].
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Hub to download from [default: $HF_ENDPOINT, else https://huggingface.co].
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Hub token for gated or private repos [default: $HF_TOKEN, else the token file].
    /// Prefer HF_TOKEN or --token-file: other users can see command lines.
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,

    /// Read the Hub token from this file.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// PEM file of CA certificates to trust for the Hub, its CDN and the mirror, besides the
    /// system store and SSL_CERT_FILE / SSL_CERT_DIR (e.g. a TLS-inspecting proxy's CA)
    /// [default: $CG_MODELS_CA_BUNDLE].
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,

    /// Look for a model's files here before fetching them (repeatable): another cache root,
    /// a no-symlink cache, or an `hf download --local-dir` folder. Each file is copied in
    /// (a reflink where the file system offers one) and hashed against its expected digest;
    /// never trusted by name [default: $CG_MODELS_ADOPT, `:`-separated].
    #[arg(long = "adopt", global = true, value_name = "DIR")]
    pub adopt: Vec<PathBuf>,

    /// No network at all: answer from the cache only (also HF_HUB_OFFLINE=1).
    #[arg(long, global = true)]
    pub offline: bool,

    /// Content-addressed mirror tried before the Hub: an S3 bucket (s3://bucket/models) or an
    /// OCI registry repository (oci://HOST/REPO) [default: $CG_MODELS_MIRROR]. S3 credentials
    /// from AWS_* variables or ~/.aws/credentials, an S3-compatible store's address from
    /// AWS_ENDPOINT_URL; registry credentials as for `push`.
    #[arg(long, global = true, value_name = "URL")]
    pub mirror: Option<String>,

    /// Registry credentials file (`auths` as in ~/.docker/config.json), read before
    /// $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json and ~/.docker/config.json
    /// (also CG_MODELS_REGISTRY_USERNAME with CG_MODELS_REGISTRY_PASSWORD).
    #[arg(long, global = true, value_name = "FILE")]
    pub registry_auth_file: Option<PathBuf>,

    /// Upload files fetched from the Hub to the mirror once verified (pull-through)
    /// [default: $CG_MODELS_MIRROR_WRITE].
    #[arg(long, global = true, requires = "mirror")]
    pub mirror_write: bool,

    /// With --mirror-write: do not coordinate with other nodes missing the same file at once
    /// (by default one fetches it from the Hub and the others read its upload as it arrives)
    /// [default: coordinate; off with $CG_MODELS_MIRROR_FLEET=0 when the mirror is $CG_MODELS_MIRROR].
    #[arg(long, global = true, requires = "mirror")]
    pub no_mirror_fleet: bool,

    /// How many files download at once [default: 4].
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: Option<u16>,

    /// Keep the whole cache under this size, evicting least recently used files that the
    /// manifest does not need (e.g. 20GiB, 500MB, 1.5G).
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_size)]
    pub max_cache_size: Option<u64>,

    /// Give up on a connection after this many seconds without a byte (idle timeout, not a
    /// deadline) [default: $HF_HUB_DOWNLOAD_TIMEOUT, else 30].
    #[arg(long, global = true, value_name = "SECS", value_parser = parse_seconds)]
    pub timeout: Option<f64>,

    /// Retries of a failing transfer before giving up [default: 5].
    #[arg(long, global = true, value_name = "N")]
    pub retries: Option<u32>,

    /// Print only errors (and what a command exists to print, like `lock` without --output).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// More detail: configuration, every event, error causes (repeat for more).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// Newline-delimited JSON on stdout, one object per event, then a final report.
    #[arg(long, global = true)]
    pub json: bool,

    /// Write Prometheus metrics (text format) to this file while `ensure`, `verify` or
    /// `import` runs, rewritten atomically every --metrics-interval, for node_exporter's
    /// textfile collector (name it `*.prom`). Its folder must exist.
    #[arg(long, global = true, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// Seconds between two rewrites of --metrics-file [default: 5].
    #[arg(long, global = true, value_name = "SECS", value_parser = parse_seconds, requires = "metrics_file")]
    pub metrics_interval: Option<f64>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Download and verify every missing model, or only those named.
    #[command(
        visible_aliases = ["pull", "download"],
        after_help = "\
Examples:
  cg-models ensure                 Every model of the manifest
  cg-models ensure Semantic Entity Two models (names are case-insensitive)
  cg-models pull E1 E11            The same, by pipeline slot
  cg-models ensure --offline       Check the cache without touching the network

Files already present are hashed once and kept when right. Interrupted downloads resume.
Exits 0 only when every requested model is ready."
    )]
    Ensure(EnsureArgs),

    /// Show which models are ready, missing or broken (exit 1 if any is not ready).
    #[command(after_help = "\
Examples:
  cg-models status                 Table of every model
  cg-models status --json          One JSON report (for scripts and health checks)
  cg-models status -q && start-pipeline   Readiness check for a container
  cg-models status --files         Also one row per file of each model (also with -v)

A model is ready when every file of its set (weights, config, tokenizer, modules) is
verified. Files present but never verified here (e.g. downloaded by Python) are hashed once
first. Nothing is downloaded; no network is used.")]
    Status(StatusArgs),

    /// Re-hash every present file and report corrupt ones.
    #[command(after_help = "\
Examples:
  cg-models verify                 Re-hash everything present (uses all cores)
  cg-models verify --repair        Also re-download what is corrupt

Exits 1 when a corrupt or unverifiable file remains. Missing files are listed, not fixed
(that is `ensure`).")]
    Verify(VerifyArgs),

    /// Shrink the cache: evict least recently used files the manifest does not need.
    #[command(after_help = "\
Examples:
  cg-models gc --max-size 20GiB --dry-run   Show what would go
  cg-models gc --max-size 20GiB             Evict it
  cg-models gc --max-size 0 --include-manifest   Empty the whole cache

Sizes: bare letters and IEC units are powers of 1024 (20G = 20GiB), SI units with B are
powers of 1000 (500MB).")]
    Gc(GcArgs),

    /// Remove the cached files of this manifest's models (all, or those named).
    #[command(after_help = "\
Examples:
  cg-models clear Semantic         Remove one model's files (asks first)
  cg-models clear --yes            Remove every model of the manifest, no question

Only files of this manifest's models are touched; other repos in the cache stay.")]
    Clear(ClearArgs),

    /// Pin the manifest from the Hub: commits, SHA-256 hashes and sizes.
    #[command(after_help = "\
Examples:
  cg-models lock --manifest models.json          Fill unknown pins in place
  cg-models lock --output pinned.json            Pin the built-in manifest into a file
  cg-models lock --manifest models.json --force  Also accept values that changed

Branches become commits and unknown hashes and sizes are filled. A pinned value the Hub
contradicts is refused unless --force: the content of a commit never changes, so that
points at a wrong endpoint or a tampered mirror. Without --output the file given with
--manifest is rewritten; the built-in manifest is printed to stdout instead.")]
    Lock(LockArgs),

    /// Show which pins are behind the head of their branch on the Hub (exit 3 if any).
    #[command(after_help = "\
Examples:
  cg-models outdated --manifest models.json   Table of every model
  cg-models outdated Semantic --json          One model, as JSON
  cg-models outdated -q || notify-team        A CI gate

For each model, the head of the branch it follows (its revision when that is a branch,
else main) against the pinned commit, and for each file whether its SHA-256 or size
changed. Never moves a pin: `cg-models lock --upgrade` does.
Exit codes: 0 every pin is up to date, 3 some pin is behind or a file changed, 1 the Hub
could not be asked, 2 usage error.")]
    Outdated(OutdatedArgs),

    /// Write the verified files of the manifest (or of the named models) into one bundle.
    #[command(after_help = "\
Examples:
  cg-models export models.tar                 Every model of the manifest
  cg-models export entity.tar Entity          One model

The bundle is a tar archive: the locked manifest (manifest.json), an index of every file,
and the files under blobs/<sha256>. Every byte is hashed again while it is written. Carry it
to another machine and run `cg-models import` there.")]
    Export(ExportArgs),

    /// Import a bundle: verify every byte against the locked hashes, then place the files.
    #[command(after_help = "\
Examples:
  cg-models import models.tar --manifest models.json --offline

No network is used. Each file is streamed through SHA-256 into a temporary file and renamed
into the cache only when it matches; models are placed only once the whole bundle is
verified. A bundle made for another manifest, truncated, or altered is refused. Rerun an
interrupted import: verified files are kept and skipped.")]
    Import(ImportArgs),

    /// Push the verified files of the manifest (or of the named models) to an OCI registry.
    #[command(after_help = "\
Examples:
  cg-models push oci://registry.example/models            Each model as a ModelPack artifact
  cg-models push oci://registry.example/models/e5:v1 Semantic   One model, also tagged v1
  cg-models push --image oci://registry.example/cache:v1  One image that is a ready cache

Each model becomes an OCI artifact in the CNCF ModelPack layout (one raw layer per file, its
path in org.cncf.model.filepath), tagged <org>--<name>--<commit>: the tag a node with
--mirror oci://HOST/REPO reads it by. --image makes one regular image whose file system is a
Hugging Face cache holding every selected model: mount it at HF_HUB_CACHE (a Kubernetes
image volume, a modelcar) and it is ready offline. Blobs the registry has are not sent again.
Credentials: --registry-auth-file, $REGISTRY_AUTH_FILE, ~/.docker/config.json (also its
credential helpers), or CG_MODELS_REGISTRY_USERNAME and CG_MODELS_REGISTRY_PASSWORD.
See docs/oci.md.")]
    Push(PushArgs),
}

/// Options of `status`.
#[derive(Debug, Clone, Args)]
pub(crate) struct StatusArgs {
    /// Show one row per file of each model's set (path, state, size, expected digest).
    #[arg(long)]
    pub files: bool,
}

/// Arguments of `ensure`.
#[derive(Debug, Args)]
pub(crate) struct EnsureArgs {
    /// Models to fetch (e.g. Semantic, entity, E11) [default: every model of the manifest].
    #[arg(value_name = "MODEL")]
    pub models: Vec<ModelId>,
}

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Models to re-hash (e.g. Semantic, entity, E11) [default: every model of the manifest].
    #[arg(value_name = "MODEL")]
    pub models: Vec<ModelId>,

    /// Re-download files that fail verification.
    #[arg(long)]
    pub repair: bool,
}

/// Arguments of `gc`.
#[derive(Debug, Args)]
pub(crate) struct GcArgs {
    /// Target size of the whole cache (e.g. 20GiB) [default: --max-cache-size].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,

    /// Only show what would be removed.
    #[arg(long)]
    pub dry_run: bool,

    /// Also evict files the manifest needs (they are downloaded again by `ensure`).
    #[arg(long)]
    pub include_manifest: bool,
}

/// Arguments of `clear`.
#[derive(Debug, Args)]
pub(crate) struct ClearArgs {
    /// Models to remove [default: every model of the manifest].
    #[arg(value_name = "MODEL")]
    pub models: Vec<ModelId>,

    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(short = 'y', long)]
    pub yes: bool,
}

/// Arguments of `lock`.
#[derive(Debug, Args)]
pub(crate) struct LockArgs {
    /// Accept pinned values that differ from what the Hub says now.
    #[arg(long)]
    pub force: bool,

    /// Write the pinned manifest here instead of back to --manifest.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Move the pins of the named models (all when none is named) to the head of their
    /// branch, with the new hashes and sizes (see `cg-models outdated`).
    #[arg(long)]
    pub upgrade: bool,

    /// With --upgrade: only show what would change.
    #[arg(long, requires = "upgrade")]
    pub dry_run: bool,

    /// Models to upgrade (with --upgrade) [default: every model of the manifest].
    #[arg(value_name = "MODEL", requires = "upgrade")]
    pub models: Vec<ModelId>,
}

/// Arguments of `outdated`.
#[derive(Debug, Args)]
pub(crate) struct OutdatedArgs {
    /// Models to check [default: every model of the manifest].
    #[arg(value_name = "MODEL")]
    pub models: Vec<ModelId>,
}

/// Arguments of `export`.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The bundle to write (replaced atomically if it exists).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Models to export [default: every model of the manifest].
    #[arg(value_name = "MODEL")]
    pub models: Vec<ModelId>,
}

/// Arguments of `push`.
#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// Where to: oci://HOST[:PORT]/REPO[:TAG] (oci+http:// for a registry without TLS).
    #[arg(value_name = "oci://HOST/REPO[:TAG]")]
    pub target: String,

    /// Models to push [default: every model of the manifest].
    #[arg(value_name = "MODEL")]
    pub models: Vec<ModelId>,

    /// One image whose file system is a Hugging Face cache holding the models (needs a TAG).
    #[arg(long)]
    pub image: bool,
}

/// Arguments of `import`.
#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The bundle to import.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Parses a positive number of seconds (fractions allowed).
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e9 => Ok(secs),
        _ => Err(format!("`{text}` is not a positive number of seconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_before_or_after_the_command() {
        let before = Cli::try_parse_from(["cg-models", "--offline", "--json", "status"]).unwrap();
        let after = Cli::try_parse_from(["cg-models", "status", "--offline", "--json"]).unwrap();
        assert!(before.global.offline && before.global.json);
        assert!(after.global.offline && after.global.json);
    }

    #[test]
    fn models_sizes_and_aliases_parse() {
        let cli = Cli::try_parse_from(["cg-models", "pull", "semantic", "E11"]).unwrap();
        let Command::Ensure(args) = cli.command else {
            panic!("pull is ensure")
        };
        assert_eq!(args.models, [ModelId::Semantic, ModelId::Entity]);
        let cli = Cli::try_parse_from(["cg-models", "gc", "--max-size", "1.5G", "-vv"]).unwrap();
        let Command::Gc(args) = cli.command else {
            panic!("gc")
        };
        assert_eq!(args.max_size, Some(3 << 29));
        assert_eq!(cli.global.verbose, 2);
        assert!(Cli::try_parse_from(["cg-models", "ensure", "Nope"]).is_err());
        assert!(Cli::try_parse_from(["cg-models", "status", "--max-cache-size", "3XB"]).is_err());
        assert!(Cli::try_parse_from(["cg-models", "status", "-q", "-v"]).is_err());
        assert!(Cli::try_parse_from(["cg-models", "status", "--timeout", "0"]).is_err());
    }
}
