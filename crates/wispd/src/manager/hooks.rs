//! What follows a start of a sprite's processes, in one place: after a create, a cold wake or a
//! restore, and at wispd's own start for every ready sprite (which may be running already, so
//! each step must be idempotent and cheap when there is nothing to do).

use super::SpriteManager;

impl SpriteManager {
    pub(super) async fn after_start(&self, sprite_id: &str) {
        self.refresh_views(sprite_id).await;
        // The keeper starts the sprite's services (in `needs` order); an unchanged set
        // changes nothing, so a running sprite's services keep their processes.
        self.push_services(sprite_id).await;
    }
}
