//! Output: a table on stdout, results.json and report.md.

use std::path::Path;

use anyhow::Result;

use crate::stats::Figure;

fn fmt(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "-".into()
    }
}

fn row(f: &Figure) -> [String; 5] {
    let ratio = match (&f.ratio, &f.vs, &f.skipped) {
        (_, _, Some(why)) => format!("skipped: {why}"),
        (Some(r), Some(vs), _) => format!("{r:.2}x {vs}"),
        _ => String::new(),
    };
    [
        f.name.clone(),
        fmt(f.median_ms),
        fmt(f.p90_ms),
        f.n.to_string(),
        ratio,
    ]
}

pub fn print_table(figs: &[Figure]) {
    println!(
        "{:<48} {:>10} {:>10} {:>5}  ratio",
        "figure", "median ms", "p90 ms", "n"
    );
    for f in figs {
        let r = row(f);
        println!(
            "{:<48} {:>10} {:>10} {:>5}  {}",
            r[0], r[1], r[2], r[3], r[4]
        );
    }
}

pub fn write(dir: &Path, figs: &[Figure]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(figs)?)?;
    let mut md =
        String::from("| figure | median ms | p90 ms | n | ratio |\n|---|---:|---:|---:|---|\n");
    for f in figs {
        let r = row(f);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r[0], r[1], r[2], r[3], r[4]
        ));
    }
    std::fs::write(dir.join("report.md"), md)?;
    Ok(())
}
