//! Wire types of the Sprites API as Wisp speaks it.
//!
//! This crate is shared by the daemon (`wispd`), the CLI (`wisp`) and any Rust client. It holds
//! only data shapes and pure functions (validation, frame codecs, duration parsing): no I/O.

pub mod attenuation;
pub mod checkpoint;
pub mod dns;
pub mod duration;
pub mod error;
pub mod exec;
pub mod fs_path;
pub mod name;
pub mod policy;
pub mod policy_match;
pub mod service;
pub mod sprite;
pub mod token;

/// The value of the `Sprite-Version` header on every response. Release form, so the Go SDK
/// uses the path form of session attach.
pub const SPRITE_VERSION: &str = "v0.1.0";

/// Capabilities announced on exec and control upgrades (`X-Sprite-Capabilities`).
pub const SPRITE_CAPABILITIES: &str = "signal";
