//! Request parameters and response bodies of the fs API (Sprites API §3.7), camelCase on the
//! wire like the SDKs send and read them.

use serde::{Deserialize, Deserializer, Serialize};

use super::errors::FsError;
use crate::timefmt;

/// Query pairs of a request; a repeated key's last value wins.
#[derive(Debug, Clone, Default)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first of `keys` that is present.
    pub fn get_any(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.get(k))
    }

    pub fn flag(&self, key: &str) -> Result<Option<bool>, FsError> {
        self.get(key).map(|v| parse_bool(key, v)).transpose()
    }

    pub fn flag_any(&self, keys: &[&str]) -> Result<Option<bool>, FsError> {
        for k in keys {
            if let Some(v) = self.flag(k)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    pub fn number(&self, key: &str) -> Result<Option<u64>, FsError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse().map_err(|_| {
                    FsError::bad(format!("invalid {key} {v:?}: expected a byte offset"))
                })
            })
            .transpose()
    }

    /// `path`, required.
    pub fn path(&self) -> Result<&str, FsError> {
        self.get("path")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| FsError::bad("path is required"))
    }

    pub fn working_dir(&self) -> Option<&str> {
        self.get_any(&["workingDir", "working_dir"])
    }

    pub fn as_root(&self) -> Result<bool, FsError> {
        Ok(self.flag_any(&["asRoot", "as_root"])?.unwrap_or(false))
    }
}

pub fn parse_bool(key: &str, v: &str) -> Result<bool, FsError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(FsError::bad(format!(
            "invalid {key} {v:?}: expected true or false"
        ))),
    }
}

/// An octal permission string (`0644`, `755`, `0o700`) → mode bits (at most `07777`).
pub fn parse_mode(v: &str) -> Result<u32, FsError> {
    let digits = v.strip_prefix("0o").unwrap_or(v);
    let bad = || FsError::bad(format!("invalid mode {v:?}: expected octal like 0644"));
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(bad());
    }
    let m = u32::from_str_radix(digits, 8).map_err(|_| bad())?;
    if m > 0o7777 {
        return Err(bad());
    }
    Ok(m)
}

/// `0644`-style text of the permission bits of `mode`.
pub fn mode_string(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// A JSON boolean, also accepted as `"true"`/`"false"` text, or null.
fn de_flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
        Num(i64),
    }
    match Option::<Flag>::deserialize(d)? {
        None => Ok(false),
        Some(Flag::Bool(b)) => Ok(b),
        Some(Flag::Num(n)) => Ok(n != 0),
        Some(Flag::Text(t)) => parse_bool("flag", &t)
            .map_err(|_| serde::de::Error::custom(format!("expected true or false, got {t:?}"))),
    }
}

/// A mode as the JSON bodies send it: octal text (`"0755"`), or the number itself.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ModeValue {
    Text(String),
    Number(u32),
}

impl ModeValue {
    pub fn bits(&self) -> Result<u32, FsError> {
        match self {
            ModeValue::Text(t) => parse_mode(t),
            ModeValue::Number(n) if *n <= 0o7777 => Ok(*n),
            ModeValue::Number(n) => Err(FsError::bad(format!("invalid mode {n}"))),
        }
    }
}

/// `DELETE .../fs/delete` may carry its parameters as JSON too.
// Serialize only because the schema derive renders `serde(default)` as the schema default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct DeleteBody {
    pub path: Option<String>,
    #[serde(alias = "working_dir")]
    pub working_dir: Option<String>,
    #[serde(deserialize_with = "de_flag")]
    pub recursive: bool,
    #[serde(alias = "as_root", deserialize_with = "de_flag")]
    pub as_root: bool,
}

// Serialize only because the schema derive renders `serde(default)` as the schema default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct RenameBody {
    #[schema(min_length = 1)]
    pub source: String,
    #[schema(min_length = 1)]
    pub dest: String,
    #[serde(alias = "working_dir")]
    pub working_dir: Option<String>,
    #[serde(alias = "as_root", deserialize_with = "de_flag")]
    pub as_root: bool,
}

// Serialize only because the schema derive renders `serde(default)` as the schema default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct CopyBody {
    #[schema(min_length = 1)]
    pub source: String,
    #[schema(min_length = 1)]
    pub dest: String,
    #[serde(alias = "working_dir")]
    pub working_dir: Option<String>,
    #[serde(deserialize_with = "de_flag")]
    pub recursive: bool,
    #[serde(alias = "preserve_attrs", deserialize_with = "de_flag")]
    pub preserve_attrs: bool,
    #[serde(alias = "as_root", deserialize_with = "de_flag")]
    pub as_root: bool,
}

// Serialize only because the schema derive renders `serde(default)` as the schema default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ChmodBody {
    #[schema(min_length = 1)]
    pub path: String,
    #[serde(alias = "working_dir")]
    pub working_dir: Option<String>,
    pub mode: Option<ModeValue>,
    #[serde(deserialize_with = "de_flag")]
    pub recursive: bool,
    #[serde(alias = "as_root", deserialize_with = "de_flag")]
    pub as_root: bool,
}

