//! The reference programs (`bench-ebpf`): the XDP_DROP floor, XDP_PASS, the XDP_TX
//! generator, and the bare hash lookups (msfilter's source key over IPv4 and IPv6 frames —
//! 12 and 36 bytes —, its 20-byte group key, a 4-byte key); and running programs through
//! BPF_PROG_TEST_RUN.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, PerCpuArray},
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use msfilter_common::{Counter, GroupKey, SourceKey, SourceKey4};

/// The object built from `bench-ebpf` by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench-xdp"));

pub const DROP: &str = "bench_drop";
pub const PASS: &str = "bench_pass";
pub const TX: &str = "bench_tx";
pub const LOOKUP: &str = "bench_lookup";
pub const LOOKUP6: &str = "bench_lookup6";
pub const LOOKUP_GROUP: &str = "bench_lookup_group";
pub const LOOKUP_U32: &str = "bench_lookup_u32";

/// The loaded reference programs and their maps.
pub struct Reference {
    ebpf: Ebpf,
}

impl Reference {
    /// Load every reference program; the lookup map holds up to `lookup_entries` keys.
    pub fn load(lookup_entries: u32) -> Result<Self> {
        if OBJECT.is_empty() {
            bail!("this build has no reference programs (built with AYA_BUILD_SKIP)");
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("BENCH_LOOKUP", lookup_entries.max(1))
            .map_max_entries("BENCH_LOOKUP4", lookup_entries.max(1))
            .load(OBJECT)
            .context("loading the reference programs")?;
        for name in [DROP, PASS, TX, LOOKUP, LOOKUP6, LOOKUP_GROUP, LOOKUP_U32] {
            program_mut(&mut ebpf, name)?
                .load()
                .with_context(|| format!("loading {name}"))?;
        }
        Ok(Self { ebpf })
    }

    pub fn program(&self, name: &str) -> Result<&Xdp> {
        self.ebpf
            .program(name)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .with_context(|| format!("no XDP program {name}"))
    }

    /// Put `keys` into the lookup map of their shape (IPv4 keys as msfilter stores them,
    /// 12 bytes).
    pub fn fill_lookup(&mut self, keys: &[SourceKey]) -> Result<()> {
        {
            let mut map: HashMap<_, SourceKey4, Counter> = HashMap::try_from(
                self.ebpf
                    .map_mut("BENCH_LOOKUP4")
                    .context("no IPv4 lookup map")?,
            )?;
            for key in keys.iter().filter_map(SourceKey4::of) {
                map.insert(key, Counter::ZERO, 0)?;
            }
        }
        let mut map: HashMap<_, SourceKey, Counter> =
            HashMap::try_from(self.ebpf.map_mut("BENCH_LOOKUP").context("no lookup map")?)?;
        for key in keys.iter().filter(|k| SourceKey4::of(k).is_none()) {
            map.insert(key, Counter::ZERO, 0)?;
        }
        Ok(())
    }

    /// Put `key` into the 20-byte-key map.
    pub fn fill_group_lookup(&mut self, key: &GroupKey) -> Result<()> {
        let mut map: HashMap<_, GroupKey, Counter> = HashMap::try_from(
            self.ebpf
                .map_mut("BENCH_LOOKUP_GROUP")
                .context("no group lookup map")?,
        )?;
        map.insert(key, Counter::ZERO, 0)?;
        Ok(())
    }

    /// Put `key` into the 4-byte-key map.
    pub fn fill_u32_lookup(&mut self, key: u32) -> Result<()> {
        let mut map: HashMap<_, u32, Counter> = HashMap::try_from(
            self.ebpf
                .map_mut("BENCH_LOOKUP_U32")
                .context("no u32 lookup map")?,
        )?;
        map.insert(key, Counter::ZERO, 0)?;
        Ok(())
    }

    /// Frames the drop and pass programs counted, over all CPUs.
    pub fn count(&self) -> Result<u64> {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("BENCH_COUNT").context("no count map")?)?;
        Ok(map.get(&0, 0)?.iter().sum())
    }

    /// Attach `name` in driver mode to `ifindex` (in the calling thread's namespace).
    pub fn attach(&mut self, name: &str, ifindex: u32) -> Result<XdpLinkId> {
        program_mut(&mut self.ebpf, name)?
            .attach_to_if_index(ifindex, XdpMode::Driver)
            .with_context(|| format!("attaching {name} to interface {ifindex}"))
    }

    pub fn detach(&mut self, name: &str, link: XdpLinkId) -> Result<()> {
        program_mut(&mut self.ebpf, name)?
            .detach(link)
            .with_context(|| format!("detaching {name}"))
    }

    /// Send `frame` `count` times out of the interface `ifindex` (of the calling thread's
    /// namespace) through the XDP_TX generator with live frames, and return the wall time:
    /// the generator, the veth and the receiving side's processing all run on this CPU.
    pub fn send_live(&self, frame: &[u8], ifindex: u32, count: u32) -> Result<Duration> {
        let ctx: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(bytemuck::cast_slice(&ctx)),
            repeat: count,
            attrs: TestRunAttrs::new().xdp_live_frames(64),
            ..TestRunOptions::default()
        };
        let start = Instant::now();
        self.program(TX)?
            .test_run(opts)
            .context("sending live frames")?;
        Ok(start.elapsed())
    }
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .and_then(|p| <&mut Xdp>::try_from(p).ok())
        .with_context(|| format!("no XDP program {name}"))
}

/// Run `program` once on each frame (BPF_PROG_TEST_RUN); returns the mean kernel time per
/// run and the actions.
pub fn test_run_each(program: &Xdp, frames: &[Vec<u8>]) -> Result<(f64, Vec<u32>)> {
    let mut total = Duration::ZERO;
    let mut actions = Vec::with_capacity(frames.len());
    for frame in frames {
        let r = program.test_run(TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        })?;
        total += r.duration;
        actions.push(r.return_value);
    }
    Ok((total.as_nanos() as f64 / frames.len() as f64, actions))
}

/// Pin the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) != 0 {
            bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}
