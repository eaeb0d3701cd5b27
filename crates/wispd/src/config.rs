//! Daemon settings: command-line flags and `WISP_*` environment variables, over an optional
//! TOML or JSON file (`--config`), over built-in defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::Parser;
use serde::Deserialize;
use wisp_api::duration::parse_duration;
use wisp_runtime::config::Limits;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "wispd",
    version,
    about = "The Wisp daemon: the Sprites API for this host"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Optional TOML or JSON file with the same keys as the flags (data_dir, listen, ...).
    #[arg(long, env = "WISP_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Where state lives [default: /var/lib/wisp].
    #[arg(long, env = "WISP_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// HOST:PORT to serve the API on; port 0 picks a free port [default: 127.0.0.1:7575].
    #[arg(long, env = "WISP_LISTEN")]
    pub listen: Option<String>,
    /// Where base images are built [default: <data-dir>/images].
    #[arg(long, env = "WISP_IMAGE_DIR", global = true)]
    pub image_dir: Option<PathBuf>,
    /// The keeper binary [default: wisp-keeper next to wispd].
    #[arg(long, env = "WISP_KEEPER_BIN")]
    pub keeper_bin: Option<PathBuf>,
    /// Memory limit of each sprite in MiB [default: 2048].
    #[arg(long, env = "WISP_DEFAULT_MEMORY_MB")]
    pub default_memory_mb: Option<u64>,
    /// CPU limit of each sprite in CPUs, fractions allowed [default: 2].
    #[arg(long, env = "WISP_DEFAULT_CPUS")]
    pub default_cpus: Option<f64>,
    /// Maximum number of tasks in each sprite [default: 4096].
    #[arg(long, env = "WISP_DEFAULT_PIDS")]
    pub default_pids: Option<u64>,
    /// Disk quota of each sprite's writable layer in MiB [default: 20480].
    #[arg(long, env = "WISP_DEFAULT_DISK_MB")]
    pub default_disk_mb: Option<u64>,
    /// Size in GiB of the storage pool file made on first start when the data dir is not on
    /// btrfs [default: 100, or 90% of the free space if less]. Ignored once it exists.
    #[arg(long, env = "WISP_POOL_SIZE_GB")]
    pub pool_size_gb: Option<u64>,
    /// Memory in MiB that running and warm sprites may use together; beyond it the least
    /// recently active idle ones go cold. 0 disables [default: 75% of the host's memory].
    #[arg(long, env = "WISP_MEMORY_BUDGET_MB")]
    pub memory_budget_mb: Option<u64>,
    /// Base of sprite URLs: `http://localhost:7575` gives `http://NAME.localhost:7575`
    /// [default: http://localhost:<listen port>].
    #[arg(long, env = "WISP_URL_BASE")]
    pub url_base: Option<String>,
    /// Extra HOST:PORT serving sprite URLs only (the API listener serves them too)
    /// [default: none].
    #[arg(long, env = "WISP_INGRESS_LISTEN")]
    pub ingress_listen: Option<String>,
    /// PEM certificate chain: serve --ingress-listen over TLS (with --tls-key).
    #[arg(long, env = "WISP_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "WISP_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Use this existing root filesystem as the base image instead of building one.
    #[arg(long, env = "WISP_ROOTFS")]
    pub rootfs: Option<PathBuf>,
    /// Most sprites one organization may have running or warm at once; a create or a wake
    /// of a cold sprite beyond it gets 429. Per-org settings override it [default: unlimited].
    #[arg(long, env = "WISP_ORG_RUNNING_LIMIT")]
    pub org_running_limit: Option<u64>,
    /// Sprites one organization may create per --org-create-rate-window; beyond it 429.
    /// Per-org settings override it [default: unlimited].
    #[arg(long, env = "WISP_ORG_CREATE_RATE_LIMIT")]
    pub org_create_rate_limit: Option<u64>,
    /// The window of --org-create-rate-limit; Go-style duration, whole seconds [default: 1m].
    #[arg(long, env = "WISP_ORG_CREATE_RATE_WINDOW")]
    pub org_create_rate_window: Option<String>,
    /// A running sprite with nothing in flight for this long goes warm (frozen); Go-style
    /// duration (30s, 1m30s, 500ms); 0 disables [default: 30s].
    #[arg(long, env = "WISP_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// A warm sprite still idle this long after going warm goes cold (stopped); 0 disables
    /// [default: 10m].
    #[arg(long, env = "WISP_COLD_TIMEOUT")]
    pub cold_timeout: Option<String>,
    /// Give sprites only a loopback: no slots, NAT, resolver or egress policies.
    #[arg(long, env = "WISP_NO_NETWORK", value_parser = BoolishValueParser::new())]
    pub no_network: bool,
    /// Benchmark baseline only, never in production: run sprites without their user
    /// namespace, seccomp filter, reduced capabilities and /proc masks (root inside is then
    /// root on the host).
    #[arg(long, env = "WISP_NO_HARDENING", hide = true, value_parser = BoolishValueParser::new())]
    pub no_hardening: bool,
    /// Private IPv4 range sprite addresses come from, one /30 per sprite
    /// [default: 10.213.0.0/16].
    #[arg(long, env = "WISP_SPRITE_SUBNET")]
    pub sprite_subnet: Option<String>,
    /// Idle network slots kept ready so that starts do not wait for one [default: 4].
    #[arg(long, env = "WISP_NET_POOL_SIZE")]
    pub net_pool_size: Option<usize>,
    /// DNS servers the sprites' resolver forwards to, IP or IP:PORT, comma-separated
    /// [default: the nameservers of the host's /etc/resolv.conf].
    #[arg(long, env = "WISP_DNS_UPSTREAM", value_delimiter = ',')]
    pub dns_upstream: Option<Vec<String>>,
}

