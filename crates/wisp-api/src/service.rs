//! Services (§3.8): the definition a client PUTs, the service object with its state, the
//! NDJSON log events of start/stop/restart/logs, the signal body, and the rules for service
//! names and signal names.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// `PUT .../services/{name}` body. `cmd` is one executable (searched in `PATH` when it has no
/// `/`), `args` its arguments. The JS SDK sends `httpPort`, the others `http_port`; both are
/// accepted. `null` reads as absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceRequest {
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub cmd: String,
    #[serde(default, deserialize_with = "null_default")]
    pub args: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub needs: Vec<String>,
    #[serde(default, alias = "httpPort", skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u32>,
    #[serde(default, deserialize_with = "null_default")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Most arguments, dependencies or environment entries one service may have.
pub const MAX_LIST: usize = 1024;
/// Longest single string (command, argument, variable, directory).
pub const MAX_STRING: usize = 64 * 1024;

impl ServiceRequest {
    /// Checks everything that does not depend on the other services of the sprite (unknown
    /// dependencies and cycles are the server's business).
    pub fn validate(&self) -> Result<(), String> {
        if self.cmd.trim().is_empty() {
            return Err("cmd is required".into());
        }
        let strings = std::iter::once(&self.cmd)
            .chain(&self.args)
            .chain(self.env.keys())
            .chain(self.env.values())
            .chain(&self.dir);
        for s in strings {
            if s.contains('\0') {
                return Err("strings may not contain NUL bytes".into());
            }
            if s.len() > MAX_STRING {
                return Err(format!("strings are limited to {MAX_STRING} bytes"));
            }
        }
        if self.args.len() > MAX_LIST || self.needs.len() > MAX_LIST || self.env.len() > MAX_LIST {
            return Err(format!(
                "args, needs and env are limited to {MAX_LIST} entries"
            ));
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') {
                return Err(format!("invalid environment variable name {k:?}"));
            }
        }
        if let Some(d) = &self.dir {
            if !d.starts_with('/') {
                return Err(format!("dir must be an absolute path, got {d:?}"));
            }
        }
        if let Some(p) = self.http_port {
            if !(1..=65535).contains(&p) {
                return Err(format!("http_port must be between 1 and 65535, got {p}"));
            }
        }
        for (i, n) in self.needs.iter().enumerate() {
            validate_service_name(n).map_err(|e| format!("needs: {e}"))?;
            if self.needs[..i].contains(n) {
                return Err(format!("needs lists {n:?} twice"));
            }
        }
        Ok(())
    }
}

/// What a service is doing.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ServiceStatus {
    /// Stopped on request (sticky: it stays stopped across wakes until started again).
    Stopped,
    /// Waiting for its dependencies, or being started.
    Starting,
    Running,
    /// Asked to stop; its process has not exited yet.
    Stopping,
    /// Exited without being asked to; `next_restart_at` says when it is tried again.
    Failed,
}

impl ServiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Stopped => "stopped",
            ServiceStatus::Starting => "starting",
            ServiceStatus::Running => "running",
            ServiceStatus::Stopping => "stopping",
            ServiceStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "stopped" => ServiceStatus::Stopped,
            "starting" => ServiceStatus::Starting,
            "running" => ServiceStatus::Running,
            "stopping" => ServiceStatus::Stopping,
            "failed" => ServiceStatus::Failed,
            _ => return None,
        })
    }
}

/// `state` of a service object. Unset times are omitted (never Go zero times).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceState {
    pub name: String,
    pub status: ServiceStatus,
    /// The process id inside the sprite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Restarts after crashes since the service was defined or started by hand.
    #[serde(default)]
    pub restart_count: u32,
    /// RFC 3339; set while a crashed service waits for its next try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_restart_at: Option<String>,
}

/// A service object (`GET .../services[/{name}]`). `args`, `needs` and `env` are always
/// present (empty when unset).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Service {
    pub name: String,
    pub cmd: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub needs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u32>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ServiceState>,
}

/// The type of a [`ServiceLogEvent`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LogEventType {
    Started,
    Stdout,
    Stderr,
    Exit,
    Error,
    Complete,
    Stopping,
    Stopped,
}

/// One line of the NDJSON streams of services: `started` → `stdout`/`stderr`* → `exit` (if
/// the process died) → `complete`; stop: `stopping` → `stopped` → `complete`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceLogEvent {
    #[serde(rename = "type")]
    pub kind: LogEventType,
    /// One line of output (without its newline), or a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Unix milliseconds.
    pub timestamp: i64,
    /// On `complete`: where the service's log is inside the sprite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_files: Option<BTreeMap<String, String>>,
    /// On `started`: the new process id inside the sprite (a Wisp addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

impl ServiceLogEvent {
    pub fn new(kind: LogEventType, timestamp: i64) -> Self {
        ServiceLogEvent {
            kind,
            data: None,
            exit_code: None,
            timestamp,
            log_files: None,
            pid: None,
        }
    }

    /// The `complete` event naming the log file of service `name`.
    pub fn complete(name: &str, timestamp: i64) -> Self {
        let path = log_path_inside(name);
        let files = ["combined", "stdout", "stderr"]
            .into_iter()
            .map(|k| (k.to_string(), path.clone()))
            .collect();
        ServiceLogEvent {
            log_files: Some(files),
            ..Self::new(LogEventType::Complete, timestamp)
        }
    }
}

/// Where a service's log is, as the sprite sees it.
pub fn log_path_inside(name: &str) -> String {
    format!("/.sprite/logs/services/{name}.log")
}

