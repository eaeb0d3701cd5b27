//! The nftables side: one `inet` table per wispd (`wisp` for the default data dir,
//! `wisp-<hash>` for others, so that several daemons on one host, test daemons included,
//! never touch each other's rules), written with `nft -f -`.
//!
//! Why `nft -f -` with generated text rather than the `nftables` crate or raw nf_tables
//! netlink: the crate also runs the `nft` binary (with JSON), so it saves no process and adds
//! a schema to keep in step; raw netlink for nf_tables means batches, expressions and set
//! element encodings by hand, a lot of code for what is, on this path, 5–8 ms per change.
//! Text scripts are applied atomically (one transaction per script) and read like the
//! ruleset they make (`nft list table inet wisp`). The hot path, adding resolved addresses,
//! is one short script per DNS answer with new addresses (cached ones cost nothing).
//!
//! Rules shared by all sprites match the host end names `wv*` of every wispd (sprite-to-
//! sprite and sprite-to-host traffic is blocked whoever's sprites they are); per-slot parts
//! (a chain and two allow sets) exist only in the table of the wispd that owns the slot.
//! Packets from a sprite whose source address does not route back through its own veth
//! (forged with a raw socket: root in a sprite keeps CAP_NET_RAW) are dropped first, so no
//! sprite can pass for another or send spoofed traffic out.

use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::addr::Subnet;
use super::slot::{SlotInfo, IFACE_PREFIX};