/// Subcommands; without one, wispd serves the API.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Manage base images.
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ImageCommand {
    /// Build the default Debian image now (with progress) unless it is already built.
    Build,
}

/// The `--config` file. Unknown keys are errors, so typos do not pass silently.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub image_dir: Option<PathBuf>,
    pub keeper_bin: Option<PathBuf>,
    pub default_memory_mb: Option<u64>,
    pub default_cpus: Option<f64>,
    pub default_pids: Option<u64>,
    pub default_disk_mb: Option<u64>,
    pub pool_size_gb: Option<u64>,
    pub memory_budget_mb: Option<u64>,
    pub url_base: Option<String>,
    pub ingress_listen: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub rootfs: Option<PathBuf>,
    pub idle_timeout: Option<String>,
    pub cold_timeout: Option<String>,
    pub org_running_limit: Option<u64>,
    pub org_create_rate_limit: Option<u64>,
    pub org_create_rate_window: Option<String>,
    /// `false`: like `--no-network`.
    pub network: Option<bool>,
    /// `false`: like `--no-hardening`.
    pub hardening: Option<bool>,
    pub sprite_subnet: Option<String>,
    pub net_pool_size: Option<usize>,
    pub dns_upstream: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Checked settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub listen: String,
    pub image_dir: PathBuf,
    pub keeper_bin: PathBuf,
    pub default_memory_mb: u64,
    pub default_cpus: f64,
    pub default_pids: u64,
    pub default_disk_mb: u64,
    pub pool_size_gb: Option<u64>,
    /// `None`: no memory budget.
    pub memory_budget_mb: Option<u64>,
    pub url_base: Option<String>,
    /// Extra listener for sprite URLs only.
    pub ingress_listen: Option<String>,
    /// TLS certificate and key (PEM) of the ingress listener.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub rootfs: Option<PathBuf>,
    /// Zero: never goes warm by itself.
    pub idle_timeout: Duration,
    /// Zero: never goes cold by itself.
    pub cold_timeout: Duration,
    /// Daemon-wide defaults of the per-org limits.
    pub org_limits: crate::tenancy::DefaultLimits,
    /// Per-sprite networking on.
    pub network: bool,
    /// User namespace, seccomp, capabilities and masks for every sprite (off only to measure
    /// their cost).
    pub hardening: bool,
    pub sprite_subnet: crate::network::Subnet,
    pub net_pool_size: usize,
    /// Empty: the host's resolv.conf nameservers, read at start.
    pub dns_upstreams: Vec<std::net::SocketAddr>,
}

pub const DEFAULT_DATA_DIR: &str = "/var/lib/wisp";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7575";
pub const DEFAULT_MEMORY_MB: u64 = 2048;
pub const DEFAULT_CPUS: f64 = 2.0;
pub const DEFAULT_PIDS: u64 = 4096;
pub const DEFAULT_DISK_MB: u64 = 20 * 1024;

/// 75% of `MemTotal`, or no budget when it cannot be read.
fn default_memory_budget_mb() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024 * 3 / 4)
}
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_COLD_TIMEOUT: Duration = Duration::from_secs(600);

