//! The seccomp filter every command in a sprite runs under.
//!
//! It refuses (EPERM) the system calls that the common container default profiles (Docker's,
//! containerd's) keep from containers: kernel modules, kexec, BPF, perf, keyrings, mounts and
//! the new mount API, namespace creation and joining, clock and time changes, swap, reboot,
//! accounting, quotas, raw I/O ports, handle-based opens, userfaultfd, and the obsolete calls.
//! `clone3` answers ENOSYS, so libc falls back to `clone`, whose flags are then checked.
//!
//! It is a deny list on top of a default-allow, unlike Docker's allow list: a system call added
//! to a future kernel is allowed until listed here. The capability bounding set (no
//! CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_TIME, …) already refuses most of these; the filter is
//! the second wall, and it also covers what needs no capability (keyrings, BPF for unprivileged
//! users, userfaultfd, user namespaces). SECURITY.md has the threat model.
//!
//! The filter is installed without `no_new_privs`, by a process that still holds CAP_SYS_ADMIN,
//! so setuid programs such as `sudo` keep working inside.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Refused outright with EPERM.
const DENIED: &[i64] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_init_module,
    libc::SYS_ioperm,
    libc::SYS_iopl,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_lookup_dcookie,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_name_to_handle_at,
    libc::SYS_nfsservctl,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pivot_root,
    libc::SYS_quotactl,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_syslog,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_uselib,
    libc::SYS_userfaultfd,
    libc::SYS_ustat,
    libc::SYS_vhangup,
    libc::SYS__sysctl,
];

/// `clone` flags that create namespaces: refused, as `unshare` and `setns` are.
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWTIME as u64,
];

#[derive(Debug, thiserror::Error)]
#[error("building the seccomp filter: {0}")]
pub struct FilterError(String);

fn err(e: impl std::fmt::Display) -> FilterError {
    FilterError(e.to_string())
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<BpfProgram, FilterError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(err)?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .map_err(err)?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| err(e))
}

/// Two programs: the deny list (EPERM), and `clone3` → ENOSYS (its flags are passed in
/// memory, out of a filter's reach, so libc must fall back to `clone`). The kernel runs both;
/// the stricter answer wins.
fn build() -> Result<Vec<BpfProgram>, FilterError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in DENIED {
        // No rule means: the match action for every call of it.
        rules.insert(*nr, vec![]);
    }
    let mut clone_rules = Vec::new();
    for flag in NAMESPACE_FLAGS {
        let cond = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(*flag),
            *flag,
        )
        .map_err(err)?;
        clone_rules.push(SeccompRule::new(vec![cond]).map_err(err)?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    let deny = compile(rules, libc::EPERM)?;
    let clone3 = compile(
        [(libc::SYS_clone3, vec![])].into_iter().collect(),
        libc::ENOSYS,
    )?;
    Ok(vec![deny, clone3])
}

static PROGRAMS: OnceLock<Vec<BpfProgram>> = OnceLock::new();

/// The compiled filter programs, built once (call it before forking, so that children only
/// install them).
pub fn programs() -> Result<&'static [BpfProgram], FilterError> {
    if PROGRAMS.get().is_none() {
        let built = build()?;
        let _ = PROGRAMS.set(built);
    }
    PROGRAMS
        .get()
        .map(|v| v.as_slice())
        .ok_or_else(|| FilterError("not built".into()))
}

/// Installs the filters on the calling thread (inherited by everything it execs or forks).
pub fn install(programs: &[BpfProgram]) -> std::io::Result<()> {
    for p in programs {
        let raw: Vec<libc::sock_filter> = p
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        wisp_sys::process::install_seccomp_filter(&raw)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds() {
        let p = programs().unwrap();
        assert_eq!(p.len(), 2);
        assert!(p[0].len() > DENIED.len());
    }
}