/// Destinations no sprite may reach, ever (rejected at once, not dropped).
pub const BLOCKED_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/3",
];
pub const BLOCKED_V6: &[&str] = &[
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// The table of the wispd with `data_dir`.
pub fn table_name(data_dir: &Path) -> String {
    let dir = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    if dir == Path::new(crate::config::DEFAULT_DATA_DIR) {
        return "wisp".into();
    }
    let hash = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    format!("wisp-{}", &hex::encode(hash)[..10])
}

/// The table's comment: its data dir, so that a later wispd can remove tables whose data dir
/// is gone (a test daemon's, say). Empty when the path cannot be put in an nft string.
pub fn table_comment(data_dir: &Path) -> String {
    let dir = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let s = dir.to_string_lossy().into_owned();
    let ok = s.len() <= 120
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    if ok {
        s
    } else {
        String::new()
    }
}

pub fn chain_of(slot: &str) -> String {
    format!("s_{slot}")
}

pub fn set4_of(slot: &str) -> String {
    format!("a4_{slot}")
}

pub fn set6_of(slot: &str) -> String {
    format!("a6_{slot}")
}

/// The whole table: replaces whatever table of that name exists, in one transaction.
pub fn full_ruleset(table: &str, comment: &str, subnet: &Subnet, slots: &[SlotInfo]) -> String {
    let w = format!("\"{IFACE_PREFIX}*\"");
    let comment = if comment.is_empty() {
        String::new()
    } else {
        format!("\tcomment \"{comment}\"\n")
    };
    let v4 = BLOCKED_V4.join(", ");
    let v6 = BLOCKED_V6.join(", ");
    let mut s = format!(
        "table inet {table}\n\
         delete table inet {table}\n\
         table inet {table} {{\n\
         {comment}\
         \tmap egress {{ type ifname : verdict; }}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname {w} oifname {w} drop\n\
         \t\toifname {w} ct state established,related accept\n\
         \t\toifname {w} drop\n\
         \t\tiifname {w} jump sprite_out\n\
         \t}}\n\
         \tchain sprite_out {{\n\
         \t\tfib saddr . iif oif missing drop\n\
         \t\tct state established,related accept\n\
         \t\tip daddr {{ {v4} }} reject with icmpx admin-prohibited\n\
         \t\tip6 daddr {{ {v6} }} reject with icmpx admin-prohibited\n\
         \t\tiifname vmap @egress\n\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname {w} jump sprite_in\n\
         \t}}\n\
         \tchain sprite_in {{\n\
         \t\tfib saddr . iif oif missing drop\n\
         \t\tct state established,related accept\n\
         \t\tmeta l4proto {{ tcp, udp }} th dport 53 fib daddr . iif type local accept\n\
         \t\ticmp type echo-request fib daddr . iif type local accept\n\
         \t\tdrop\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {subnet} oifname != {w} masquerade\n\
         \t}}\n\
         }}\n"
    );
    for slot in slots {
        s.push_str(&add_slot(table, &slot.ifname));
    }
    s
}

/// The per-slot chain and allow sets (not yet wired to the slot: see [`restrict`]).
pub fn add_slot(table: &str, slot: &str) -> String {
    let (c, a4, a6) = (chain_of(slot), set4_of(slot), set6_of(slot));
    format!(
        "add set inet {table} {a4} {{ type ipv4_addr; flags timeout; }}\n\
         add set inet {table} {a6} {{ type ipv6_addr; flags timeout; }}\n\
         add chain inet {table} {c}\n\
         flush chain inet {table} {c}\n\
         add rule inet {table} {c} ip daddr @{a4} accept\n\
         add rule inet {table} {c} ip6 daddr @{a6} accept\n\
         add rule inet {table} {c} meta l4proto tcp reject with tcp reset\n\
         add rule inet {table} {c} reject with icmpx admin-prohibited\n"
    )
}

/// Removes the per-slot objects (`wired`: the slot is in the egress map).
pub fn remove_slot(table: &str, slot: &str, wired: bool) -> String {
    let mut s = String::new();
    if wired {
        s.push_str(&unrestrict(table, slot));
    }
    s.push_str(&format!(
        "delete chain inet {table} {}\n\
         delete set inet {table} {}\n\
         delete set inet {table} {}\n",
        chain_of(slot),
        set4_of(slot),
        set6_of(slot)
    ));
    s
}

/// Sends the slot's new connections through its allow sets.
pub fn restrict(table: &str, slot: &str) -> String {
    format!(
        "add element inet {table} egress {{ \"{slot}\" : jump {} }}\n",
        chain_of(slot)
    )
}

pub fn unrestrict(table: &str, slot: &str) -> String {
    format!("delete element inet {table} egress {{ \"{slot}\" }}\n")
}

/// Replaces the contents of the slot's allow sets.
pub fn replace_allowed(table: &str, slot: &str, addrs: &[(std::net::IpAddr, u64)]) -> String {
    let mut s = format!(
        "flush set inet {table} {}\nflush set inet {table} {}\n",
        set4_of(slot),
        set6_of(slot)
    );
    s.push_str(&add_allowed(table, slot, addrs));
    s
}

/// Adds addresses (with timeouts in seconds) to the slot's allow sets.
pub fn add_allowed(table: &str, slot: &str, addrs: &[(std::net::IpAddr, u64)]) -> String {
    let mut s = String::new();
    for (set, v6) in [(set4_of(slot), false), (set6_of(slot), true)] {
        let elems: Vec<String> = addrs
            .iter()
            .filter(|(a, _)| a.is_ipv6() == v6)
            .map(|(a, t)| format!("{a} timeout {}s", (*t).max(1)))
            .collect();
        if !elems.is_empty() {
            s.push_str(&format!(
                "add element inet {table} {set} {{ {} }}\n",
                elems.join(", ")
            ));
        }
    }
    s
}

/// Runs `nft -f -` with `script`.
pub async fn apply(script: &str) -> io::Result<()> {
    if script.is_empty() {
        return Ok(());
    }
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("running nft (install nftables, or start wispd with --no-network): {e}"),
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "nft failed ({}): {}\nscript:\n{script}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

async fn output(args: &[&str]) -> io::Result<String> {
    let out = tokio::process::Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `(table, comment)` of every `inet` table named `wisp` or `wisp-*`.
pub fn wisp_tables(ruleset: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in ruleset.lines() {
        if let Some(rest) = line.strip_prefix("table inet ") {
            let name = rest.trim_end_matches('{').trim().to_string();
            if name == "wisp" || name.starts_with("wisp-") {
                out.push((name, String::new()));
                current = Some(out.len() - 1);
            } else {
                current = None;
            }
        } else if let (Some(i), Some(c)) = (current, line.trim().strip_prefix("comment \"")) {
            out[i].1 = c.trim_end_matches('"').to_string();
            current = None;
        } else if !line.starts_with('\t') {
            current = None;
        }
    }
    out
}

/// Removes the tables of wispd instances whose data dir no longer exists (test daemons that
/// were killed, say): nothing else would ever remove them.
pub async fn remove_orphan_tables(own: &str) {
    let ruleset = match output(&["-t", "list", "ruleset", "inet"]).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!("listing nftables tables: {e}");
            return;
        }
    };
    let mut script = String::new();
    for (name, comment) in wisp_tables(&ruleset) {
        if name != own && comment.starts_with('/') && !Path::new(&comment).exists() {
            tracing::info!(table = %name, data_dir = %comment, "removing the table of a gone wispd");
            script.push_str(&format!("delete table inet {name}\n"));
        }
    }
    if let Err(e) = apply(&script).await {
        tracing::warn!("removing orphaned tables: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(table_name(Path::new("/var/lib/wisp")), "wisp");
        let t = table_name(Path::new("/nonexistent/wisp-a"));
        assert!(t.starts_with("wisp-") && t.len() == 15, "{t}");
        assert_ne!(t, table_name(Path::new("/nonexistent/wisp-b")));
        assert_eq!(table_comment(Path::new("/no/such \"dir")), "");
        assert_eq!(table_comment(Path::new("/no/such")), "/no/such");
    }

    #[test]
    fn table_listing() {
        let text = "table inet filter {\n\tchain x {\n\t}\n}\ntable inet wisp-0123456789 {\n\tcomment \"/tmp/wispd-test-x\"\n\tmap egress {\n\t}\n}\ntable inet wisp {\n\tmap egress {\n\t}\n}\n";
        assert_eq!(
            wisp_tables(text),
            vec![
                (
                    "wisp-0123456789".to_string(),
                    "/tmp/wispd-test-x".to_string()
                ),
                ("wisp".to_string(), String::new())
            ]
        );
    }

    #[test]
    fn element_scripts() {
        let s = add_allowed(
            "wisp",
            "wv3",
            &[
                ("198.18.0.1".parse().unwrap(), 300),
                ("2001:db8::1".parse().unwrap(), 0),
            ],
        );
        assert_eq!(
            s,
            "add element inet wisp a4_wv3 { 198.18.0.1 timeout 300s }\n\
             add element inet wisp a6_wv3 { 2001:db8::1 timeout 1s }\n"
        );
        assert!(replace_allowed("wisp", "wv3", &[]).starts_with("flush set inet wisp a4_wv3\n"));
    }
}
