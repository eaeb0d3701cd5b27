//! Every `unsafe` block and raw syscall of Wisp lives in this crate, each with a `// SAFETY:`
//! comment. Everything exported is a safe function; callers never write `unsafe`.
//!
//! Most calls go through `nix`; the few that `nix` marks unsafe (fork, clone, ioctls, taking
//! ownership of raw descriptors) are wrapped here with the conditions that make them sound.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod btrfs;
pub mod fd;
pub mod fsid;
pub mod idmap;
pub mod net;
pub mod netns;
pub mod process;
pub mod tty;
