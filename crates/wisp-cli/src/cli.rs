//! Command-line syntax.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "wisp",
    version,
    about = "Manage and use wisp sprites (persistent Linux sandboxes)",
    after_help = "Configuration: --api-url / WISP_API_URL / ~/.config/wisp/config.json / \
                  http://127.0.0.1:7575; token: --token / WISP_TOKEN / config file / a local \
                  daemon's admin-token file. Sprite: -s NAME / WISP_SPRITE / .wisp-sprite."
)]
pub struct Cli {
    /// wispd API URL [env: WISP_API_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub api_url: Option<String>,
    /// API token [env: WISP_TOKEN]
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Sprite to act on [env: WISP_SPRITE; default: nearest .wisp-sprite]
    #[arg(short = 's', long, global = true, value_name = "NAME")]
    pub sprite: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a sprite
    Create(CreateArgs),
    /// List sprites
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show a sprite
    Info(InfoArgs),
    /// Destroy a sprite and everything in it
    #[command(visible_alias = "rm")]
    Destroy(DestroyArgs),
    /// Put a sprite to sleep (warm: frozen with its memory; --cold: processes stopped, files
    /// kept); the next command wakes it
    Sleep(SleepArgs),
    /// Run a command in a sprite
    #[command(visible_alias = "x")]
    Exec(ExecArgs),
    /// Exec sessions of a sprite (they outlive their clients): list, attach, kill
    #[command(visible_alias = "s")]
    Sessions(SessionsArgs),
    /// Attach to a session of a sprite (same as `wisp sessions attach`; detach with Ctrl-\)
    Attach(AttachArgs),
    /// Open an interactive login shell in a sprite (detach with Ctrl-\)
    #[command(visible_alias = "c")]
    Console,
    /// Select the sprite for this directory (writes .wisp-sprite)
    Use(UseArgs),
    /// Save the API URL and/or token to the config file
    Login,
    /// API tokens of an organization: create, list, revoke; attenuate narrows the current
    /// token offline (one sprite or prefix, some operations, an expiry)
    #[command(subcommand, visible_alias = "tokens")]
    Token(crate::cmd::token::TokenCommand),
    /// Organizations: create (admin), list, limits (admin)
    #[command(subcommand, visible_alias = "orgs")]
    Org(crate::cmd::org::OrgCommand),
    /// Checkpoints of a sprite's files: create, list, info, delete, restore
    #[command(subcommand, visible_alias = "checkpoints")]
    Checkpoint(CheckpointCommand),
    /// Restore a sprite's files to a checkpoint (same as `wisp checkpoint restore`); its
    /// processes are restarted
    Restore(RestoreArgs),
    /// Create a new sprite from a checkpoint of another (its latest when none is named)
    Fork(ForkArgs),
    /// Services of a sprite: commands it keeps running (restarted when they crash, started
    /// again on every boot): list, create, get, delete, start, stop, restart, logs, signal
    #[command(subcommand, visible_alias = "service")]
    Services(crate::cmd::services::ServicesCommand),
    /// Copy files between this machine and a sprite (`:PATH` or `NAME:PATH` is in a sprite)
    Cp(CpArgs),
    /// Show a sprite's URL; --public or --private sets who may use it
    Url(UrlArgs),
    /// Forward a local port to a port inside a sprite: [LOCAL:]REMOTE (127.0.0.1:LOCAL)
    Proxy(ProxyArgs),
    /// A sprite's egress (network) policy: get, set FILE, allow DOMAIN, deny DOMAIN
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the new sprite (lowercase letters, digits and '-')
    pub name: String,
    /// Label to attach (repeatable)
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only sprites whose name starts with this
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// Print the sprite objects as a JSON array
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Sprite name (default: the selected sprite)
    pub name: Option<String>,
    /// Print the sprite object as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Sprite name (default: the selected sprite)
    pub name: Option<String>,
    /// Do not ask for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SleepArgs {
    /// Sprite name (default: the selected sprite)
    pub name: Option<String>,
    /// Stop its processes instead of freezing them (files are kept)
    #[arg(long)]
    pub cold: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Allocate a terminal (raw mode locally; stdin is forwarded)
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Environment entry for the command (repeatable)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE",
          value_parser = crate::exec_ws::parse_env_pair)]
    pub env: Vec<(String, String)>,
    /// Working directory in the sprite (absolute)
    #[arg(short = 'd', long, value_name = "DIR")]
    pub dir: Option<String>,
    /// The command and its arguments; without one, list the sprite's sessions
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub cmd: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UseArgs {
    /// Sprite to select; without it, print the current selection
    #[arg(conflicts_with = "unset")]
    pub name: Option<String>,
    /// Remove .wisp-sprite from this directory
    #[arg(long)]
    pub unset: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the policy as JSON (`{"rules":[]}`: unrestricted)
    Get,
    /// Replace the policy with a JSON file's (`-`: stdin)
    Set {
        /// `{"rules":[{"domain":"github.com","action":"allow"},{"include":"defaults"}]}`
        file: String,
    },
    /// Allow a domain pattern (example.com, *.example.com or *); any rule restricts egress
    /// to what the rules allow
    Allow { domain: String },
    /// Deny a domain pattern
    Deny { domain: String },
}

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Save the sprite's files as a new checkpoint; prints its id
    Create(CheckpointCreateArgs),
    /// List the sprite's checkpoints, newest first
    #[command(visible_alias = "ls")]
    List(CheckpointListArgs),
    /// Show one checkpoint
    Info(CheckpointInfoArgs),
    /// Delete a checkpoint (not the one the sprite's files descend from)
    #[command(visible_alias = "rm")]
    Delete(CheckpointIdArgs),
    /// Restore the sprite's files to a checkpoint; its processes are restarted
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct CheckpointCreateArgs {
    /// A note to keep with the checkpoint
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckpointListArgs {
    /// Also list automatic checkpoints (auto-…)
    #[arg(long)]
    pub include_auto: bool,
    /// Print the checkpoint objects as a JSON array
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckpointInfoArgs {
    /// Checkpoint id (v0, v1, …)
    pub id: String,
    /// Print the checkpoint object as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckpointIdArgs {
    /// Checkpoint id (v0, v1, …)
    pub id: String,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Checkpoint id to restore (v0, v1, …)
    pub id: String,
}

#[derive(Debug, Args)]
pub struct ForkArgs {
    /// The sprite to fork, optionally with a checkpoint id: SRC or SRC@v3
    #[arg(value_name = "SRC[@CHECKPOINT]")]
    pub source: String,
    /// Name of the new sprite
    pub name: String,
    /// Label to attach to the new sprite (repeatable)
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Sprite paths: :PATH is in the selected sprite (-s NAME, WISP_SPRITE or .wisp-sprite), \
NAME:PATH in sprite NAME. Relative sprite paths start at /home/sprite. Anything else is a \
local path (write ./a:b for a local name with a colon).

As with cp, a DEST that is an existing directory, or ends in /, receives SRC under its own \
name; otherwise DEST is the new name. Missing directories in a sprite are created. File \
modes are kept; symlinks inside copied trees are skipped. Both sides in one sprite: the copy \
is done in the sprite.

Examples:
  wisp cp -s box notes.txt :            # to /home/sprite/notes.txt in box
  wisp cp box:/var/log/app.log .        # from box to ./app.log
  wisp cp -r ./site :/tmp/              # the tree to /tmp/site
  wisp cp -r :project ./backup          # /home/sprite/project to ./backup")]
pub struct CpArgs {
    /// Copy directories recursively
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Act as root in the sprite (default: the sprite user, with its permissions)
    #[arg(long)]
    pub as_root: bool,
    /// What to copy: a local path, :PATH or NAME:PATH
    #[arg(value_name = "SRC")]
    pub src: String,
    /// Where to: a local path, :PATH or NAME:PATH
    #[arg(value_name = "DEST")]
    pub dest: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_valid() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap()
    }

    #[test]
    fn exec_forms() {
        let c = parse(&[
            "wisp", "exec", "-s", "box", "--env", "A=1", "--", "ls", "-la",
        ]);
        assert_eq!(c.sprite.as_deref(), Some("box"));
        let Command::Exec(e) = c.command else {
            panic!("not exec")
        };
        assert_eq!(e.cmd, vec!["ls", "-la"]);
        assert_eq!(e.env, vec![("A".to_string(), "1".to_string())]);
        let Command::Exec(e) = parse(&["wisp", "x", "-t", "bash", "-c", "x -s y"]).command else {
            panic!("not exec")
        };
        assert!(e.tty);
        assert_eq!(e.cmd, vec!["bash", "-c", "x -s y"]);
        // Without a command, exec lists the sessions.
        let Command::Exec(e) = parse(&["wisp", "exec"]).command else {
            panic!("not exec")
        };
        assert!(e.cmd.is_empty());
        assert!(Cli::try_parse_from(["wisp", "exec", "--env", "bad", "ls"]).is_err());
    }

    #[test]
    fn aliases_and_globals() {
        assert!(matches!(parse(&["wisp", "ls"]).command, Command::List(_)));
        assert!(matches!(
            parse(&["wisp", "rm", "-f", "a"]).command,
            Command::Destroy(_)
        ));
        assert!(matches!(
            parse(&["wisp", "c", "-s", "a"]).command,
            Command::Console
        ));
        let c = parse(&["wisp", "login", "--api-url", "http://x", "--token", "t"]);
        assert_eq!(c.api_url.as_deref(), Some("http://x"));
        assert_eq!(c.token.as_deref(), Some("t"));
        assert!(Cli::try_parse_from(["wisp", "use", "a", "--unset"]).is_err());
        let Command::Sleep(a) = parse(&["wisp", "sleep", "--cold", "a"]).command else {
            panic!("not sleep")
        };
        assert!(a.cold && a.name.as_deref() == Some("a"));
        let c = parse(&["wisp", "sleep", "-s", "b"]);
        assert_eq!(c.sprite.as_deref(), Some("b"));
        assert!(matches!(
            c.command,
            Command::Sleep(SleepArgs {
                cold: false,
                name: None
            })
        ));
    }
}

#[derive(Debug, Args)]
pub struct SessionsArgs {
    #[command(subcommand)]
    pub command: Option<SessionsCommand>,
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List the sprite's sessions (the default)
    #[command(visible_alias = "ls")]
    List {
        /// Print the session objects as a JSON array
        #[arg(long)]
        json: bool,
    },
    /// Attach to a session: replays its recent output, then streams live
    Attach(AttachArgs),
    /// Signal a session's process group (TERM by default), escalating to KILL after --timeout
    Kill(KillArgs),
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Session id (see `wisp sessions`)
    pub id: String,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Session id (see `wisp sessions`)
    pub id: String,
    /// Signal name or number (TERM, INT, HUP, KILL, 9, ...)
    #[arg(long, default_value = "TERM")]
    pub signal: String,
    /// How long to wait before KILL (Go duration: 10s, 500ms; 0 = do not wait)
    #[arg(long)]
    pub timeout: Option<String>,
}

#[derive(Debug, Args)]
pub struct UrlArgs {
    /// Sprite name (default: the selected sprite)
    pub name: Option<String>,
    /// Anyone who can reach the URL may use it
    #[arg(long, conflicts_with = "private")]
    pub public: bool,
    /// Only holders of an org token (the default)
    #[arg(long)]
    pub private: bool,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Ports: REMOTE (same port locally) or LOCAL:REMOTE; LOCAL 0 picks a free port
    #[arg(value_name = "[LOCAL:]REMOTE")]
    pub ports: String,
}
