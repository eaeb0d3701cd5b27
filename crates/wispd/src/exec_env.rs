//! Turning exec query parameters into what a runtime spawns.

use wisp_api::exec::ExecParams;
use wisp_runtime::proto::SpawnSpec;

/// The user commands run as; root is reached with sudo inside the sprite.
pub const EXEC_USER: &str = "sprite";

/// The environment every command starts from; the client's `env` entries override or extend
/// it (the CLI sends only a few variables and still expects a working PATH).
pub const DEFAULT_ENV: &[(&str, &str)] = &[
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/home/sprite"),
    ("USER", "sprite"),
    ("LOGNAME", "sprite"),
    ("SHELL", "/bin/bash"),
    ("LANG", "C.UTF-8"),
];

/// The defaults (plus `TERM` for a TTY) with `overrides` applied in order.
pub fn command_env(tty: bool, overrides: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = DEFAULT_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if tty {
        env.push(("TERM".into(), "xterm-256color".into()));
    }
    for (k, v) in overrides {
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    env
}

pub fn spawn_spec(p: &ExecParams) -> SpawnSpec {
    SpawnSpec {
        argv: p.cmd.clone(),
        path: p.path.clone(),
        env: command_env(p.tty, &p.env),
        dir: p.dir.clone(),
        user: EXEC_USER.to_string(),
        tty: p.tty,
        rows: p.rows,
        cols: p.cols,
        stdin: p.stdin,
        max_run_after_disconnect_ms: p
            .max_run_after_disconnect
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(ek, _)| ek == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn defaults_and_overrides() {
        let env = command_env(false, &[]);
        assert_eq!(get(&env, "HOME"), Some("/home/sprite"));
        assert_eq!(get(&env, "TERM"), None);
        let env = command_env(
            true,
            &[
                ("TERM".into(), "dumb".into()),
                ("FOO".into(), "1".into()),
                ("FOO".into(), "2".into()),
            ],
        );
        assert_eq!(get(&env, "TERM"), Some("dumb"));
        assert_eq!(get(&env, "FOO"), Some("2"));
        assert_eq!(env.iter().filter(|(k, _)| k == "FOO").count(), 1);
        assert!(get(&env, "PATH").unwrap().contains("/usr/bin"));
    }

    #[test]
    fn spec_from_query() {
        let pairs = [
            ("cmd", "ls"),
            ("cmd", "-l"),
            ("env", "A=b"),
            ("stdin", "true"),
        ];
        let p = ExecParams::from_pairs(pairs.iter().copied()).unwrap();
        let s = spawn_spec(&p);
        assert_eq!(s.argv, ["ls", "-l"]);
        assert_eq!(s.path, "ls");
        assert_eq!(s.user, "sprite");
        assert!(s.stdin && !s.tty);
        assert_eq!(s.max_run_after_disconnect_ms, Some(10_000));
        assert_eq!(get(&s.env, "A"), Some("b"));
    }
}
