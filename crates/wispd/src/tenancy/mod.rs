//! Tenancy: per-organization limits (running sprites, create rate) and the classification of
//! API requests that attenuated tokens are checked against.
//!
//! * [`access`]: method + matched route → what a request does ([`access::Access`]).
//! * [`limits`]: limit settings (daemon defaults, per-org overrides), the in-memory create
//!   windows, and the 429 answers in the shape the SDKs parse.

pub mod access;
pub mod limits;

pub use limits::{DefaultLimits, Effective, Limit, LimitExceeded, OrgLimits, Tenancy};

use crate::api::ApiError;
use crate::manager::SpriteManager;
use crate::store::Store;
use wisp_api::sprite::SpriteStatus;

impl Tenancy {
    /// The limits in force for `org_id`: its own settings over the daemon's defaults.
    pub fn effective(&self, store: &Store, org_id: &str) -> Result<Effective, ApiError> {
        Ok(store.org_limits(org_id)?.effective(self.defaults()))
    }

    /// How many of the org's sprites are running or warm (not cold) now.
    pub async fn running_count(
        &self,
        store: &Store,
        manager: &SpriteManager,
        org_id: &str,
    ) -> Result<u64, ApiError> {
        let ids = store.org_sprite_ids(org_id)?;
        let statuses = manager.statuses(&ids).await;
        Ok(statuses
            .values()
            .filter(|s| **s != SpriteStatus::Cold)
            .count() as u64)
    }
}