/// `POST .../services/signal` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignalRequest {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub name: String,
    pub signal: String,
}

/// Why a service name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceNameError {
    #[error("service name is required")]
    Empty,
    #[error("invalid service name {0:?}: 1-63 characters of lowercase letters, digits and '-', starting and ending with a letter or digit")]
    Invalid(String),
    #[error("{0:?} is reserved and cannot name a service")]
    Reserved(String),
}

/// Names that are path segments of the API under `/services/`.
const RESERVED: &[&str] = &["signal"];

/// A service name follows the sprite name rules (a DNS label: `[a-z0-9-]`, 1–63 characters,
/// starting and ending alphanumeric); it names the log file, so nothing else is accepted.
/// `signal` is reserved (`POST .../services/signal`).
pub fn validate_service_name(name: &str) -> Result<(), ServiceNameError> {
    if name.is_empty() {
        return Err(ServiceNameError::Empty);
    }
    if crate::name::validate_sprite_name(name).is_err() {
        return Err(ServiceNameError::Invalid(name.to_string()));
    }
    if RESERVED.contains(&name) {
        return Err(ServiceNameError::Reserved(name.to_string()));
    }
    Ok(())
}

/// Signals by name, as Linux numbers them.
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// `TERM`, `SIGTERM`, `sigterm` or `15` → 15. Real-time signals are not accepted by name.
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS.iter().find(|(n, _)| *n == bare).map(|(_, v)| *v)
}

/// The name of a signal number (`15` → `TERM`).
pub fn signal_name(n: i32) -> Option<&'static str> {
    SIGNALS.iter().find(|(_, v)| *v == n).map(|(s, _)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_forms() {
        let r: ServiceRequest = serde_json::from_str(r#"{"cmd":"python3"}"#).unwrap();
        assert_eq!(r.cmd, "python3");
        assert!(r.args.is_empty() && r.needs.is_empty() && r.env.is_empty());
        let r: ServiceRequest =
            serde_json::from_str(r#"{"cmd":"x","httpPort":8080,"args":null,"env":{"A":"b"}}"#)
                .unwrap();
        assert_eq!(r.http_port, Some(8080));
        assert_eq!(r.env["A"], "b");
        let r: ServiceRequest = serde_json::from_str(r#"{"cmd":"x","http_port":80}"#).unwrap();
        assert_eq!(r.http_port, Some(80));
        assert!(serde_json::from_str::<ServiceRequest>(r#"{"args":[]}"#).is_err());
        assert!(serde_json::from_str::<ServiceRequest>(r#"{"cmd":"x","http_port":-1}"#).is_err());
    }

    #[test]
    fn request_validation() {
        let ok = ServiceRequest {
            cmd: "sleep".into(),
            args: vec!["1".into()],
            ..Default::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let bad = |f: fn(&mut ServiceRequest)| {
            let mut r = ok.clone();
            f(&mut r);
            r.validate().unwrap_err()
        };
        assert_eq!(bad(|r| r.cmd = " ".into()), "cmd is required");
        assert!(bad(|r| r.args.push("a\0b".into())).contains("NUL"));
        assert!(bad(|r| r.dir = Some("rel".into())).contains("absolute"));
        assert!(bad(|r| r.http_port = Some(0)).contains("http_port"));
        assert!(bad(|r| r.http_port = Some(70000)).contains("http_port"));
        assert!(bad(|r| {
            r.env.insert("A=B".into(), "x".into());
        })
        .contains("environment"));
        assert!(bad(|r| r.needs = vec!["Bad".into()]).starts_with("needs:"));
        assert!(bad(|r| r.needs = vec!["a".into(), "a".into()]).contains("twice"));
    }

    #[test]
    fn names() {
        for ok in ["web", "a", "my-svc-2", &"a".repeat(63)] {
            assert_eq!(validate_service_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_service_name(""), Err(ServiceNameError::Empty));
        for bad in [
            "Web",
            "a_b",
            "a.b",
            "../x",
            "-a",
            "a-",
            &"a".repeat(64),
            "a b",
        ] {
            assert!(
                matches!(
                    validate_service_name(bad),
                    Err(ServiceNameError::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            validate_service_name("signal"),
            Err(ServiceNameError::Reserved(_))
        ));
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM"), Some(15));
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("sighup"), Some(1));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("USR1"), Some(10));
        for bad in ["", "SIG", "NOPE", "0", "65", "-9", "SIGSIGTERM"] {
            assert_eq!(parse_signal(bad), None, "{bad}");
        }
        assert_eq!(signal_name(15), Some("TERM"));
    }

    #[test]
    fn shapes() {
        let s = Service {
            name: "web".into(),
            cmd: "python3".into(),
            args: vec![],
            needs: vec![],
            http_port: None,
            env: BTreeMap::new(),
            dir: None,
            state: Some(ServiceState {
                name: "web".into(),
                status: ServiceStatus::Running,
                pid: Some(7),
                started_at: None,
                error: None,
                restart_count: 0,
                next_restart_at: None,
            }),
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({"name":"web","cmd":"python3","args":[],"needs":[],"env":{},
                "state":{"name":"web","status":"running","pid":7,"restart_count":0}})
        );
        let e = ServiceLogEvent::complete("web", 5);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "complete");
        assert_eq!(v["log_files"]["stderr"], "/.sprite/logs/services/web.log");
        assert_eq!(v["timestamp"], 5);
        assert!(v.get("data").is_none());
    }
}
