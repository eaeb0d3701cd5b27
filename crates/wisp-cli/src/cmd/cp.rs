//! `wisp cp [-s NAME] [-r] [--as-root] SRC DEST`: copies files and directory trees between
//! this machine and a sprite (or within one sprite) through the fs API, streaming both ways.
//!
//! A sprite path is written `:PATH` (the selected sprite: `-s`, `WISP_SPRITE` or
//! `.wisp-sprite`) or `NAME:PATH`; anything else is local (write `./a:b` for a local name with
//! a colon). Relative sprite paths start at the sprite user's home, `/home/sprite`, as with
//! scp. As with cp: a DEST that is an existing directory (or ends in `/`) receives SRC under
//! its own name; otherwise DEST is the new name. Symlinks inside copied trees are skipped
//! (with a warning); file modes are kept.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use super::Ctx;
use crate::cli::CpArgs;
use crate::client::{api_error, sprite_path, Client, DEFAULT_TIMEOUT, TRANSFER_TIMEOUT};
use crate::selection::check_name;

/// Where relative sprite paths start.
pub const SPRITE_HOME: &str = "/home/sprite";
/// Transfers smaller than this show no progress bar.
const PROGRESS_MIN_BYTES: u64 = 1 << 20;
const UPLOAD_CHUNK: usize = 256 * 1024;

/// One side of a copy, as written on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Local(PathBuf),
    /// `sprite` is `None` for `:PATH` (the selected sprite).
    Remote {
        sprite: Option<String>,
        path: String,
    },
}

/// `:PATH`, `NAME:PATH` or a local path. A colon after a `/` belongs to a local path.
pub fn parse_arg(arg: &str) -> Result<Arg> {
    if arg.is_empty() {
        bail!("empty path");
    }
    if let Some(path) = arg.strip_prefix(':') {
        return Ok(Arg::Remote {
            sprite: None,
            path: path.to_string(),
        });
    }
    if let Some((name, path)) = arg.split_once(':') {
        if !name.contains('/') {
            check_name(name).with_context(|| {
                format!("in {arg:?} (write ./{arg} for a local path that contains ':')")
            })?;
            return Ok(Arg::Remote {
                sprite: Some(name.to_string()),
                path: path.to_string(),
            });
        }
    }
    Ok(Arg::Local(PathBuf::from(arg)))
}

/// A sprite path made absolute (relative to [`SPRITE_HOME`]) and clean, and whether it was
/// written with a trailing `/` (it must then be a directory).
pub fn sprite_abs(path: &str) -> (String, bool) {
    let dir_hint = path.is_empty() || path.ends_with('/');
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{SPRITE_HOME}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    (format!("/{}", parts.join("/")), dir_hint)
}

/// `dir` + `/` + `name` for clean sprite paths.
fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The last component of a clean sprite path (`/` for the root).
fn base_name(path: &str) -> &str {
    path.rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("/")
}

/// One entry of `fs/list`.
#[derive(Debug, Clone, Deserialize)]
struct Entry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    mode: String,
    #[serde(default, rename = "isDir")]
    is_dir: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct Listing {
    path: String,
    #[serde(default)]
    entries: Vec<Entry>,
}

/// What a sprite path is.
#[derive(Debug)]
enum Kind {
    Missing,
    File(Entry),
    Dir,
}

fn mode_bits(mode: &str) -> u32 {
    u32::from_str_radix(mode, 8).unwrap_or(0o644) & 0o7777
}

/// A sprite's files through the API.
struct Remote<'a> {
    client: &'a Client,
    sprite: String,
    as_root: bool,
}

