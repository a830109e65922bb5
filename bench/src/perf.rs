//! `perf` on the measuring CPU while frames are sent: `perf stat` for instructions and cycles,
//! `perf record` for where the cycles went (by kernel symbol). Both are optional: where perf
//! is missing or not allowed, the report says so instead of printing figures.

use std::{
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// `perf record`'s fixed sampling period: ns of CPU time per sample (10,000 a second).
pub const PERIOD_NS: u64 = 100_000;

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

    /// `perf record` sampling `cpu` on the `cpu-clock` event (a software event, so it works
    /// without hardware counters) every [`PERIOD_NS`] of CPU time.
    pub fn record(cpu: usize) -> Option<Self> {
        let data = std::env::temp_dir().join(format!("msfbench-perf-{}.data", std::process::id()));
        let _ = std::fs::remove_file(&data);
        let child = spawn(
            Command::new("perf")
                .args(["record", "-q", "-e", "cpu-clock", "-c"])
                .arg(PERIOD_NS.to_string())
                .arg("-C")
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

    /// Stop `perf record`; the symbols with their samples and periods (ns of CPU time).
    pub fn stop_record(self) -> Option<Vec<Symbol>> {
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

/// One symbol of a `perf report`.
#[derive(Clone, Debug, PartialEq)]
pub struct Symbol {
    pub name: String,
    pub samples: u64,
    /// CPU time: samples times [`PERIOD_NS`].
    pub period: u64,
}

/// `perf report --stdio -n --sort sym` lines: `  12.96%   267  [k] symbol`.
pub fn parse_report(text: &str) -> Vec<Symbol> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            parts.next()?.strip_suffix('%')?;
            let samples: u64 = parts.next()?.parse().ok()?;
            let _space = parts.next()?; // [k] or [.]
            let name = parts.collect::<Vec<_>>().join(" ");
            (!name.is_empty()).then_some(Symbol {
                name,
                samples,
                period: samples * PERIOD_NS,
            })
        })
        .collect()
}

/// Where the CPU time of a recording went.
#[derive(Debug, PartialEq)]
pub struct Summary {
    pub samples: u64,
    /// ns in the kernel's hash-table code (`htab` in the symbol).
    pub hash_ns: u64,
    /// Of that, ns in hashing the key (`htab_map_hash`: jhash over the key's width).
    pub jhash_ns: u64,
    /// ns in the recorded variant's own program (`bpf_prog_<tag>_<name>`).
    pub program_ns: u64,
    /// ns in everything but the idle loop.
    pub busy_ns: u64,
    /// The five symbols with most time, with their shares of the busy time.
    pub top: Vec<(String, f64)>,
}

fn is_idle(name: &str) -> bool {
    ["idle", "safe_halt", "cpuidle"]
        .iter()
        .any(|p| name.contains(p))
}

/// Where the time went; `program`: the name of the XDP program under test (its kernel
/// symbol is `bpf_prog_<tag>_<program>`, the name cut to 15 bytes).
pub fn summarise(symbols: &[Symbol], program: &str) -> Summary {
    let suffix = format!("_{}", &program[..program.len().min(15)]);
    let sum = |f: &dyn Fn(&str) -> bool| -> u64 {
        symbols
            .iter()
            .filter(|s| f(&s.name))
            .map(|s| s.period)
            .sum()
    };
    let busy_ns = sum(&|s| !is_idle(s));
    let mut sorted: Vec<&Symbol> = symbols.iter().filter(|s| !is_idle(&s.name)).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.period));
    Summary {
        samples: symbols.iter().map(|s| s.samples).sum(),
        hash_ns: sum(&|s| s.contains("htab")),
        jhash_ns: sum(&|s| s.contains("htab_map_hash") || s.contains("jhash")),
        program_ns: sum(&|s| s.starts_with("bpf_prog_") && s.ends_with(&suffix)),
        busy_ns,
        top: sorted
            .into_iter()
            .take(5)
            .map(|s| (s.name.clone(), s.period as f64 / busy_ns.max(1) as f64))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_are_parsed_and_time_is_summed_by_kind() {
        let text = "# Samples: 1K of event 'cpu-clock'\n#\n\
                    \x20   40.00%   400  [k] bpf_prog_0123456789abcdef_msfilter\n\
                    \x20   20.00%   200  [k] __htab_map_lookup_elem\n\
                    \x20   10.00%   100  [k] htab_map_hash\n\
                    \x20   20.00%   200  [k] veth_xdp_rcv\n\
                    \x20    5.00%    50  [k] pv_native_safe_halt\n\
                    \x20    5.00%    50  [.] main\n\n";
        let symbols = parse_report(text);
        assert_eq!(symbols.len(), 6);
        assert_eq!(symbols[1].period, 200 * PERIOD_NS);
        let s = summarise(&symbols, "msfilter");
        assert_eq!(s.samples, 1000);
        assert_eq!(s.hash_ns, 300 * PERIOD_NS);
        assert_eq!(s.jhash_ns, 100 * PERIOD_NS);
        assert_eq!(s.program_ns, 400 * PERIOD_NS);
        // The idle loop is not busy time.
        assert_eq!(s.busy_ns, 950 * PERIOD_NS);
        assert_eq!(s.top[0].0, "bpf_prog_0123456789abcdef_msfilter");
        assert!(s.top.iter().all(|(n, _)| !n.contains("halt")));
        // Another program's symbol is not msfilter's.
        assert_eq!(summarise(&symbols, "bench_lookup").program_ns, 0);
    }

    #[test]
    fn stat_output_needs_both_counts() {
        let text = "1234,,instructions,100,100.00,,\n567,,cycles,100,100.00,,\n";
        assert_eq!(parse_stat(text), Some((1234.0, 567.0)));
        assert_eq!(parse_stat("<not supported>,,cycles,0,0,,\n"), None);
    }
}
