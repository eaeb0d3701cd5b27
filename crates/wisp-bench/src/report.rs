//! Output: tables on stdout, results.json and report.md.

use std::path::Path;

use anyhow::Result;

use crate::stats::{Figure, Quantity, Scaling};

fn fmt(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "-".into()
    }
}

/// A ratio with at least two significant digits: 1.04, 0.31, 0.0032.
pub fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        return "-".into();
    }
    let digits = if r > 0.0 && r < 0.1 {
        (1 - r.log10().floor() as i32).max(2) as usize
    } else {
        2
    };
    format!("{r:.digits$}x")
}

fn row(f: &Figure) -> [String; 6] {
    let ratio = match (&f.ratio, &f.vs, &f.skipped) {
        (_, _, Some(why)) => format!("skipped: {why}"),
        (Some(r), Some(vs), _) => {
            let mut s = format!("{} {vs}", fmt_ratio(*r));
            for c in &f.also {
                s.push_str(&format!("; {} {}", fmt_ratio(c.ratio), c.vs));
            }
            s
        }
        _ => String::new(),
    };
    [
        f.name.clone(),
        fmt(f.median_ms),
        fmt(f.min_ms),
        fmt(f.p90_ms),
        f.n.to_string(),
        ratio,
    ]
}

fn scaling_row(s: &Scaling) -> [String; 4] {
    [
        s.operation.clone(),
        format!("{} ms", fmt(s.small_ms)),
        format!("{} ms", fmt(s.big_ms)),
        fmt_ratio(s.ratio),
    ]
}

pub fn print_table(figs: &[Figure]) {
    println!(
        "{:<48} {:>10} {:>9} {:>10} {:>5}  ratio",
        "figure", "median ms", "min ms", "p90 ms", "n"
    );
    for f in figs {
        let r = row(f);
        println!(
            "{:<48} {:>10} {:>9} {:>10} {:>5}  {}",
            r[0], r[1], r[2], r[3], r[4], r[5]
        );
    }
}

/// How each storage operation's median grows from the small sprite to the big one.
pub fn print_scaling(rows: &[Scaling]) {
    let Some(first) = rows.first() else {
        return;
    };
    println!();
    println!(
        "{:<36} {:>14} {:>14}  {} / {} (goal for wisp: ~1)",
        "operation", first.small, first.big, first.big, first.small
    );
    for s in rows {
        let r = scaling_row(s);
        println!("{:<36} {:>14} {:>14}  {}", r[0], r[1], r[2], r[3]);
    }
}

/// A quantity's value: at most one decimal for big numbers, two significant digits for small.
pub fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Amounts that are not times (the density suite's memory per sprite, say).
pub fn print_quantities(rows: &[Quantity]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!("{:<58} {:>10} {:<8}  how", "measure", "value", "unit");
    for q in rows {
        println!(
            "{:<58} {:>10} {:<8}  {}",
            q.name,
            fmt_value(q.value),
            q.unit,
            q.note
        );
    }
}

/// What a run was: when, how it was asked for, on what, how long it took.
pub struct Meta {
    /// `date -u` at the start.
    pub started: String,
    /// The command line.
    pub command: String,
    /// The machine description (Markdown), with the load average at the start.
    pub machine: String,
    /// The load average at the end (`/proc/loadavg`'s first three fields).
    pub load_end: String,
    pub elapsed: std::time::Duration,
}

/// Runs `program args` and returns its first line of output, or `-`.
fn first_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            let out = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            out.lines().next().map(|l| l.trim().to_string())
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "-".into())
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "-".into())
}

/// The UTC time now (`date -u`), ISO 8601 to the minute.
pub fn now() -> String {
    first_line("date", &["-u", "+%Y-%m-%dT%H:%MZ"])
}

/// CPU, cores, memory, kernel, load, the peers' versions: read at the start of a run.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "-".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = |k: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or("-".into(), |kib| {
                format!("{:.1} GiB", kib / (1 << 20) as f64)
            })
    };
    let procs = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count()
        })
        .unwrap_or(0);
    let mut md = String::from("| | |\n|---|---|\n");
    let mut row = |k: &str, v: String| md.push_str(&format!("| {k} | {v} |\n"));
    row("CPU", format!("{model}, {cores} cores"));
    row(
        "memory",
        format!(
            "{} total, {} available at the start",
            mem("MemTotal:"),
            mem("MemAvailable:")
        ),
    );
    row("kernel", first_line("uname", &["-srvm"]));
    row(
        "OS",
        first_line("sh", &["-c", ". /etc/os-release && echo $PRETTY_NAME"]),
    );
    row(
        "load average at the start (1, 5, 15 min)",
        format!(
            "{} ({procs} processes; the host is shared with other engineers' builds)",
            loadavg()
        ),
    );
    row("rustc", first_line("rustc", &["--version"]));
    for (tool, args) in [
        ("podman", &["--version"][..]),
        ("crun", &["--version"][..]),
        ("bwrap", &["--version"][..]),
        ("lxc-attach", &["--version"][..]),
        ("unshare", &["--version"][..]),
    ] {
        row(tool, first_line(tool, args));
    }
    md
}