fn duration_setting(
    key: &'static str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => parse_duration(&v).map_err(|e| ConfigError::Invalid {
            key,
            message: e.to_string(),
        }),
    }
}

impl FileConfig {
    /// Reads a config file: JSON when it ends in `.json`, TOML otherwise.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let parse_err = |message: String| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        };
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            serde_json::from_str(&text).map_err(|e| parse_err(e.to_string()))
        } else {
            toml::from_str(&text).map_err(|e| parse_err(e.to_string()))
        }
    }
}

impl Settings {
    /// Merges flags/env over the file over defaults, and checks the result. `exe_dir` is the
    /// directory of the running wispd (where `wisp-keeper` is looked for).
    pub fn resolve(args: Args, file: FileConfig, exe_dir: &Path) -> Result<Self, ConfigError> {
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let image_dir = args
            .image_dir
            .or(file.image_dir)
            .unwrap_or_else(|| data_dir.join("images"));
        let keeper_bin = args
            .keeper_bin
            .or(file.keeper_bin)
            .unwrap_or_else(|| exe_dir.join("wisp-keeper"));
        let network = !args.no_network && file.network.unwrap_or(true);
        let subnet_text = args
            .sprite_subnet
            .or(file.sprite_subnet)
            .unwrap_or_else(|| crate::network::DEFAULT_SUBNET.to_string());
        let sprite_subnet = subnet_text
            .parse()
            .map_err(|message| ConfigError::Invalid {
                key: "sprite_subnet",
                message,
            })?;
        let dns_upstreams = args
            .dns_upstream
            .or(file.dns_upstream)
            .unwrap_or_default()
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| crate::network::dns::parse_upstream(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| ConfigError::Invalid {
                key: "dns_upstream",
                message,
            })?;
        let org_limits = crate::tenancy::DefaultLimits {
            running: args.org_running_limit.or(file.org_running_limit),
            create_rate: args.org_create_rate_limit.or(file.org_create_rate_limit),
            create_window: duration_setting(
                "org_create_rate_window",
                args.org_create_rate_window.or(file.org_create_rate_window),
                crate::tenancy::limits::DEFAULT_CREATE_WINDOW,
            )?,
        };
        if org_limits.create_window < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                key: "org_create_rate_window",
                message: "must be at least 1s".into(),
            });
        }
        let s = Settings {
            org_limits,
            network,
            hardening: !args.no_hardening && file.hardening.unwrap_or(true),
            sprite_subnet,
            net_pool_size: args
                .net_pool_size
                .or(file.net_pool_size)
                .unwrap_or(crate::network::DEFAULT_POOL_SIZE),
            dns_upstreams,
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
            default_memory_mb: args
                .default_memory_mb
                .or(file.default_memory_mb)
                .unwrap_or(DEFAULT_MEMORY_MB),
            default_cpus: args
                .default_cpus
                .or(file.default_cpus)
                .unwrap_or(DEFAULT_CPUS),
            default_pids: args
                .default_pids
                .or(file.default_pids)
                .unwrap_or(DEFAULT_PIDS),
            default_disk_mb: args
                .default_disk_mb
                .or(file.default_disk_mb)
                .unwrap_or(DEFAULT_DISK_MB),
            pool_size_gb: args.pool_size_gb.or(file.pool_size_gb),
            memory_budget_mb: match args.memory_budget_mb.or(file.memory_budget_mb) {
                Some(0) => None,
                Some(mb) => Some(mb),
                None => default_memory_budget_mb(),
            },
            url_base: args.url_base.or(file.url_base),
            ingress_listen: args.ingress_listen.or(file.ingress_listen),
            tls_cert: args.tls_cert.or(file.tls_cert),
            tls_key: args.tls_key.or(file.tls_key),
            idle_timeout: duration_setting(
                "idle_timeout",
                args.idle_timeout.or(file.idle_timeout),
                DEFAULT_IDLE_TIMEOUT,
            )?,
            cold_timeout: duration_setting(
                "cold_timeout",
                args.cold_timeout.or(file.cold_timeout),
                DEFAULT_COLD_TIMEOUT,
            )?,
            rootfs: args.rootfs.or(file.rootfs),
            data_dir,
            image_dir,
            keeper_bin,
        };
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| ConfigError::Invalid {
            key,
            message: message.to_string(),
        };
        if self.listen.trim().is_empty() || !self.listen.contains(':') {
            return Err(invalid("listen", "expected HOST:PORT"));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid("tls_cert", "--tls-cert and --tls-key go together"));
        }
        if self.tls_cert.is_some() && self.ingress_listen.is_none() {
            return Err(invalid(
                "tls_cert",
                "TLS is for the sprite URL listener: also set --ingress-listen",
            ));
        }
        if self
            .ingress_listen
            .as_ref()
            .is_some_and(|l| l.trim().is_empty() || !l.contains(':'))
        {
            return Err(invalid("ingress_listen", "expected HOST:PORT"));
        }
        if self.default_memory_mb == 0 {
            return Err(invalid("default_memory_mb", "must be positive"));
        }
        if !(self.default_cpus.is_finite()
            && self.default_cpus > 0.0
            && self.default_cpus <= 4096.0)
        {
            return Err(invalid("default_cpus", "must be a positive number of CPUs"));
        }
        if self.default_pids == 0 {
            return Err(invalid("default_pids", "must be positive"));
        }
        if self.default_disk_mb == 0 {
            return Err(invalid("default_disk_mb", "must be positive"));
        }
        if self.pool_size_gb == Some(0) {
            return Err(invalid("pool_size_gb", "must be positive"));
        }
        // The data dir ends up in overlay mount options, where these separate values.
        let dir = self.data_dir.to_string_lossy();
        if dir.contains([',', ':']) {
            return Err(invalid("data_dir", "must not contain ',' or ':'"));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        Ok(())
    }

    /// Resource limits every sprite gets.
    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: Some(self.default_memory_mb.saturating_mul(1024 * 1024)),
            cpu_millis: Some((self.default_cpus * 1000.0).round() as u64),
            pids_max: Some(self.default_pids),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses flags only: the `WISP_*` variables of whoever runs the tests (scripts/test-all
    /// sets some) must not leak into the defaults under test.
    fn args(extra: &[&str]) -> Args {
        use clap::{CommandFactory, FromArgMatches};
        let mut v = vec!["wispd"];
        v.extend_from_slice(extra);
        let cmd = Args::command().mut_args(|a| a.env(None));
        Args::from_arg_matches(&cmd.try_get_matches_from(v).unwrap()).unwrap()
    }

    #[test]
    fn defaults() {
        let s =
            Settings::resolve(args(&[]), FileConfig::default(), Path::new("/opt/wisp")).unwrap();
        assert_eq!(s.data_dir, Path::new("/var/lib/wisp"));
        assert_eq!(s.image_dir, Path::new("/var/lib/wisp/images"));
        assert_eq!(s.keeper_bin, Path::new("/opt/wisp/wisp-keeper"));
        assert_eq!(s.listen, "127.0.0.1:7575");
        let l = s.limits();
        assert_eq!(l.memory_bytes, Some(2048 << 20));
        assert_eq!(l.cpu_millis, Some(2000));
        assert_eq!(l.pids_max, Some(4096));
        assert_eq!(s.idle_timeout, Duration::from_secs(30));
        assert_eq!(s.cold_timeout, Duration::from_secs(600));
        assert!(s.network);
        assert_eq!(s.sprite_subnet.to_string(), "10.213.0.0/16");
        assert_eq!(s.net_pool_size, 4);
        assert!(s.dns_upstreams.is_empty());
    }

    #[test]
    fn hardening_is_on_unless_turned_off() {
        let on = |a: &[&str], file: &str| {
            let file: FileConfig = toml::from_str(file).unwrap();
            Settings::resolve(args(a), file, Path::new("/"))
                .unwrap()
                .hardening
        };
        assert!(on(&[], ""));
        assert!(!on(&["--no-hardening"], ""));
        assert!(!on(&[], "hardening = false"));
    }

    #[test]
    fn network_settings() {
        let s = Settings::resolve(
            args(&[
                "--sprite-subnet",
                "10.99.0.0/24",
                "--net-pool-size",
                "0",
                "--dns-upstream",
                "127.0.0.1:5353,::1",
                "--no-network",
            ]),
            FileConfig::default(),
            Path::new("/"),
        )
        .unwrap();
        assert!(!s.network);
        assert_eq!(s.sprite_subnet.to_string(), "10.99.0.0/24");
        assert_eq!(s.net_pool_size, 0);
        assert_eq!(
            s.dns_upstreams,
            vec![
                "127.0.0.1:5353".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        let file: FileConfig = toml::from_str("network = false").unwrap();
        assert!(
            !Settings::resolve(args(&[]), file, Path::new("/"))
                .unwrap()
                .network
        );
        for bad in [
            &["--sprite-subnet", "10.0.0.1/16"][..],
            &["--dns-upstream", "resolver.example"],
        ] {
            assert!(
                Settings::resolve(args(bad), FileConfig::default(), Path::new("/")).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn idle_timeouts() {
        let file: FileConfig =
            toml::from_str("idle_timeout = \"1m30s\"\ncold_timeout = \"0\"\n").unwrap();
        let s = Settings::resolve(args(&[]), file.clone(), Path::new("/")).unwrap();
        assert_eq!(s.idle_timeout, Duration::from_secs(90));
        assert_eq!(s.cold_timeout, Duration::ZERO);
        let s =
            Settings::resolve(args(&["--idle-timeout", "500ms"]), file, Path::new("/")).unwrap();
        assert_eq!(s.idle_timeout, Duration::from_millis(500));
        let bad = Settings::resolve(
            args(&["--cold-timeout", "soon"]),
            FileConfig::default(),
            Path::new("/"),
        );
        assert!(
            matches!(
                bad,
                Err(ConfigError::Invalid {
                    key: "cold_timeout",
                    ..
                })
            ),
            "{bad:?}"
        );
    }

    #[test]
    fn flags_beat_file_beat_defaults() {
        let file: FileConfig = toml::from_str(
            "data_dir = \"/srv/wisp\"\nlisten = \"0.0.0.0:1\"\ndefault_cpus = 0.5\n",
        )
        .unwrap();
        let s =
            Settings::resolve(args(&["--listen", "127.0.0.1:0"]), file, Path::new("/x")).unwrap();
        assert_eq!(s.listen, "127.0.0.1:0");
        assert_eq!(s.data_dir, Path::new("/srv/wisp"));
        assert_eq!(s.image_dir, Path::new("/srv/wisp/images"));
        assert_eq!(s.limits().cpu_millis, Some(500));
    }

    #[test]
    fn files_in_both_formats_and_typos() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("c.json");
        std::fs::write(&json, r#"{"default_pids": 10, "rootfs": "/r"}"#).unwrap();
        let f = FileConfig::load(&json).unwrap();
        assert_eq!(f.default_pids, Some(10));
        assert_eq!(f.rootfs.as_deref(), Some(Path::new("/r")));
        let toml_path = dir.path().join("c.toml");
        std::fs::write(&toml_path, "default_memory_mb = 512\n").unwrap();
        assert_eq!(
            FileConfig::load(&toml_path).unwrap().default_memory_mb,
            Some(512)
        );
        std::fs::write(&toml_path, "memory = 512\n").unwrap();
        assert!(matches!(
            FileConfig::load(&toml_path),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            FileConfig::load(&dir.path().join("missing.toml")),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn org_limits() {
        let s = Settings::resolve(args(&[]), FileConfig::default(), Path::new("/")).unwrap();
        assert_eq!(s.org_limits, crate::tenancy::DefaultLimits::default());
        assert_eq!(s.org_limits.running, None);
        let s = Settings::resolve(
            args(&[
                "--org-running-limit",
                "3",
                "--org-create-rate-limit",
                "10",
                "--org-create-rate-window",
                "1h",
            ]),
            FileConfig::default(),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(s.org_limits.running, Some(3));
        assert_eq!(s.org_limits.create_rate, Some(10));
        assert_eq!(s.org_limits.create_window, Duration::from_secs(3600));
        let file: FileConfig = toml::from_str("org_running_limit = 2").unwrap();
        let s = Settings::resolve(args(&[]), file, Path::new("/")).unwrap();
        assert_eq!(s.org_limits.running, Some(2));
        for bad in ["0", "500ms", "soon"] {
            assert!(Settings::resolve(
                args(&["--org-create-rate-window", bad]),
                FileConfig::default(),
                Path::new("/")
            )
            .is_err());
        }
    }

    #[test]
    fn bad_values() {
        for bad in [
            &["--default-cpus", "0"][..],
            &["--default-cpus", "NaN"],
            &["--default-memory-mb", "0"],
            &["--default-pids", "0"],
            &["--listen", "nope"],
        ] {
            assert!(
                Settings::resolve(args(bad), FileConfig::default(), Path::new("/")).is_err(),
                "{bad:?}"
            );
        }
    }
}
