//! `wisp`: the command-line client of wispd. It talks to the daemon only through the public
//! HTTP/WebSocket API.

mod cli;
mod client;
mod cmd;
mod config;
mod exec_ws;
mod ndjson;
mod selection;
mod term;

use std::io::Write;

use clap::Parser;

use cli::{Cli, Command};
use cmd::Ctx;

fn main() {
    term::install_panic_hook();
    // One TLS backend for both reqwest and the WebSocket client; ignore "already installed".
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(run(cli));
    // Exit while the runtime is still alive: dropping it would wait for a blocking stdin read
    // that may never finish.
    std::process::exit(finish(code));
}

fn finish(code: i32) -> i32 {
    term::restore();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    code
}

async fn run(cli: Cli) -> i32 {
    let ctx = Ctx {
        api_url: cli.api_url,
        token: cli.token,
        sprite: cli.sprite,
    };
    let result = match cli.command {
        Command::Create(a) => cmd::create::run(&ctx, a).await,
        Command::List(a) => cmd::list::run(&ctx, a).await,
        Command::Info(a) => cmd::info::run(&ctx, a).await,
        Command::Destroy(a) => cmd::destroy::run(&ctx, a).await,
        Command::Sleep(a) => cmd::sleep::run(&ctx, a).await,
        Command::Exec(a) => cmd::exec::run(&ctx, a).await,
        Command::Console => cmd::console::run(&ctx).await,
        Command::Sessions(a) => cmd::sessions::run(&ctx, a).await,
        Command::Attach(a) => cmd::sessions::attach(&ctx, a).await,
        Command::Use(a) => cmd::use_sprite::run(&ctx, a).await,
        Command::Login => cmd::login::run(&ctx).await,
        Command::Token(c) => cmd::token::run(&ctx, c).await,
        Command::Org(c) => cmd::org::run(&ctx, c).await,
        Command::Checkpoint(c) => cmd::checkpoint::run(&ctx, c).await,
        Command::Restore(a) => cmd::restore::run(&ctx, a).await,
        Command::Fork(a) => cmd::fork::run(&ctx, a).await,
        Command::Services(c) => cmd::services::run(&ctx, c).await,
        Command::Cp(a) => cmd::cp::run(&ctx, a).await,
        Command::Url(a) => cmd::url::run(&ctx, a).await,
        Command::Proxy(a) => cmd::proxy::run(&ctx, a).await,
        Command::Policy(c) => cmd::policy::run(&ctx, c).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            term::restore();
            eprintln!("error: {e:#}");
            1
        }
    }
}
