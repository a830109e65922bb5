//! `perf` on the measuring CPU while frames are sent: `perf stat` for instructions and cycles,
//! `perf record` for where the cycles went (by kernel symbol). Both are optional: where perf
//! is missing or not allowed, the report says so instead of printing figures.

use std::{
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A running `perf` with its own process group (so one signal stops it and its `sleep`).
pub struct Perf {
    child: Child,
    data: Option<PathBuf>,
}

fn spawn(cmd: &mut Command) -> Option<Child> {
    let child = cmd
        .args(["--", "sleep", "600"])
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    // Let it set up its counters before the frames start.
    std::thread::sleep(Duration::from_millis(200));
    Some(child)
}

impl Perf {
    /// `perf stat` counting instructions and cycles on `cpu`.
    pub fn stat(cpu: usize) -> Option<Self> {
        let child = spawn(
            Command::new("perf")
                .args(["stat", "-x", ",", "-e", "instructions,cycles", "-C"])
                .arg(cpu.to_string()),
        )?;
        Some(Self { child, data: None })
    }

    /// `perf record` sampling `cpu`.
    pub fn record(cpu: usize) -> Option<Self> {
        let data = std::env::temp_dir().join(format!("msfbench-perf-{}.data", std::process::id()));
        let _ = std::fs::remove_file(&data);
        let child = spawn(
            Command::new("perf")
                .args(["record", "-q", "-F", "10000", "-C"])
                .arg(cpu.to_string())
                .arg("-o")
                .arg(&data),
        )?;
        // perf creates its file once it is set up; a loaded machine may take a while.
        for _ in 0..50 {
            if data.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(300));
        Some(Self {
            child,
            data: Some(data),
        })
    }

    fn interrupt(self) -> Option<(std::process::Output, Option<PathBuf>)> {
        let Self { child, data } = self;
        // SAFETY: plain kill(2) on our child's process group.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
        let out = child.wait_with_output().ok()?;
        Some((out, data))
    }

    /// Stop `perf stat`; instructions and cycles, or perf's own lines about them.
    pub fn stop_stat(self) -> Result<(f64, f64), String> {
        let (out, _) = self
            .interrupt()
            .ok_or_else(|| "perf stat did not finish".to_string())?;
        let text = String::from_utf8_lossy(&out.stderr);
        parse_stat(&text).ok_or_else(|| {
            text.lines()
                .filter(|l| l.contains("instructions") || l.contains("cycles"))
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Stop `perf record`; the symbols with their sample counts.
    pub fn stop_record(self) -> Option<Vec<(String, u64)>> {
        let (_, data) = self.interrupt()?;
        let data = data?;
        let out = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "-n",
                "--sort",
                "sym",
                "-i",
            ])
            .arg(&data)
            .stderr(Stdio::null())
            .output()
            .ok();
        let _ = std::fs::remove_file(&data);
        let symbols = parse_report(&String::from_utf8_lossy(&out?.stdout));
        (!symbols.is_empty()).then_some(symbols)
    }
}

/// `perf stat -x ,` output: instructions and cycles.
pub fn parse_stat(text: &str) -> Option<(f64, f64)> {
    let count = |event: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.split(',').nth(2).is_some_and(|e| e.starts_with(event)))
            .and_then(|l| l.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    };
    Some((count("instructions")?, count("cycles")?))
}

/// `perf report --stdio -n --sort sym` lines: `  12.96%  267  [k] symbol`.
pub fn parse_report(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            parts.next()?.strip_suffix('%')?;
            let samples: u64 = parts.next()?.parse().ok()?;
            let _space = parts.next()?; // [k] or [.]
            let symbol = parts.collect::<Vec<_>>().join(" ");
            (!symbol.is_empty()).then_some((symbol, samples))
        })
        .collect()
}

/// Where the samples fell.
#[derive(Debug, PartialEq)]
pub struct Summary {
    pub samples: u64,
    /// The kernel's hash-table code (`htab` in the symbol).
    pub hash_share: f64,
    /// msfilter's own program (`bpf_prog_<tag>_msfilter`).
    pub program_share: f64,
    /// The five symbols with most samples.
    pub top: Vec<(String, f64)>,
}

pub fn summarise(symbols: &[(String, u64)]) -> Summary {
    let samples: u64 = symbols.iter().map(|(_, n)| n).sum();
    let share = |f: &dyn Fn(&str) -> bool| -> f64 {
        let n: u64 = symbols.iter().filter(|(s, _)| f(s)).map(|(_, n)| n).sum();
        n as f64 / samples.max(1) as f64
    };
    let mut sorted = symbols.to_vec();
    sorted.sort_by_key(|b| std::cmp::Reverse(b.1));
    Summary {
        samples,
        hash_share: share(&|s| s.contains("htab")),
        program_share: share(&|s| s.starts_with("bpf_prog_") && s.ends_with("_msfilter")),
        top: sorted
            .into_iter()
            .take(5)
            .map(|(s, n)| (s, n as f64 / samples.max(1) as f64))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_are_parsed_and_shares_follow_the_samples() {
        let text = "# Samples: 1K of event 'cpu-clock'\n#\n\
                    \x20   40.00%           400  [k] bpf_prog_0123456789abcdef_msfilter\n\
                    \x20   30.00%           300  [k] __htab_map_lookup_elem\n\
                    \x20   20.00%           200  [k] veth_xdp_rcv\n\
                    \x20   10.00%           100  [.] main\n\n";
        let symbols = parse_report(text);
        assert_eq!(symbols.len(), 4);
        let s = summarise(&symbols);
        assert_eq!(s.samples, 1000);
        assert!((s.hash_share - 0.3).abs() < 1e-9);
        assert!((s.program_share - 0.4).abs() < 1e-9);
        assert_eq!(s.top[0].0, "bpf_prog_0123456789abcdef_msfilter");
    }

    #[test]
    fn stat_output_needs_both_counts() {
        let text = "1234,,instructions,100,100.00,,\n567,,cycles,100,100.00,,\n";
        assert_eq!(parse_stat(text), Some((1234.0, 567.0)));
        assert_eq!(parse_stat("<not supported>,,cycles,0,0,,\n"), None);
    }
}
