//! Keep-awake tasks (§3.12, docs "Keeping a Sprite Running"): named holds with an expiry of at
//! most an hour; while one is live the sprite does not go to sleep.
//!
//! `GET /v1/tasks` → `{"tasks":[{"name","started_at","expires_at"}]}`; `GET /v1/tasks/{name}`
//! (404 if missing); `POST /v1/tasks {"name","expire"}` → 201, 409 if a live task has the
//! name; `PUT /v1/tasks/{name} {"expire"}` or `PUT /v1/tasks {"name","expire"}` → 200,
//! creating the task or pushing its expiry (its `started_at` stays); `DELETE
//! /v1/tasks/{name}` → 204/404. `expire` is seconds (a number) or a duration string (`"30m"`,
//! `"1h"`, `"90"`); at most an hour; absent means an hour.
//!
//! Kept in memory and, so that a wispd restart does not drop a hold, in
//! `<data-dir>/sprites/<id>/tasks.json` (outside `/.sprite`; gone with the sprite). Expired
//! tasks are dropped lazily.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use wisp_api::duration::parse_duration;

use super::routes::Bound;
use crate::api::extract::{ApiJson, ApiPath};
use crate::api::{ApiError, AppState};
use crate::timefmt;

/// Longest hold one task gives.
pub const MAX_EXPIRE: Duration = Duration::from_secs(3600);
/// Most tasks one sprite may hold.
pub const MAX_TASKS: usize = 100;
/// Longest task name, in bytes.
pub const MAX_NAME: usize = 128;

const FILE_NAME: &str = "tasks.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Task {
    started_ms: i64,
    expires_ms: i64,
}

/// A task on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    pub name: String,
    pub started_at: String,
    pub expires_at: String,
}

fn view(name: &str, t: &Task) -> TaskView {
    let ts = |ms| timefmt::from_unix_millis(ms).unwrap_or_default();
    TaskView {
        name: name.to_string(),
        started_at: ts(t.started_ms),
        expires_at: ts(t.expires_ms),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

type SpriteTasks = BTreeMap<String, Task>;

/// Every sprite's tasks.
#[derive(Debug)]
pub struct Tasks {
    data_dir: PathBuf,
    by_sprite: Mutex<HashMap<String, SpriteTasks>>,
    /// Serializes the files' writes, so that the last one written holds the latest state.
    writes: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskError {
    Taken(String),
    TooMany,
}

impl Tasks {
    pub fn new(data_dir: PathBuf) -> Self {
        Tasks {
            data_dir,
            by_sprite: Mutex::new(HashMap::new()),
            writes: tokio::sync::Mutex::new(()),
        }
    }

    fn file(&self, sprite_id: &str) -> PathBuf {
        self.data_dir
            .join("sprites")
            .join(sprite_id)
            .join(FILE_NAME)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SpriteTasks>> {
        self.by_sprite.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the sprite's saved tasks (at wispd start); a missing or broken file is no task.
    pub fn load(&self, sprite_id: &str) {
        let path = self.file(sprite_id);
        let tasks: SpriteTasks = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(sprite_id, "ignoring {}: {e}", path.display());
                SpriteTasks::new()
            }),
            Err(_) => SpriteTasks::new(),
        };
        let now = now_ms();
        let live: SpriteTasks = tasks
            .into_iter()
            .filter(|(_, t)| t.expires_ms > now)
            .collect();
        if !live.is_empty() {
            self.lock().insert(sprite_id.to_string(), live);
        }
    }

    pub fn forget(&self, sprite_id: &str) {
        self.lock().remove(sprite_id);
    }

    /// The sprite's live tasks, expired ones dropped.
    fn live<'a>(
        map: &'a mut HashMap<String, SpriteTasks>,
        sprite_id: &str,
        now: i64,
    ) -> &'a mut SpriteTasks {
        let tasks = map.entry(sprite_id.to_string()).or_default();
        tasks.retain(|_, t| t.expires_ms > now);
        tasks
    }

    pub fn has_live(&self, sprite_id: &str) -> bool {
        let now = now_ms();
        self.lock()
            .get(sprite_id)
            .is_some_and(|tasks| tasks.values().any(|t| t.expires_ms > now))
    }

    pub fn list(&self, sprite_id: &str) -> Vec<TaskView> {
        let mut map = self.lock();
        Self::live(&mut map, sprite_id, now_ms())
            .iter()
            .map(|(n, t)| view(n, t))
            .collect()
    }

    pub fn get(&self, sprite_id: &str, name: &str) -> Option<TaskView> {
        let mut map = self.lock();
        Self::live(&mut map, sprite_id, now_ms())
            .get(name)
            .map(|t| view(name, t))
    }

    /// A new task; a live one of that name is [`TaskError::Taken`].
    pub fn create(
        &self,
        sprite_id: &str,
        name: &str,
        expire: Duration,
    ) -> Result<TaskView, TaskError> {
        let now = now_ms();
        let mut map = self.lock();
        let tasks = Self::live(&mut map, sprite_id, now);
        if tasks.contains_key(name) {
            return Err(TaskError::Taken(name.to_string()));
        }
        if tasks.len() >= MAX_TASKS {
            return Err(TaskError::TooMany);
        }
        let t = Task {
            started_ms: now,
            expires_ms: now + expire.as_millis() as i64,
        };
        tasks.insert(name.to_string(), t);
        Ok(view(name, &t))
    }

    /// Creates the task or pushes its expiry to `now + expire`.
    pub fn upsert(
        &self,
        sprite_id: &str,
        name: &str,
        expire: Duration,
    ) -> Result<TaskView, TaskError> {
        let now = now_ms();
        let mut map = self.lock();
        let tasks = Self::live(&mut map, sprite_id, now);
        let expires_ms = now + expire.as_millis() as i64;
        if let Some(t) = tasks.get_mut(name) {
            t.expires_ms = expires_ms;
            return Ok(view(name, t));
        }
        if tasks.len() >= MAX_TASKS {
            return Err(TaskError::TooMany);
        }
        let t = Task {
            started_ms: now,
            expires_ms,
        };
        tasks.insert(name.to_string(), t);
        Ok(view(name, &t))
    }

    /// Whether a live task was removed.
    pub fn remove(&self, sprite_id: &str, name: &str) -> bool {
        let mut map = self.lock();
        Self::live(&mut map, sprite_id, now_ms())
            .remove(name)
            .is_some()
    }

    /// Writes the sprite's tasks to its file (after a change).
    async fn save(&self, sprite_id: &str) -> Result<(), ApiError> {
        let _one_writer = self.writes.lock().await;
        let tasks = self.lock().get(sprite_id).cloned().unwrap_or_default();
        let path = self.file(sprite_id);
        tokio::task::spawn_blocking(move || {
            if tasks.is_empty() {
                return crate::fsutil::remove_file_if_exists(&path);
            }
            let json = serde_json::to_vec(&tasks).map_err(std::io::Error::other)?;
            crate::fsutil::write_atomic(&path, &json, 0o600)
        })
        .await
        .map_err(|e| ApiError::internal(format!("saving tasks: {e}")))?
        .map_err(|e| ApiError::internal(format!("saving tasks: {e}")))
    }
}