// Serialize only because the schema derive renders `serde(default)` as the schema default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ChownBody {
    #[schema(min_length = 1)]
    pub path: String,
    #[serde(alias = "working_dir")]
    pub working_dir: Option<String>,
    /// Absent, null or -1: unchanged.
    pub uid: Option<i64>,
    pub gid: Option<i64>,
    #[serde(deserialize_with = "de_flag")]
    pub recursive: bool,
    #[serde(alias = "as_root", deserialize_with = "de_flag")]
    pub as_root: bool,
}

/// `-1`/absent → unchanged; otherwise a valid id.
pub fn id_arg(name: &str, v: Option<i64>) -> Result<Option<u32>, FsError> {
    match v {
        None | Some(-1) => Ok(None),
        Some(n) if (0..i64::from(u32::MAX)).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(FsError::bad(format!("invalid {name} {n}"))),
    }
}

/// One file as `list` describes it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    pub mode: String,
    pub mod_time: String,
    pub is_dir: bool,
}

impl Entry {
    pub fn new(name: &str, path: &str, st: &rustix::fs::Stat) -> Entry {
        use rustix::fs::FileType;
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => "directory",
            FileType::Symlink => "symlink",
            _ => "file",
        };
        let mod_time = chrono::DateTime::from_timestamp(st.st_mtime, st.st_mtime_nsec as u32)
            .map(timefmt::format)
            .unwrap_or_else(|| "1970-01-01T00:00:00.000000Z".to_string());
        Entry {
            name: name.to_string(),
            path: path.to_string(),
            kind,
            size: st.st_size.max(0) as u64,
            mode: mode_string(st.st_mode),
            mod_time,
            is_dir: kind == "directory",
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ListResponse {
    pub path: String,
    pub entries: Vec<Entry>,
    pub count: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WriteResponse {
    pub path: String,
    pub size: u64,
    pub mode: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeleteResponse {
    pub deleted: Vec<String>,
    pub count: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RenameResponse {
    pub source: String,
    pub dest: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CopiedItem {
    pub source: String,
    pub dest: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopyResponse {
    pub copied: Vec<CopiedItem>,
    pub count: usize,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChmodItem {
    pub path: String,
    pub mode: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChownItem {
    pub path: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Affected<T> {
    pub affected: Vec<T>,
    pub count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644").unwrap(), 0o644);
        assert_eq!(parse_mode("755").unwrap(), 0o755);
        assert_eq!(parse_mode("0o700").unwrap(), 0o700);
        assert_eq!(parse_mode("4755").unwrap(), 0o4755);
        for bad in ["", "abc", "0888", "17777", "-1", "0o", "9"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
        assert_eq!(mode_string(0o100644), "0644");
        assert_eq!(mode_string(0o40755), "0755");
        assert_eq!(ModeValue::Number(0o755).bits().unwrap(), 0o755);
        assert!(ModeValue::Number(70000).bits().is_err());
    }

    #[test]
    fn queries_and_flags() {
        let q = Query(vec![
            ("path".into(), "a".into()),
            ("recursive".into(), "true".into()),
            ("path".into(), "b".into()),
            ("mkdir".into(), "0".into()),
            ("asRoot".into(), "maybe".into()),
        ]);
        assert_eq!(q.path().unwrap(), "b");
        assert_eq!(q.flag("recursive").unwrap(), Some(true));
        assert_eq!(q.flag_any(&["mkdirParents", "mkdir"]).unwrap(), Some(false));
        assert!(q.as_root().is_err());
        assert_eq!(q.flag("nope").unwrap(), None);
        assert!(Query::default().path().is_err());
    }

    #[test]
    fn bodies() {
        let b: CopyBody = serde_json::from_str(
            r#"{"source":"a","dest":"b","workingDir":"/w","recursive":"true","preserveAttrs":null}"#,
        )
        .unwrap();
        assert!(b.recursive && !b.preserve_attrs && !b.as_root);
        assert_eq!(b.working_dir.as_deref(), Some("/w"));
        let c: ChmodBody = serde_json::from_str(r#"{"path":"x","mode":"0755"}"#).unwrap();
        assert_eq!(c.mode.unwrap().bits().unwrap(), 0o755);
        let c: ChownBody = serde_json::from_str(r#"{"path":"x","uid":1000,"gid":-1}"#).unwrap();
        assert_eq!(id_arg("uid", c.uid).unwrap(), Some(1000));
        assert_eq!(id_arg("gid", c.gid).unwrap(), None);
        assert!(id_arg("uid", Some(-5)).is_err());
        assert!(serde_json::from_str::<RenameBody>(r#"{"source":1}"#).is_err());
    }
}
