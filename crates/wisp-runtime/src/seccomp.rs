//! The seccomp filter every command in a sprite runs under.
//!
//! It refuses (EPERM) the system calls that the common container default profiles (Docker's,
//! containerd's) keep from containers: kernel modules, kexec, BPF, perf, keyrings, mounts and
//! the new mount API, namespace creation and joining, clock and time changes, swap, reboot,
//! accounting, quotas, raw I/O ports, handle-based opens, userfaultfd, and the obsolete calls.
//! `clone3` answers ENOSYS, so libc falls back to `clone`, whose flags are then checked.
//!
//! Like Docker's allow list, it is closed to the unknown: a system call number beyond the
//! ones reviewed here (x86_64 up to `removexattrat`, 466, of Linux 6.13), and the x32 and
//! 32-bit ABIs, answer ENOSYS, so a call a future kernel adds is refused until it is
//! reviewed. Within the reviewed numbers it refuses what the container default profiles
//! refuse, and io_uring (Docker and containerd refuse it since 2023: it bypasses this
//! filter for the operations it submits). The user namespace and the capability bounding
//! set (no CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_TIME, …) already refuse most of these; the
//! filter is the second wall, and it also covers what needs no capability (keyrings, BPF for
//! unprivileged users, userfaultfd, user namespaces). SECURITY.md has the threat model.
//!
//! The filter is installed without `no_new_privs`, by a process that still holds CAP_SYS_ADMIN,
//! so setuid programs such as `sudo` keep working inside.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Refused outright with EPERM: what Docker's default profile refuses to a container without
/// extra capabilities, plus io_uring.
const DENIED: &[i64] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_fanotify_init,
    libc::SYS_finit_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_init_module,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_io_uring_setup,
    libc::SYS_ioperm,
    libc::SYS_iopl,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_kcmp,
    libc::SYS_keyctl,
    libc::SYS_lookup_dcookie,
    // NUMA placement: Docker allows these only with CAP_SYS_NICE, which sprites lack.
    libc::SYS_get_mempolicy,
    libc::SYS_mbind,
    libc::SYS_migrate_pages,
    libc::SYS_move_pages,
    libc::SYS_set_mempolicy,
    libc::SYS_set_mempolicy_home_node,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_name_to_handle_at,
    libc::SYS_nfsservctl,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pivot_root,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_quotactl,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_sysfs,
    libc::SYS_syslog,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_uselib,
    libc::SYS_userfaultfd,
    libc::SYS_ustat,
    libc::SYS_vhangup,
    libc::SYS__sysctl,
];

/// `personality` values allowed (see `build`).
const ALLOWED_PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

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

/// The x86_64 system call numbers this filter was reviewed against: 0..=334 (up to `rseq`),
/// then 424..=466 (`pidfd_send_signal` to `removexattrat`). 335..=423 are unassigned on
/// x86_64; x32 calls carry bit 30 and so lie far above.
const REVIEWED: [(u32, u32); 2] = [(0, 334), (424, 466)];

/// A program allowing only the [`REVIEWED`] numbers, ENOSYS for the rest. Written as raw
/// BPF because seccompiler matches one number per rule: a rule per allowed call would be
/// some 380 comparisons on every system call, where these ranges take four.
fn known_calls_only() -> BpfProgram {
    use seccompiler::sock_filter;
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    let enosys = 0x0005_0000 | libc::ENOSYS as u32; // SECCOMP_RET_ERRNO
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    let [(_, end1), (start2, end2)] = REVIEWED;
    // seccomp_data: nr at offset 0, arch at 4. Another ABI (i386) is refused outright:
    // its numbers mean other calls.
    vec![
        ins(LD_W_ABS, 0, 0, 4),
        ins(0x15, 1, 0, AUDIT_ARCH_X86_64), // BPF_JMP | BPF_JEQ | BPF_K
        ins(RET_K, 0, 0, enosys),
        ins(LD_W_ABS, 0, 0, 0),
        ins(JGE_K, 3, 0, end2 + 1), // beyond the reviewed numbers (or x32)
        ins(JGE_K, 3, 0, start2),   // in the second range
        ins(JGE_K, 1, 0, end1 + 1), // in the gap
        ins(RET_K, 0, 0, ALLOW),    // in the first range
        ins(RET_K, 0, 0, enosys),
        ins(RET_K, 0, 0, ALLOW),
    ]
}

/// `AUDIT_ARCH_X86_64`: EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// Three programs: the deny list (EPERM); `clone3` → ENOSYS (its flags are passed in
/// memory, out of a filter's reach, so libc must fall back to `clone`); and on x86_64,
/// ENOSYS for every number not reviewed. The kernel runs them all; the stricter answer wins.
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
    // personality: only the values Docker's profile lets through (PER_LINUX, PER_LINUX32,
    // UNAME26 with either, and the query); the others change how the kernel lays out or
    // executes the process (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE, ...). As under Docker, gdb
    // then warns that it cannot turn address randomization off, and debugs anyway.
    let not_allowed = ALLOWED_PERSONALITIES
        .iter()
        .map(|v| SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    rules.insert(
        libc::SYS_personality,
        vec![SeccompRule::new(not_allowed).map_err(err)?],
    );
    let deny = compile(rules, libc::EPERM)?;
    let clone3 = compile(
        [(libc::SYS_clone3, vec![])].into_iter().collect(),
        libc::ENOSYS,
    )?;
    let mut programs = vec![deny, clone3];
    if cfg!(target_arch = "x86_64") {
        programs.push(known_calls_only());
    }
    Ok(programs)
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
        assert_eq!(p.len(), 3);
        assert!(p[0].len() > DENIED.len());
    }

    /// Runs the known-calls program on a (nr, arch) pair, as the kernel would.
    fn verdict(nr: u32, arch: u32) -> u32 {
        let prog = known_calls_only();
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = &prog[pc];
            match i.code {
                0x20 => acc = if i.k == 0 { nr } else { arch },
                0x15 => {
                    pc += if acc == i.k { i.jt } else { i.jf } as usize;
                }
                0x35 => {
                    pc += if acc >= i.k { i.jt } else { i.jf } as usize;
                }
                0x06 => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn only_reviewed_numbers_pass() {
        const ALLOW: u32 = 0x7fff_0000;
        let enosys = 0x0005_0000 | libc::ENOSYS as u32;
        for nr in [0, 1, 59, 334, 424, 435, 462, 466] {
            assert_eq!(verdict(nr, AUDIT_ARCH_X86_64), ALLOW, "{nr}");
        }
        for nr in [335, 400, 423, 467, 468, 1000, 0x4000_0000 + 1] {
            assert_eq!(verdict(nr, AUDIT_ARCH_X86_64), enosys, "{nr}");
        }
        // i386 (int 0x80) numbers are refused whatever they are.
        assert_eq!(verdict(1, 0x4000_0003), enosys);
        // The deny list covers reviewed calls that must not run, e.g. io_uring.
        assert!(DENIED.contains(&libc::SYS_io_uring_setup));
    }
}