/// `expire`: a number of seconds or a duration string; absent means the maximum.
pub fn parse_expire(v: Option<&Value>) -> Result<Duration, ApiError> {
    let bad = |v: &Value| {
        ApiError::bad_request(format!(
            "expire must be a number of seconds or a duration like \"30m\" (at most 1h), got {v}"
        ))
    };
    let d = match v {
        None | Some(Value::Null) => return Ok(MAX_EXPIRE),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 1e9)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| bad(v.unwrap_or(&Value::Null)))?,
        Some(Value::String(s)) => parse_duration(s).map_err(|_| bad(v.unwrap_or(&Value::Null)))?,
        Some(other) => return Err(bad(other)),
    };
    if d.is_zero() {
        return Err(ApiError::bad_request("expire must be more than zero"));
    }
    if d > MAX_EXPIRE {
        return Err(ApiError::bad_request(
            "expire is at most 1h; refresh the task with PUT to hold longer",
        ));
    }
    Ok(d)
}

/// Task names: 1–128 bytes, no `/`, no control characters.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request("name is required"));
    }
    if name.len() > MAX_NAME || name.contains('/') || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "invalid task name {name:?}: at most {MAX_NAME} bytes, no '/' or control characters"
        )));
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
pub struct TaskBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    expire: Option<Value>,
}

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> Self {
        match e {
            TaskError::Taken(n) => {
                ApiError::new(StatusCode::CONFLICT, format!("task {n:?} already exists"))
            }
            TaskError::TooMany => ApiError::new(
                StatusCode::CONFLICT,
                format!("a sprite holds at most {MAX_TASKS} tasks"),
            ),
        }
    }
}

fn task_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("task {name:?} not found"))
}

/// The task routes, at the paths the in-sprite server rewrites `/v1/tasks...` to.
pub fn routes(tasks: Arc<Tasks>) -> Router<AppState> {
    Router::new()
        .route(
            "/v1/sprites/{name}/tasks",
            get(list).post(create).put(upsert_body),
        )
        .route(
            "/v1/sprites/{name}/tasks/{task}",
            get(one).put(upsert_path).delete(remove),
        )
        .layer(Extension(tasks))
}

#[derive(Debug, Serialize)]
struct TaskList {
    tasks: Vec<TaskView>,
}

async fn list(Extension(b): Extension<Bound>, Extension(t): Extension<Arc<Tasks>>) -> Response {
    Json(TaskList {
        tasks: t.list(&b.sprite_id),
    })
    .into_response()
}

async fn one(
    Extension(b): Extension<Bound>,
    Extension(t): Extension<Arc<Tasks>>,
    ApiPath((_, name)): ApiPath<(String, String)>,
) -> Result<Json<TaskView>, ApiError> {
    t.get(&b.sprite_id, &name)
        .map(Json)
        .ok_or_else(|| task_not_found(&name))
}

