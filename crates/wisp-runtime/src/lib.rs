//! The namespace runtime of Wisp.
//!
//! One **keeper** process per running sprite holds everything that must outlive wispd: the
//! sprite's init (pid 1 of its pid namespace), its cgroups, and the PTYs, pipes and scrollback
//! of every running command. wispd starts a keeper with `wisp-keeper --config FILE`
//! ([`config::KeeperConfig`]); the keeper detaches into its own session, prints `READY <pid>`
//! (or `ERROR <message>`) on stdout once the sprite's init runs, and from then on serves the
//! [`proto`] protocol on its Unix socket. wispd may die and come back at any time; it simply
//! connects to the socket again.
//!
//! Code here is synchronous (std threads, poll): a keeper is small and must not depend on an
//! async runtime. Every raw syscall lives in `wisp-sys`.

pub mod cgroup;
pub mod config;
pub mod proto;

#[cfg(target_os = "linux")]
mod init;
#[cfg(target_os = "linux")]
pub mod keeper;
mod passwd;
#[cfg(target_os = "linux")]
mod rootfs;
pub mod seccomp;
#[cfg(target_os = "linux")]
mod services;
mod session;
mod stdin_queue;
