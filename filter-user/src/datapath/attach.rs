//! Attaching the program to interfaces: driver (native) mode first, generic (skb) mode as
//! the fallback, and which one was used.

use std::{collections::BTreeMap, fmt, time::Duration};

use aya::programs::{TestRun as _, TestRunOptions, XdpMode, xdp::XdpLinkId};

use super::{Datapath, DatapathError, Result, interface_name, program_mut, resolve_interface};

/// How the program runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttachMode {
    /// Native XDP, in the driver: the fast path.
    Driver,
    /// Generic XDP, after the kernel built an skb: works everywhere, costs more.
    Skb,
}

impl AttachMode {
    const fn xdp_mode(self) -> XdpMode {
        match self {
            Self::Driver => XdpMode::Driver,
            Self::Skb => XdpMode::Skb,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Driver => "driver",
            Self::Skb => "skb",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The program attached to one interface.
#[derive(Debug)]
pub struct Attachment {
    pub ifindex: u32,
    pub iface: String,
    pub mode: AttachMode,
    link: Option<XdpLinkId>,
}

#[derive(Debug, Default)]
pub(super) struct Attachments(BTreeMap<u32, Attachment>);

impl Datapath {
    /// Attach the program to `iface` (name or index). With `mode = None`, driver mode is
    /// tried first and generic mode if the driver has no XDP support; the result says which.
    /// A missing interface or a failed attach changes nothing.
    pub fn attach(&mut self, iface: &str, mode: Option<AttachMode>) -> Result<&Attachment> {
        let (ifindex, name) = resolve_interface(iface)?;
        if let Some(existing) = self.attachments.0.get(&ifindex) {
            return Err(DatapathError::AlreadyAttached {
                iface: name,
                mode: existing.mode,
            });
        }
        let program = program_mut(&mut self.ebpf)?;
        let modes: &[AttachMode] = match mode {
            Some(AttachMode::Driver) => &[AttachMode::Driver],
            Some(AttachMode::Skb) => &[AttachMode::Skb],
            None => &[AttachMode::Driver, AttachMode::Skb],
        };
        let mut failures = Vec::new();
        for &mode in modes {
            match program.attach_to_if_index(ifindex, mode.xdp_mode()) {
                Ok(link) => {
                    log::info!("attached to {name} (index {ifindex}) in {mode} mode");
                    let attachment = Attachment {
                        ifindex,
                        iface: name,
                        mode,
                        link: Some(link),
                    };
                    return Ok(self.attachments.0.entry(ifindex).or_insert(attachment));
                }
                Err(e) => failures.push(format!("{mode} mode: {}", error_chain(&e))),
            }
        }
        Err(DatapathError::Attach {
            iface: name,
            detail: failures.join("; "),
        })
    }

    /// Detach from interface `ifindex` and delete every map entry of that interface.
    /// Returns how many entries were deleted.
    pub fn detach(&mut self, ifindex: u32) -> Result<usize> {
        let Some(mut attachment) = self.attachments.0.remove(&ifindex) else {
            return Err(DatapathError::NotAttached(ifindex));
        };
        if let Some(link) = attachment.link.take() {
            let program = program_mut(&mut self.ebpf)?;
            if let Err(e) = program.detach(link) {
                let iface = interface_name(ifindex).unwrap_or_else(|| attachment.iface.clone());
                return Err(DatapathError::Detach {
                    iface,
                    detail: error_chain(&e),
                });
            }
        }
        log::info!("detached from {} (index {ifindex})", attachment.iface);
        self.clear_interface(ifindex)
    }

    /// Where the program is attached.
    pub fn attachments(&self) -> impl Iterator<Item = &Attachment> {
        self.attachments.0.values()
    }

    pub fn attachment(&self, ifindex: u32) -> Option<&Attachment> {
        self.attachments.0.get(&ifindex)
    }

    /// Run the program once on `frame` as if it arrived on `ifindex` (`None`: loopback) and
    /// return the XDP action. Counters count it like a real frame.
    pub fn test_run(&self, frame: &[u8], ifindex: Option<u32>) -> Result<u32> {
        Ok(self.test_run_repeat(frame, ifindex, 1)?.0)
    }

    /// Run the program `repeat` times on `frame`; returns the action and the kernel's
    /// average time per run.
    pub fn test_run_repeat(
        &self,
        frame: &[u8],
        ifindex: Option<u32>,
        repeat: u32,
    ) -> Result<(u32, Duration)> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex.
        let ctx: [u32; 6] = [0, frame.len() as u32, 0, ifindex.unwrap_or(0), 0, 0];
        let ctx_bytes: &[u8] = bytemuck::cast_slice(&ctx);
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: ifindex.map(|_| ctx_bytes),
            repeat,
            ..TestRunOptions::default()
        };
        let result = self
            .program()?
            .test_run(opts)
            .map_err(|e| DatapathError::TestRun(Box::new(e)))?;
        Ok((result.return_value, result.duration))
    }
}

/// An error and its sources on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
