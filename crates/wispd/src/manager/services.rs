//! Services (§3.8), the manager's half: definitions live in the store, the keeper supervises
//! the processes. Every change is made under the sprite's lock (store first, then the
//! runtime), and the whole set is pushed to the runtime after every start of the sprite
//! ([`SpriteManager::push_services`], from `after_start`), so a cold wake or a restore starts
//! the services again while a warm wake simply thaws them.
//!
//! Operations answer the runtime's event sequence number when they acted; the API follows the
//! events after it (`WatchFrom::After`) to stream what the operation caused. The caller wakes
//! the sprite first (counted in flight), as for exec.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use wisp_api::service::ServiceRequest;

use super::{ManagerError, SpriteManager};
use crate::exec_env::{command_env, EXEC_USER};
use crate::runtime::{RuntimeError, ServiceInfo, ServiceSpec, SpawnSpec};
use crate::store::{ServiceRow, SpriteRow, StoreError};
use crate::timefmt;

/// Where a service runs when its definition names no `dir`.
pub const DEFAULT_DIR: &str = "/home/sprite";

/// The §3.8 wording of the one-`http_port`-per-sprite rule.
pub const HTTP_PORT_TAKEN: &str = "another service already has an HTTP port configured";

/// Why a service operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Manager(#[from] ManagerError),
    #[error("service not found: {0}")]
    NotFound(String),
    #[error("service {0} is not running")]
    NotRunning(String),
    /// A bad definition (unknown dependency, cycle): 400.
    #[error("{0}")]
    Invalid(String),
    /// Conflicts with other services (the `http_port` rule, a dependent): 409.
    #[error("{0}")]
    Conflict(String),
}

impl From<RuntimeError> for ServiceError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::ServiceNotFound(n) => ServiceError::NotFound(n),
            RuntimeError::ServiceNotRunning(n) => ServiceError::NotRunning(n),
            other => ServiceError::Manager(other.into()),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Manager(e.into())
    }
}

/// A service's definition with the runtime's view of it (`None` when the runtime does not
/// hold it: the sprite is cold, say).
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub row: ServiceRow,
    pub state: Option<ServiceInfo>,
}

/// What the runtime starts for a definition: `cmd` with `args` as the `sprite` user, in `dir`
/// (default `/home/sprite`), with the exec default environment plus `env`.
pub fn service_spec(row: &ServiceRow) -> ServiceSpec {
    let overrides: Vec<(String, String)> = row
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut argv = vec![row.cmd.clone()];
    argv.extend(row.args.iter().cloned());
    ServiceSpec {
        name: row.name.clone(),
        spawn: SpawnSpec {
            argv,
            path: row.cmd.clone(),
            env: command_env(false, &overrides),
            dir: row.dir.clone().unwrap_or_else(|| DEFAULT_DIR.to_string()),
            user: EXEC_USER.to_string(),
            tty: false,
            rows: 24,
            cols: 80,
            stdin: false,
            max_run_after_disconnect_ms: None,
        },
        needs: row.needs.clone(),
        http_port: row.http_port.and_then(|p| u16::try_from(p).ok()),
        stopped: row.stopped,
    }
}