fn figures_md(figs: &[Figure]) -> String {
    let mut md = String::from(
        "| figure | median ms | min ms | p90 ms | n | ratio |\n|---|---:|---:|---:|---:|---|\n",
    );
    for f in figs {
        let r = row(f);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r[0], r[1], r[2], r[3], r[4], r[5]
        ));
    }
    md
}

/// Writes results.json, report.md, machine.md and chart.png into `dir`.
pub fn write(
    dir: &Path,
    figs: &[Figure],
    scaling: &[Scaling],
    quantities: &[Quantity],
    meta: &Meta,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let chart = crate::chart::write(
        &dir.join("chart.png"),
        &format!("wisp-bench, {}", meta.started),
        figs,
    );
    if let Err(e) = &chart {
        eprintln!("chart: skipped: {e:#}");
    }
    let json = serde_json::json!({
        "started": meta.started,
        "command": meta.command,
        "elapsed_s": meta.elapsed.as_secs_f64(),
        "load_end": meta.load_end,
        "figures": figs,
        "scaling": scaling,
        "quantities": quantities,
    });
    std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(&json)?)?;
    std::fs::write(
        dir.join("machine.md"),
        format!(
            "# Machine\n\n{}| load average at the end (1, 5, 15 min) | {} |\n",
            meta.machine, meta.load_end
        ),
    )?;
    let mut md = format!(
        "# wisp-bench report\n\nRun {} with `{}`: {:.1} minutes; load average at the end {}. \
         Machine: [machine.md](machine.md). Every ratio is this figure's median over the median \
         of the figure named after it, both measured in this run.\n\n",
        meta.started,
        meta.command,
        meta.elapsed.as_secs_f64() / 60.0,
        meta.load_end
    );
    match &chart {
        Ok(()) => md.push_str("![medians and p90s](chart.png)\n\n"),
        Err(e) => md.push_str(&format!("Chart skipped: {e:#}.\n\n")),
    }
    let skipped: Vec<&Figure> = figs.iter().filter(|f| f.skipped.is_some()).collect();
    if !skipped.is_empty() {
        md.push_str("Skipped:\n\n");
        for f in &skipped {
            md.push_str(&format!(
                "* {}: {}\n",
                f.name,
                f.skipped.as_deref().unwrap_or("")
            ));
        }
        md.push('\n');
    }
    md.push_str("## Times\n\n");
    md.push_str(&figures_md(figs));
    if let Some(first) = scaling.first() {
        md.push_str(&format!(
            "\n## Scaling with data size\n\n| operation | {} | {} | {} / {} |\n|---|---:|---:|---:|\n",
            first.small, first.big, first.big, first.small
        ));
        for s in scaling {
            let r = scaling_row(s);
            md.push_str(&format!("| {} | {} | {} | {} |\n", r[0], r[1], r[2], r[3]));
        }
    }
    if !quantities.is_empty() {
        md.push_str("\n## Amounts\n\n| measure | value | unit | how |\n|---|---:|---|---|\n");
        for q in quantities {
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                q.name,
                fmt_value(q.value),
                q.unit,
                q.note
            ));
        }
    }
    std::fs::write(dir.join("report.md"), md)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_keep_two_significant_digits() {
        assert_eq!(fmt_ratio(1.0449), "1.04x");
        assert_eq!(fmt_ratio(0.31), "0.31x");
        assert_eq!(fmt_ratio(0.0032), "0.0032x");
        assert_eq!(fmt_ratio(0.05), "0.050x");
        assert_eq!(fmt_ratio(250.0), "250.00x");
        assert_eq!(fmt_ratio(f64::NAN), "-");
    }

    #[test]
    fn values() {
        assert_eq!(fmt_value(1234.4), "1234");
        assert_eq!(fmt_value(56.78), "56.8");
        assert_eq!(fmt_value(0.456), "0.46");
        assert_eq!(fmt_value(f64::INFINITY), "-");
    }
}
