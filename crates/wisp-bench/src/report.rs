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

pub fn write(
    dir: &Path,
    figs: &[Figure],
    scaling: &[Scaling],
    quantities: &[Quantity],
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::json!({
        "figures": figs,
        "scaling": scaling,
        "quantities": quantities,
    });
    std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(&json)?)?;
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
    if let Some(first) = scaling.first() {
        md.push_str(&format!(
            "\n| operation | {} | {} | {} / {} |\n|---|---:|---:|---:|\n",
            first.small, first.big, first.big, first.small
        ));
        for s in scaling {
            let r = scaling_row(s);
            md.push_str(&format!("| {} | {} | {} | {} |\n", r[0], r[1], r[2], r[3]));
        }
    }
    if !quantities.is_empty() {
        md.push_str("\n| measure | value | unit | how |\n|---|---:|---|---|\n");
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