impl Remote<'_> {
    fn url(&self, op: &str) -> String {
        format!("{}/fs/{op}", sprite_path(&self.sprite))
    }

    fn root_flag(&self) -> &'static str {
        if self.as_root {
            "true"
        } else {
            "false"
        }
    }

    async fn list(&self, path: &str, recursive: bool) -> Result<Option<Listing>> {
        let q = [
            ("path", path),
            ("recursive", if recursive { "true" } else { "false" }),
            ("asRoot", self.root_flag()),
        ];
        let resp = self
            .client
            .send_raw(Method::GET, &self.url("list"), &q, None, TRANSFER_TIMEOUT)
            .await?;
        let status = resp.status().as_u16();
        if status == 200 {
            let v = self.client.json_of(resp).await?;
            return Ok(Some(
                serde_json::from_value(v).context("wispd sent a listing this wisp cannot read")?,
            ));
        }
        let body = resp.bytes().await.unwrap_or_default();
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_string));
        if status == 404 && code.as_deref() == Some("ENOENT") {
            return Ok(None);
        }
        Err(api_error(status, &body, self.client.settings().token_source).into())
    }

    /// A `list` on a file answers that file alone; on a directory its children.
    async fn stat(&self, path: &str) -> Result<Kind> {
        Ok(match self.list(path, false).await? {
            None => Kind::Missing,
            Some(l) => match l.entries.as_slice() {
                [e] if e.path == l.path && !e.is_dir => Kind::File(e.clone()),
                _ => Kind::Dir,
            },
        })
    }

    async fn upload(&self, local: &Path, remote: &str, mode: u32, pb: &ProgressBar) -> Result<()> {
        let file = tokio::fs::File::open(local)
            .await
            .with_context(|| format!("cannot read {}", local.display()))?;
        let bar = pb.clone();
        let stream = ReaderStream::with_capacity(file, UPLOAD_CHUNK).inspect(move |r| {
            if let Ok(b) = r {
                bar.inc(b.len() as u64);
            }
        });
        let mode = format!("{mode:04o}");
        let q = [
            ("path", remote),
            ("mode", mode.as_str()),
            ("mkdirParents", "true"),
            ("asRoot", self.root_flag()),
        ];
        let body = reqwest::Body::wrap_stream(stream);
        let resp = self
            .client
            .send_raw(
                Method::PUT,
                &self.url("write"),
                &q,
                Some(body),
                TRANSFER_TIMEOUT,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.client.error_of(resp).await);
        }
        Ok(())
    }

    /// Streams a sprite file into `local` through a temporary file next to it, renamed into
    /// place once complete.
    async fn download(
        &self,
        remote: &str,
        local: &Path,
        mode: u32,
        pb: &ProgressBar,
    ) -> Result<()> {
        let q = [("path", remote), ("asRoot", self.root_flag())];
        let resp = self
            .client
            .send_raw(Method::GET, &self.url("read"), &q, None, TRANSFER_TIMEOUT)
            .await?;
        if !resp.status().is_success() {
            return Err(self.client.error_of(resp).await);
        }
        let part = PartFile::new(local);
        let mut out = tokio::fs::File::create(&part.path)
            .await
            .with_context(|| format!("cannot write {}", local.display()))?;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.client.stream_error(&e))?;
            out.write_all(&chunk)
                .await
                .with_context(|| format!("cannot write {}", local.display()))?;
            pb.inc(chunk.len() as u64);
        }
        out.flush().await?;
        drop(out);
        set_mode(&part.path, mode)?;
        part.commit(local)
    }

    /// Creates a directory (and its parents): the API has no mkdir, so an empty marker file
    /// is written in it with `mkdirParents` and deleted again.
    async fn mkdir(&self, dir: &str) -> Result<()> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let marker = join(dir, &format!(".wisp-mkdir-{}-{nanos}", std::process::id()));
        let q = [
            ("path", marker.as_str()),
            ("mkdirParents", "true"),
            ("asRoot", self.root_flag()),
        ];
        let resp = self
            .client
            .send_raw(
                Method::PUT,
                &self.url("write"),
                &q,
                Some(Vec::new().into()),
                DEFAULT_TIMEOUT,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.client.error_of(resp).await);
        }
        let q = [("path", marker.as_str()), ("asRoot", self.root_flag())];
        let resp = self
            .client
            .send_raw(
                Method::DELETE,
                &self.url("delete"),
                &q,
                None,
                DEFAULT_TIMEOUT,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.client.error_of(resp).await);
        }
        Ok(())
    }
}