async fn create(
    State(st): State<AppState>,
    Extension(b): Extension<Bound>,
    Extension(t): Extension<Arc<Tasks>>,
    ApiJson(body): ApiJson<TaskBody>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    let name = body.name.unwrap_or_default();
    check_name(&name)?;
    let expire = parse_expire(body.expire.as_ref())?;
    let task = t.create(&b.sprite_id, &name, expire)?;
    t.save(&b.sprite_id).await?;
    st.manager.activity().touch(&b.sprite_id);
    tracing::info!(sprite = %b.sprite_name, task = %name, expires_at = %task.expires_at,
        "keep-awake task created");
    Ok((StatusCode::CREATED, Json(task)))
}

async fn upsert(
    st: &AppState,
    b: &Bound,
    t: &Tasks,
    name: &str,
    expire: Option<&Value>,
) -> Result<Json<TaskView>, ApiError> {
    check_name(name)?;
    let expire = parse_expire(expire)?;
    let task = t.upsert(&b.sprite_id, name, expire)?;
    t.save(&b.sprite_id).await?;
    st.manager.activity().touch(&b.sprite_id);
    Ok(Json(task))
}

async fn upsert_path(
    State(st): State<AppState>,
    Extension(b): Extension<Bound>,
    Extension(t): Extension<Arc<Tasks>>,
    ApiPath((_, name)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<TaskBody>,
) -> Result<Json<TaskView>, ApiError> {
    upsert(&st, &b, &t, &name, body.expire.as_ref()).await
}

async fn upsert_body(
    State(st): State<AppState>,
    Extension(b): Extension<Bound>,
    Extension(t): Extension<Arc<Tasks>>,
    ApiJson(body): ApiJson<TaskBody>,
) -> Result<Json<TaskView>, ApiError> {
    let name = body.name.clone().unwrap_or_default();
    upsert(&st, &b, &t, &name, body.expire.as_ref()).await
}

async fn remove(
    Extension(b): Extension<Bound>,
    Extension(t): Extension<Arc<Tasks>>,
    ApiPath((_, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if !t.remove(&b.sprite_id, &name) {
        return Err(task_not_found(&name));
    }
    t.save(&b.sprite_id).await?;
    tracing::info!(sprite = %b.sprite_name, task = %name, "keep-awake task deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expire_values() {
        let ok = |v: Value| parse_expire(Some(&v)).unwrap();
        assert_eq!(parse_expire(None).unwrap(), MAX_EXPIRE);
        assert_eq!(ok(json!(30)), Duration::from_secs(30));
        assert_eq!(ok(json!(1.5)), Duration::from_millis(1500));
        assert_eq!(ok(json!("90")), Duration::from_secs(90));
        assert_eq!(ok(json!("30m")), Duration::from_secs(1800));
        assert_eq!(ok(json!("1h")), MAX_EXPIRE);
        for bad in [
            json!(0),
            json!(-1),
            json!(3601),
            json!("2h"),
            json!("soon"),
            json!(true),
            json!([1]),
        ] {
            assert_eq!(parse_expire(Some(&bad)).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(check_name("agent").is_ok());
        assert!(check_name("my task:1").is_ok());
        for bad in ["", "a/b", "a\nb", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn holds_expire_and_persist() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("sprites/sprite-a")).unwrap();
        let t = Tasks::new(tmp.path().to_path_buf());
        assert!(!t.has_live("sprite-a"));
        let v = t.create("sprite-a", "agent", MAX_EXPIRE).unwrap();
        assert!(v.expires_at > v.started_at);
        assert!(t.has_live("sprite-a"));
        assert!(!t.has_live("sprite-b"));
        assert_eq!(
            t.create("sprite-a", "agent", MAX_EXPIRE),
            Err(TaskError::Taken("agent".into()))
        );
        // Another sprite may use the same name.
        t.create("sprite-b", "agent", MAX_EXPIRE).unwrap();
        // Upsert keeps started_at.
        let v2 = t
            .upsert("sprite-a", "agent", Duration::from_secs(60))
            .unwrap();
        assert_eq!(v2.started_at, v.started_at);
        assert!(v2.expires_at < v.expires_at);
        t.save("sprite-a").await.unwrap();

        // A restart reads the file back.
        let t2 = Tasks::new(tmp.path().to_path_buf());
        t2.load("sprite-a");
        assert_eq!(t2.list("sprite-a"), vec![v2]);

        // Expiry.
        t.create("sprite-a", "short", Duration::from_millis(50))
            .unwrap();
        assert_eq!(t.list("sprite-a").len(), 2);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(t.list("sprite-a").len(), 1);
        assert!(t.get("sprite-a", "short").is_none());
        // An expired name can be taken again.
        t.create("sprite-a", "short", Duration::from_secs(1))
            .unwrap();

        assert!(t.remove("sprite-a", "agent"));
        assert!(!t.remove("sprite-a", "agent"));
        assert!(t.remove("sprite-a", "short"));
        assert!(!t.has_live("sprite-a"));
        t.save("sprite-a").await.unwrap();
        assert!(!tmp.path().join("sprites/sprite-a/tasks.json").exists());
        t.forget("sprite-b");
        assert!(!t.has_live("sprite-b"));
    }
}
