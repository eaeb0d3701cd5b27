//! `wispd image build`: builds the default base image in the foreground with a progress bar,
//! for the setup script and for people who prefer not to wait on the first create.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::image;

pub fn run(image_dir: &Path) -> anyhow::Result<()> {
    if image::is_ready(image_dir) {
        eprintln!(
            "base image already built: {}",
            image::rootfs_path(image_dir).display()
        );
        return Ok(());
    }
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message("building the Debian bookworm base image");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let progress = |p: image::ImageProgress| {
        bar.set_length(p.total.max(1));
        bar.set_position(p.done);
        bar.set_message(p.step);
    };
    let result = rt.block_on(image::build_base_image(image_dir, &progress));
    match result {
        Ok(rootfs) => {
            bar.finish_with_message("done");
            eprintln!("base image ready: {}", rootfs.display());
            Ok(())
        }
        Err(e) => {
            bar.abandon_with_message("failed");
            Err(e).context("building the base image (needs root, debootstrap and a Debian mirror)")
        }
    }
}