/// `<dir>/.<name>.wisp-part-<pid>`, removed unless committed.
struct PartFile {
    path: PathBuf,
    done: bool,
}

impl PartFile {
    fn new(target: &Path) -> PartFile {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = target.parent().unwrap_or(Path::new(""));
        PartFile {
            path: dir.join(format!(".{name}.wisp-part-{}", std::process::id())),
            done: false,
        }
    }

    fn commit(mut self, target: &Path) -> Result<()> {
        std::fs::rename(&self.path, target)
            .with_context(|| format!("cannot write {}", target.display()))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

fn local_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

fn progress(total: u64) -> ProgressBar {
    if total < PROGRESS_MIN_BYTES {
        return ProgressBar::hidden();
    }
    // Drawn on stderr only, and only when it is a terminal (indicatif checks).
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

pub async fn run(ctx: &Ctx, args: CpArgs) -> Result<i32> {
    let src = parse_arg(&args.src)?;
    let dest = parse_arg(&args.dest)?;
    let client = ctx.client()?;
    let remote = |sprite: &Option<String>| -> Result<Remote<'_>> {
        Ok(Remote {
            client: &client,
            sprite: match sprite {
                Some(s) => s.clone(),
                None => ctx.sprite(None)?,
            },
            as_root: args.as_root,
        })
    };
    match (&src, &dest) {
        (Arg::Local(_), Arg::Local(_)) => bail!(
            "neither {} nor {} is in a sprite: write the sprite side as :PATH or NAME:PATH",
            args.src,
            args.dest
        ),
        (Arg::Local(l), Arg::Remote { sprite, path }) => {
            upload(&remote(sprite)?, l, path, args.recursive).await?
        }
        (Arg::Remote { sprite, path }, Arg::Local(l)) => {
            download(&remote(sprite)?, path, l, args.recursive).await?
        }
        (
            Arg::Remote {
                sprite: a,
                path: sp,
            },
            Arg::Remote {
                sprite: b,
                path: dp,
            },
        ) => {
            let r = remote(a)?;
            let other = match b {
                Some(s) => s.clone(),
                None => ctx.sprite(None)?,
            };
            if other != r.sprite {
                bail!(
                    "copying from sprite {} to sprite {other} is not supported: copy through a \
                     local directory",
                    r.sprite
                );
            }
            within(&r, sp, dp, args.recursive).await?
        }
    }
    Ok(0)
}

/// Local → sprite.
async fn upload(r: &Remote<'_>, local: &Path, dest: &str, recursive: bool) -> Result<()> {
    let meta =
        std::fs::metadata(local).with_context(|| format!("cannot read {}", local.display()))?;
    let (dest, dir_hint) = sprite_abs(dest);
    // `.` and `..` are named after the directory they stand for.
    let local_name = std::fs::canonicalize(local)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .ok_or_else(|| anyhow!("cannot copy {}: it has no name", local.display()))?;
    let kind = r.stat(&dest).await?;
    if meta.is_dir() && !recursive {
        bail!("{} is a directory: use -r to copy it", local.display());
    }
    let target = match (&kind, dir_hint) {
        (Kind::Dir, _) => join(&dest, &local_name),
        (Kind::Missing, true) if !meta.is_dir() => {
            bail!("{}:{dest}/ does not exist", r.sprite)
        }
        (Kind::File(_), true) => bail!("{}:{dest} is not a directory", r.sprite),
        _ => dest.clone(),
    };
    if !meta.is_dir() {
        let pb = progress(meta.len());
        pb.set_message(local_name);
        r.upload(local, &target, local_mode(&meta), &pb).await?;
        pb.finish_and_clear();
        return Ok(());
    }
    if matches!(r.stat(&target).await?, Kind::File(_)) {
        bail!("{}:{target} exists and is not a directory", r.sprite);
    }
    let mut tree = LocalTree::default();
    tree.walk(local, "")?;
    let pb = progress(tree.bytes);
    if !tree.has_files.contains(&String::new()) {
        r.mkdir(&target).await?;
    }
    for dir in &tree.dirs {
        if !tree.has_files.contains(dir) {
            r.mkdir(&join(&target, dir)).await?;
        }
    }
    for (path, rel, mode) in &tree.files {
        pb.set_message(rel.clone());
        r.upload(path, &join(&target, rel), *mode, &pb)
            .await
            .with_context(|| format!("copying {}", path.display()))?;
    }
    pb.finish_and_clear();
    for s in &tree.skipped {
        eprintln!(
            "wisp cp: skipped {} (not a regular file or directory)",
            s.display()
        );
    }
    Ok(())
}

/// A local directory tree to upload.
#[derive(Debug, Default)]
struct LocalTree {
    /// (local path, path relative to the top, mode)
    files: Vec<(PathBuf, String, u32)>,
    /// Every subdirectory, relative.
    dirs: Vec<String>,
    /// Directories (relative; "" is the top) with a file somewhere below.
    has_files: std::collections::HashSet<String>,
    skipped: Vec<PathBuf>,
    bytes: u64,
}

impl LocalTree {
    /// Walks `dir` (relative path `rel`); returns whether a file was found below it.
    fn walk(&mut self, dir: &Path, rel: &str) -> Result<bool> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot read {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        let mut any = false;
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = std::fs::symlink_metadata(e.path())
                .with_context(|| format!("cannot read {}", e.path().display()))?;
            if meta.is_dir() {
                self.dirs.push(child_rel.clone());
                any |= self.walk(&e.path(), &child_rel)?;
            } else if meta.is_file() {
                self.bytes += meta.len();
                self.files.push((e.path(), child_rel, local_mode(&meta)));
                any = true;
            } else {
                self.skipped.push(e.path());
            }
        }
        if any {
            self.has_files.insert(rel.to_string());
        }
        Ok(any)
    }
}

/// Sprite → local.
async fn download(r: &Remote<'_>, src: &str, local: &Path, recursive: bool) -> Result<()> {
    let (src, _) = sprite_abs(src);
    let kind = r.stat(&src).await?;
    let local_is_dir = local.is_dir();
    let dir_hint = local.as_os_str().to_string_lossy().ends_with('/');
    let name = base_name(&src).to_string();
    let target = if local_is_dir && name == "/" {
        local.to_path_buf()
    } else if local_is_dir {
        local.join(&name)
    } else if dir_hint {
        bail!("{} is not a directory", local.display());
    } else {
        local.to_path_buf()
    };
    match kind {
        Kind::Missing => bail!("{}:{src}: no such file or directory", r.sprite),
        Kind::File(e) => {
            let pb = progress(e.size);
            pb.set_message(name);
            r.download(&src, &target, mode_bits(&e.mode), &pb).await?;
            pb.finish_and_clear();
            Ok(())
        }
        Kind::Dir if !recursive => bail!("{}:{src} is a directory: use -r to copy it", r.sprite),
        Kind::Dir => {
            let listing = r
                .list(&src, true)
                .await?
                .ok_or_else(|| anyhow!("{}:{src}: no such file or directory", r.sprite))?;
            let prefix = format!("{}/", listing.path.trim_end_matches('/'));
            if target.exists() && !target.is_dir() {
                bail!("{} exists and is not a directory", target.display());
            }
            std::fs::create_dir_all(&target)
                .with_context(|| format!("cannot create {}", target.display()))?;
            let total = listing
                .entries
                .iter()
                .filter(|e| e.kind == "file")
                .map(|e| e.size)
                .sum();
            let pb = progress(total);
            let mut skipped = Vec::new();
            for e in &listing.entries {
                let Some(rel) = e.path.strip_prefix(&prefix) else {
                    continue;
                };
                // Never outside the target, whatever the listing says.
                if rel
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
                {
                    continue;
                }
                let to = target.join(rel);
                match e.kind.as_str() {
                    "directory" => std::fs::create_dir_all(&to)
                        .with_context(|| format!("cannot create {}", to.display()))?,
                    "file" => {
                        pb.set_message(rel.to_string());
                        if let Some(parent) = to.parent() {
                            std::fs::create_dir_all(parent)
                                .with_context(|| format!("cannot create {}", parent.display()))?;
                        }
                        r.download(&e.path, &to, mode_bits(&e.mode), &pb)
                            .await
                            .with_context(|| format!("copying {}:{}", r.sprite, e.path))?;
                    }
                    _ => skipped.push(e.path.clone()),
                }
            }
            pb.finish_and_clear();
            for s in skipped {
                eprintln!("wisp cp: skipped {}:{s} (a symlink)", r.sprite);
            }
            Ok(())
        }
    }
}

/// Sprite → same sprite, done by the server (`fs/copy`).
async fn within(r: &Remote<'_>, src: &str, dest: &str, recursive: bool) -> Result<()> {
    let (src, _) = sprite_abs(src);
    let (dest, dir_hint) = sprite_abs(dest);
    let target = match r.stat(&dest).await? {
        Kind::Dir => join(&dest, base_name(&src)),
        Kind::File(_) if dir_hint => bail!("{}:{dest} is not a directory", r.sprite),
        _ => dest,
    };
    let body = json!({
        "source": src,
        "dest": target,
        "recursive": recursive,
        "asRoot": r.as_root,
    });
    r.client
        .post_json(
            &format!("{}/fs/copy", sprite_path(&r.sprite)),
            &body,
            TRANSFER_TIMEOUT,
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let remote = |s: Option<&str>, p: &str| Arg::Remote {
            sprite: s.map(str::to_string),
            path: p.to_string(),
        };
        assert_eq!(
            parse_arg(":/etc/hosts").unwrap(),
            remote(None, "/etc/hosts")
        );
        assert_eq!(parse_arg(":").unwrap(), remote(None, ""));
        assert_eq!(
            parse_arg("box:notes.txt").unwrap(),
            remote(Some("box"), "notes.txt")
        );
        assert_eq!(parse_arg("box:").unwrap(), remote(Some("box"), ""));
        assert_eq!(
            parse_arg("file.txt").unwrap(),
            Arg::Local("file.txt".into())
        );
        assert_eq!(parse_arg("./a:b").unwrap(), Arg::Local("./a:b".into()));
        assert_eq!(
            parse_arg("/tmp/x:y").unwrap(),
            Arg::Local("/tmp/x:y".into())
        );
        let e = parse_arg("Bad_Name:x").unwrap_err();
        assert!(format!("{e:#}").contains("./Bad_Name:x"), "{e:#}");
        assert!(parse_arg("").is_err());
    }

    #[test]
    fn command_line() {
        use clap::Parser;
        let c =
            crate::cli::Cli::try_parse_from(["wisp", "cp", "-r", "-s", "box", "a", ":b/"]).unwrap();
        assert_eq!(c.sprite.as_deref(), Some("box"));
        let crate::cli::Command::Cp(a) = c.command else {
            panic!("not cp")
        };
        assert!(a.recursive && !a.as_root);
        assert_eq!((a.src.as_str(), a.dest.as_str()), ("a", ":b/"));
        assert!(crate::cli::Cli::try_parse_from(["wisp", "cp", "only-one"]).is_err());
    }

    #[test]
    fn sprite_paths() {
        assert_eq!(sprite_abs(""), ("/home/sprite".to_string(), true));
        assert_eq!(sprite_abs("a/b"), ("/home/sprite/a/b".to_string(), false));
        assert_eq!(sprite_abs("a/b/"), ("/home/sprite/a/b".to_string(), true));
        assert_eq!(sprite_abs("/etc/../tmp//x"), ("/tmp/x".to_string(), false));
        assert_eq!(sprite_abs("../../../x"), ("/x".to_string(), false));
        assert_eq!(sprite_abs("/"), ("/".to_string(), true));
        assert_eq!(base_name("/a/b"), "b");
        assert_eq!(base_name("/"), "/");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(mode_bits("0755"), 0o755);
        assert_eq!(mode_bits("junk"), 0o644);
    }
}