/// A dependency cycle through `start` in `graph` (name → needs), as `a -> b -> a`.
pub fn find_cycle(graph: &BTreeMap<String, Vec<String>>, start: &str) -> Option<String> {
    fn visit(
        graph: &BTreeMap<String, Vec<String>>,
        node: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut HashSet<String>,
    ) -> bool {
        for next in graph.get(node).into_iter().flatten() {
            path.push(next.clone());
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) && visit(graph, next, start, path, seen) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = HashSet::new();
    visit(graph, start, start, &mut path, &mut seen).then(|| path.join(" -> "))
}

/// Checks a new definition of `name` against the sprite's other services.
fn check_definition(
    others: &[ServiceRow],
    name: &str,
    req: &ServiceRequest,
) -> Result<(), ServiceError> {
    if req.http_port.is_some()
        && others
            .iter()
            .any(|o| o.name != name && o.http_port.is_some())
    {
        return Err(ServiceError::Conflict(HTTP_PORT_TAKEN.into()));
    }
    for need in &req.needs {
        if need != name && !others.iter().any(|o| &o.name == need) {
            return Err(ServiceError::Invalid(format!(
                "service {name} needs {need}, which is not defined"
            )));
        }
    }
    let mut graph: BTreeMap<String, Vec<String>> = others
        .iter()
        .map(|o| (o.name.clone(), o.needs.clone()))
        .collect();
    graph.insert(name.to_string(), req.needs.clone());
    if let Some(cycle) = find_cycle(&graph, name) {
        return Err(ServiceError::Invalid(format!("dependency cycle: {cycle}")));
    }
    Ok(())
}

impl SpriteManager {
    /// Hands the runtime the sprite's whole set of services. Called under the sprite's lock
    /// after every start (idempotent: an unchanged set changes nothing); a cold sprite is
    /// left alone (its next start pushes again).
    pub(super) async fn push_services(&self, sprite_id: &str) {
        if let Err(e) = self.push_services_or_fail(sprite_id).await {
            match e {
                ServiceError::Manager(ManagerError::Runtime(RuntimeError::NotRunning)) => {}
                e => tracing::warn!(sprite_id, "pushing services: {e}"),
            }
        }
    }

    async fn push_services_or_fail(&self, sprite_id: &str) -> Result<u64, ServiceError> {
        let specs = self
            .store
            .services(sprite_id)?
            .iter()
            .map(service_spec)
            .collect();
        Ok(self.runtime.set_services(sprite_id, specs).await?)
    }

    /// Runs `f` under the sprite's lock in its own task, with the sprite's row (re-read).
    async fn locked<T, F>(
        self: &Arc<Self>,
        row: &SpriteRow,
        f: impl FnOnce(Arc<Self>, SpriteRow) -> F + Send + 'static,
    ) -> Result<T, ServiceError>
    where
        F: std::future::Future<Output = Result<T, ServiceError>> + Send + 'static,
        T: Send + 'static,
    {
        let id = row.id.clone();
        self.detached(move |this| async move {
            let lock = this.lock_for(&id);
            let _guard = lock.lock().await;
            let row = match this.ready_row(&id) {
                Ok(r) => r,
                Err(e) => return Ok(Err(e.into())),
            };
            Ok(f(this.clone(), row).await)
        })
        .await?
    }

    fn service_row(&self, sprite_id: &str, name: &str) -> Result<ServiceRow, ServiceError> {
        self.store
            .service(sprite_id, name)?
            .ok_or_else(|| ServiceError::NotFound(name.to_string()))
    }

    /// The runtime's states by name; empty when the sprite is cold.
    async fn service_states(&self, sprite_id: &str) -> Result<Vec<ServiceInfo>, ServiceError> {
        match self.runtime.list_services(sprite_id).await {
            Ok(s) => Ok(s),
            Err(RuntimeError::NotRunning) => Ok(vec![]),
            Err(e) => Err(e.into()),
        }
    }

    /// `GET .../services`: every definition with its state, by name.
    pub async fn list_services(
        self: &Arc<Self>,
        row: &SpriteRow,
    ) -> Result<Vec<ServiceView>, ServiceError> {
        self.locked(row, |this, row| async move {
            let rows = this.store.services(&row.id)?;
            let mut states = this.service_states(&row.id).await?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    let state = states
                        .iter()
                        .position(|s| s.name == r.name)
                        .map(|i| states.swap_remove(i));
                    ServiceView { row: r, state }
                })
                .collect())
        })
        .await
    }

    /// `GET .../services/{name}`.
    pub async fn get_service(
        self: &Arc<Self>,
        row: &SpriteRow,
        name: &str,
    ) -> Result<ServiceView, ServiceError> {
        let name = name.to_string();
        self.locked(row, |this, row| async move {
            let r = this.service_row(&row.id, &name)?;
            let state = this
                .service_states(&row.id)
                .await?
                .into_iter()
                .find(|s| s.name == name);
            Ok(ServiceView { row: r, state })
        })
        .await
    }

    /// `PUT .../services/{name}`: creates or redefines the service and starts it (a changed
    /// definition restarts it; an unchanged running one is left alone).
    pub async fn put_service(
        self: &Arc<Self>,
        row: &SpriteRow,
        name: &str,
        req: ServiceRequest,
    ) -> Result<u64, ServiceError> {
        let name = name.to_string();
        self.locked(row, |this, row| async move {
            let others = this.store.services(&row.id)?;
            check_definition(&others, &name, &req)?;
            let now = timefmt::now();
            let created_at = others
                .iter()
                .find(|o| o.name == name)
                .map_or_else(|| now.clone(), |o| o.created_at.clone());
            let new = ServiceRow {
                sprite_id: row.id.clone(),
                name: name.clone(),
                cmd: req.cmd,
                args: req.args,
                needs: req.needs,
                http_port: req.http_port,
                env: req.env,
                dir: req.dir,
                stopped: false,
                created_at,
                updated_at: now,
            };
            // Same definition, not stopped: the push changes nothing for it.
            let unchanged = others.iter().any(|o| {
                o.name == name
                    && !o.stopped
                    && (&o.cmd, &o.args, &o.needs, o.http_port, &o.env, &o.dir)
                        == (
                            &new.cmd,
                            &new.args,
                            &new.needs,
                            new.http_port,
                            &new.env,
                            &new.dir,
                        )
            });
            this.store.upsert_service(&new)?;
            tracing::info!(sprite_id = %row.id, service = %name, "service defined");
            let seq = this.push_services_or_fail(&row.id).await?;
            // The push starts a new or changed service, and a sticky-stopped one redefined the
            // same way (the flag changed). Only an unchanged one that failed and waits for its
            // backoff needs a start now. Starting the others again would race their first run:
            // one that already exited would restart at once, skipping its backoff.
            if unchanged {
                this.runtime.start_service(&row.id, &name).await?;
            }
            Ok(seq)
        })
        .await
    }

    /// `DELETE .../services/{name}`: forgets the definition; its process is stopped. Answers
    /// the sequence number to follow for the stop.
    pub async fn delete_service(
        self: &Arc<Self>,
        row: &SpriteRow,
        name: &str,
    ) -> Result<u64, ServiceError> {
        let name = name.to_string();
        self.locked(row, |this, row| async move {
            this.service_row(&row.id, &name)?;
            let dependents: Vec<String> = this
                .store
                .services(&row.id)?
                .into_iter()
                .filter(|o| o.needs.contains(&name))
                .map(|o| o.name)
                .collect();
            if !dependents.is_empty() {
                return Err(ServiceError::Conflict(format!(
                    "service {name} is needed by {}; delete or redefine them first",
                    dependents.join(", ")
                )));
            }
            this.store.delete_service(&row.id, &name)?;
            tracing::info!(sprite_id = %row.id, service = %name, "service deleted");
            this.push_services_or_fail(&row.id).await
        })
        .await
    }

    /// `POST .../services/{name}/start`.
    pub async fn start_service(
        self: &Arc<Self>,
        row: &SpriteRow,
        name: &str,
    ) -> Result<u64, ServiceError> {
        let name = name.to_string();
        self.locked(row, |this, row| async move {
            this.service_row(&row.id, &name)?;
            this.store
                .set_service_stopped(&row.id, &name, false, &timefmt::now())?;
            this.start_or_define(&row.id, &name).await
        })
        .await
    }

    /// Starts a service the runtime may not hold yet (pushed while it was unreachable).
    async fn start_or_define(&self, sprite_id: &str, name: &str) -> Result<u64, ServiceError> {
        match self.runtime.start_service(sprite_id, name).await {
            Err(RuntimeError::ServiceNotFound(_)) => {
                let seq = self.push_services_or_fail(sprite_id).await?;
                self.runtime.start_service(sprite_id, name).await?;
                Ok(seq)
            }
            other => Ok(other?),
        }
    }

    /// `POST .../services/{name}/stop`: a sticky stop (it survives cold wakes and restores).
    pub async fn stop_service(
        self: &Arc<Self>,
        row: &SpriteRow,
        name: &str,
        timeout: Duration,
    ) -> Result<u64, ServiceError> {
        let name = name.to_string();
        self.locked(row, move |this, row| async move {
            this.service_row(&row.id, &name)?;
            let seq = this.runtime.stop_service(&row.id, &name, timeout).await?;
            this.store
                .set_service_stopped(&row.id, &name, true, &timefmt::now())?;
            tracing::info!(sprite_id = %row.id, service = %name, "service stopped");
            Ok(seq)
        })
        .await
    }

    /// `POST .../services/{name}/restart`: stops it if it runs, then starts it (clearing a
    /// sticky stop).
    pub async fn restart_service(
        self: &Arc<Self>,
        row: &SpriteRow,
        name: &str,
        timeout: Duration,
    ) -> Result<u64, ServiceError> {
        let name = name.to_string();
        self.locked(row, move |this, row| async move {
            this.service_row(&row.id, &name)?;
            this.store
                .set_service_stopped(&row.id, &name, false, &timefmt::now())?;
            match this.runtime.restart_service(&row.id, &name, timeout).await {
                Err(RuntimeError::ServiceNotFound(_)) => this.start_or_define(&row.id, &name).await,
                other => Ok(other?),
            }
        })
        .await
    }

    /// `POST .../services/signal`.
    pub async fn signal_service(
        self: &Arc<Self>,
        row: &SpriteRow,
        name: &str,
        signal: i32,
    ) -> Result<(), ServiceError> {
        let name = name.to_string();
        self.locked(row, move |this, row| async move {
            this.service_row(&row.id, &name)?;
            match this.runtime.signal_service(&row.id, &name, signal).await {
                Err(RuntimeError::ServiceNotFound(n)) => Err(ServiceError::NotRunning(n)),
                other => Ok(other?),
            }
        })
        .await
    }

    /// Checks that a service exists (for the logs endpoint, which reads the runtime only).
    pub fn check_service(&self, row: &SpriteRow, name: &str) -> Result<(), ServiceError> {
        self.store
            .service(&row.id, name)?
            .map(drop)
            .ok_or_else(|| ServiceError::NotFound(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, needs: &[&str], port: Option<u32>) -> ServiceRow {
        ServiceRow {
            sprite_id: "s".into(),
            name: name.into(),
            cmd: "sleep".into(),
            args: vec!["9".into()],
            needs: needs.iter().map(|n| n.to_string()).collect(),
            http_port: port,
            env: [("A".to_string(), "1".to_string())].into(),
            dir: None,
            stopped: false,
            created_at: "t".into(),
            updated_at: "t".into(),
        }
    }

    fn req(needs: &[&str], port: Option<u32>) -> ServiceRequest {
        ServiceRequest {
            cmd: "x".into(),
            needs: needs.iter().map(|n| n.to_string()).collect(),
            http_port: port,
            ..Default::default()
        }
    }

    #[test]
    fn spec_of_a_row() {
        let s = service_spec(&row("web", &["db"], Some(8080)));
        assert_eq!(s.spawn.argv, ["sleep", "9"]);
        assert_eq!(s.spawn.path, "sleep");
        assert_eq!(s.spawn.dir, "/home/sprite");
        assert_eq!(s.spawn.user, "sprite");
        assert!(!s.spawn.tty && !s.spawn.stdin);
        assert_eq!(s.spawn.max_run_after_disconnect_ms, None);
        assert!(s.spawn.env.contains(&("A".into(), "1".into())));
        assert!(s.spawn.env.iter().any(|(k, _)| k == "PATH"));
        assert_eq!(
            (s.needs.as_slice(), s.http_port),
            (&["db".to_string()][..], Some(8080))
        );
    }

    #[test]
    fn definitions_against_the_others() {
        let others = vec![
            row("a", &[], Some(80)),
            row("b", &["a"], None),
            row("c", &["b"], None),
        ];
        assert!(check_definition(&others, "d", &req(&["c"], None)).is_ok());
        // Redefining the port owner keeps its port.
        assert!(check_definition(&others, "a", &req(&[], Some(81))).is_ok());
        match check_definition(&others, "d", &req(&[], Some(90))) {
            Err(ServiceError::Conflict(m)) => assert_eq!(m, HTTP_PORT_TAKEN),
            other => panic!("{other:?}"),
        }
        match check_definition(&others, "d", &req(&["nope"], None)) {
            Err(ServiceError::Invalid(m)) => assert!(m.contains("nope"), "{m}"),
            other => panic!("{other:?}"),
        }
        match check_definition(&others, "a", &req(&["c"], None)) {
            Err(ServiceError::Invalid(m)) => assert_eq!(m, "dependency cycle: a -> c -> b -> a"),
            other => panic!("{other:?}"),
        }
        match check_definition(&others, "d", &req(&["d"], None)) {
            Err(ServiceError::Invalid(m)) => assert_eq!(m, "dependency cycle: d -> d"),
            other => panic!("{other:?}"),
        }
    }
}
