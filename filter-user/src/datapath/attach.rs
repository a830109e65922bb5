//! Owning interfaces: attaching the program (driver mode first, generic mode as the
//! fallback), refusing an interface where another XDP program runs unless told to replace
//! it, adopting links pinned by an earlier run, swapping the program atomically through the
//! link (hitless upgrade), and releasing.
//!
//! Every link is held as a bpf_link file descriptor; with a pin directory it is also pinned
//! there, so the program keeps enforcing if the daemon dies.

use std::{
    collections::BTreeMap,
    fmt,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use aya::{
    Ebpf,
    programs::{
        TestRun as _, TestRunOptions, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};

use super::{Datapath, DatapathError, Result, pins, program_mut};
use crate::iface::{
    self,
    xdp::{self, XdpAttachedMode},
};

/// How the program runs on an interface (`"driver"` or `"skb"` in the configuration file
/// and on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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

impl std::str::FromStr for AttachMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "driver" => Ok(Self::Driver),
            "skb" => Ok(Self::Skb),
            other => Err(format!("unknown XDP mode {other:?} (driver or skb)")),
        }
    }
}

/// The program attached to one owned interface.
#[derive(Debug)]
pub struct Attachment {
    pub ifindex: u32,
    pub iface: String,
    pub mode: AttachMode,
    /// When this process took the interface over (attached or adopted).
    pub since: SystemTime,
    /// The kernel's id of the program attached there.
    pub program_id: u32,
    /// Whether the link was adopted from the pin directory rather than created now.
    pub adopted: bool,
    link: FdLink,
    pin: Option<PathBuf>,
    /// A program instance that replaced the daemon's own on this interface.
    program: Option<Ebpf>,
}

impl Attachment {
    /// Whether the program here replaced the daemon's own (`attach --replace`).
    pub const fn replaced(&self) -> bool {
        self.program.is_some()
    }
}

#[derive(Debug, Default)]
pub(super) struct Attachments(pub(super) BTreeMap<u32, Attachment>);

/// What a program replacement did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replaced {
    pub old_program: u32,
    pub new_program: u32,
}

fn program_error(e: &aya::programs::ProgramError) -> String {
    error_chain(e)
}

fn mode_of(ifindex: u32) -> AttachMode {
    match xdp::xdp_attachment(ifindex) {
        Ok(Some(a)) if a.mode == XdpAttachedMode::Skb => AttachMode::Skb,
        _ => AttachMode::Driver,
    }
}

impl Datapath {
    fn base_program_id(&self) -> Result<u32> {
        self.program()?
            .info()
            .map(|i| i.id())
            .map_err(|e| DatapathError::LoadProgram(Box::new(e)))
    }

    /// Pin `link` for `ifindex` if there is a pin directory.
    fn pin_link(&self, ifindex: u32, link: FdLink) -> Result<(FdLink, Option<PathBuf>)> {
        let Some(dir) = &self.pin_dir else {
            return Ok((link, None));
        };
        let path = pins::link_path(dir, ifindex);
        let pinned = link.pin(&path).map_err(|e| DatapathError::Pin {
            what: format!("the link of interface {ifindex}"),
            detail: e.to_string(),
        })?;
        Ok((FdLink::from(pinned), Some(path)))
    }

    /// Attach the program to interface `ifindex`. With `mode = None`, driver mode is
    /// tried first and generic mode if the driver has no XDP support; the result says which.
    /// A link this daemon pinned there earlier is adopted. Another XDP program on the
    /// interface is refused, naming it, unless `replace_foreign`. A missing interface or a
    /// failed attach changes nothing.
    pub fn attach(
        &mut self,
        ifindex: u32,
        mode: Option<AttachMode>,
        replace_foreign: bool,
    ) -> Result<&Attachment> {
        let name = iface::by_index(ifindex)?.name;
        if let Some(existing) = self.attachments.0.get(&ifindex) {
            return Err(DatapathError::AlreadyAttached {
                iface: name,
                mode: existing.mode,
            });
        }
        if self.pinned_link(ifindex) {
            return self.adopt(ifindex);
        }
        let foreign = xdp::xdp_attachment(ifindex).map_err(|e| DatapathError::Attach {
            iface: name.clone(),
            detail: format!("querying its XDP program: {e}"),
        })?;
        if let Some(foreign) = foreign {
            let summary = xdp::program_summary(foreign.prog_id).ok();
            let program = summary
                .as_ref()
                .map_or_else(|| "?".to_string(), |s| s.name.clone());
            if !replace_foreign {
                return Err(DatapathError::ForeignProgram {
                    iface: name,
                    id: foreign.prog_id,
                    name: program,
                    mode: foreign.mode.to_string(),
                });
            }
            xdp::remove_xdp(ifindex).map_err(|e| DatapathError::Attach {
                iface: name.clone(),
                detail: format!("removing program {} ({program}): {e}", foreign.prog_id),
            })?;
            log::warn!(
                "replaced XDP program {} ({program}, {} mode) on {name}",
                foreign.prog_id,
                foreign.mode
            );
        }
        let program_id = self.base_program_id()?;
        let program = program_mut(&mut self.ebpf)?;
        let modes: &[AttachMode] = match mode {
            Some(AttachMode::Driver) => &[AttachMode::Driver],
            Some(AttachMode::Skb) => &[AttachMode::Skb],
            None => &[AttachMode::Driver, AttachMode::Skb],
        };
        let mut failures = Vec::new();
        let mut attached = None;
        for &mode in modes {
            match program.attach_to_if_index(ifindex, mode.xdp_mode()) {
                Ok(id) => {
                    attached = Some((mode, take_fd_link(program, id, &name)?));
                    break;
                }
                Err(e) => failures.push(format!("{mode} mode: {}", program_error(&e))),
            }
        }
        let Some((mode, link)) = attached else {
            return Err(DatapathError::Attach {
                iface: name,
                detail: failures.join("; "),
            });
        };
        let (link, pin) = self.pin_link(ifindex, link)?;
        log::info!("attached to {name} (index {ifindex}) in {mode} mode");
        let attachment = Attachment {
            ifindex,
            iface: name,
            mode,
            since: SystemTime::now(),
            program_id,
            adopted: false,
            link,
            pin,
            program: None,
        };
        Ok(self.attachments.0.entry(ifindex).or_insert(attachment))
    }

    /// Whether a link for `ifindex` is pinned in the pin directory (left by an earlier run, or
    /// by a release that kept the program enforcing).
    pub fn pinned_link(&self, ifindex: u32) -> bool {
        self.pin_dir
            .as_ref()
            .is_some_and(|d| pins::link_path(d, ifindex).exists())
    }

    /// Interface indexes with a pinned link that this process does not hold yet.
    pub fn unadopted_links(&self) -> Result<Vec<u32>> {
        let Some(dir) = &self.pin_dir else {
            return Ok(Vec::new());
        };
        let all = pins::pinned_links(dir).map_err(|e| DatapathError::PinDir {
            dir: dir.clone(),
            detail: e.to_string(),
        })?;
        Ok(all
            .into_iter()
            .filter(|i| !self.attachments.0.contains_key(i))
            .collect())
    }

    /// Take over a pinned link: swap the program it runs for this process's own, atomically
    /// (the interface never runs without a filter), keeping the pin.
    pub fn adopt(&mut self, ifindex: u32) -> Result<&Attachment> {
        let dir = self.pin_dir.clone().ok_or(DatapathError::NotPinned)?;
        let path = pins::link_path(&dir, ifindex);
        let iface = iface::label(ifindex);
        let adopt_error = |detail: String| DatapathError::Attach {
            iface: iface.clone(),
            detail: format!("adopting the pinned link {}: {detail}", path.display()),
        };
        let pinned = PinnedLink::from_pin(&path).map_err(|e| adopt_error(error_chain(&e)))?;
        let link =
            XdpLink::try_from(FdLink::from(pinned)).map_err(|e| adopt_error(error_chain(&e)))?;
        let program_id = self.base_program_id()?;
        let program = program_mut(&mut self.ebpf)?;
        let id = program
            .attach_to_link(link)
            .map_err(|e| adopt_error(program_error(&e)))?;
        let link = take_fd_link(program, id, &iface)?;
        let mode = mode_of(ifindex);
        log::info!("adopted the pinned link of {iface} (index {ifindex}, {mode} mode)");
        let attachment = Attachment {
            ifindex,
            iface,
            mode,
            since: SystemTime::now(),
            program_id,
            adopted: true,
            link,
            pin: Some(path),
            program: None,
        };
        Ok(self.attachments.0.entry(ifindex).or_insert(attachment))
    }

    /// Replace the program on an owned interface by a newly loaded one (`object`: an XDP
    /// object file's bytes; `None`: this build's own), atomically through the link: every
    /// frame meets either the old or the new program, both reading the same maps.
    pub fn replace_program(&mut self, ifindex: u32, object: Option<&[u8]>) -> Result<Replaced> {
        let dir = self.pin_dir.clone().ok_or(DatapathError::NotPinned)?;
        let mut ebpf = self.load_instance(object)?;
        let new_program = program_mut(&mut ebpf)?
            .info()
            .map(|i| i.id())
            .map_err(|e| DatapathError::LoadProgram(Box::new(e)))?;
        let Some(attachment) = self.attachments.0.remove(&ifindex) else {
            return Err(DatapathError::NotAttached(ifindex));
        };
        let Attachment {
            iface,
            mode,
            program_id: old_program,
            link,
            pin,
            ..
        } = attachment;
        let link = XdpLink::try_from(link).map_err(|e| DatapathError::Attach {
            iface: iface.clone(),
            detail: error_chain(&e),
        })?;
        let program = program_mut(&mut ebpf)?;
        let id = program
            .attach_to_link(link)
            .map_err(|e| DatapathError::Attach {
                iface: iface.clone(),
                detail: format!("swapping the program: {}", program_error(&e)),
            })?;
        let link = take_fd_link(program, id, &iface)?;
        let program_pin = pins::program_path(&dir, Some(ifindex));
        let _ = pins::unpin(&program_pin);
        if let Err(e) = program.pin(&program_pin) {
            log::warn!("pinning the new program of {iface}: {e}");
        }
        log::info!("replaced program {old_program} by {new_program} on {iface} through its link");
        self.attachments.0.insert(
            ifindex,
            Attachment {
                ifindex,
                iface,
                mode,
                since: SystemTime::now(),
                program_id: new_program,
                adopted: false,
                link,
                pin,
                program: Some(ebpf),
            },
        );
        Ok(Replaced {
            old_program,
            new_program,
        })
    }

    /// Release interface `ifindex`. Normally the program is detached and every map entry of
    /// the interface deleted (returns how many). With `keep`, the program stays attached and
    /// pinned with its entries, enforcing the last policy without this process (returns 0);
    /// a later `attach` adopts it again.
    pub fn detach(&mut self, ifindex: u32, keep: bool) -> Result<usize> {
        let Some(attachment) = self.attachments.0.remove(&ifindex) else {
            return Err(DatapathError::NotAttached(ifindex));
        };
        if keep {
            if attachment.pin.is_none() {
                self.attachments.0.insert(ifindex, attachment);
                return Err(DatapathError::NotPinned);
            }
            log::info!(
                "released {} (index {ifindex}); its program keeps enforcing",
                attachment.iface
            );
            return Ok(0);
        }
        let Attachment {
            iface, link, pin, ..
        } = attachment;
        if let Some(path) = &pin {
            pins::unpin(path).map_err(|e| DatapathError::Detach {
                iface: iface.clone(),
                detail: format!("unpinning {}: {e}", path.display()),
            })?;
        }
        if let Some(dir) = &self.pin_dir {
            let _ = pins::unpin(&pins::program_path(dir, Some(ifindex)));
        }
        drop(link); // the last reference: the kernel detaches the program
        log::info!("detached from {iface} (index {ifindex})");
        self.clear_interface(ifindex)
    }

    /// Where the program is attached.
    pub fn attachments(&self) -> impl Iterator<Item = &Attachment> {
        self.attachments.0.values()
    }

    pub fn attachment(&self, ifindex: u32) -> Option<&Attachment> {
        self.attachments.0.get(&ifindex)
    }

    /// Forget an interface that disappeared: its link went with it. Deletes its entries and
    /// pins; returns how many entries were deleted.
    pub fn forget_interface(&mut self, ifindex: u32) -> Result<usize> {
        if let Some(a) = self.attachments.0.remove(&ifindex) {
            if let Some(path) = &a.pin {
                let _ = pins::unpin(path);
            }
            log::info!("{} (index {ifindex}) is gone; released it", a.iface);
        } else if let Some(dir) = &self.pin_dir {
            let _ = pins::unpin(&pins::link_path(dir, ifindex));
        }
        if let Some(dir) = &self.pin_dir {
            let _ = pins::unpin(&pins::program_path(dir, Some(ifindex)));
        }
        self.clear_interface(ifindex)
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

/// Move a new link out of the program's own bookkeeping into an `FdLink` we hold.
fn take_fd_link(program: &mut aya::programs::Xdp, id: XdpLinkId, iface: &str) -> Result<FdLink> {
    let link = program.take_link(id).map_err(|e| DatapathError::Attach {
        iface: iface.to_string(),
        detail: program_error(&e),
    })?;
    FdLink::try_from(link).map_err(|e| DatapathError::Attach {
        iface: iface.to_string(),
        detail: format!(
            "the kernel attached through netlink, not a BPF link ({}); msfilter needs BPF links \
             (Linux 5.9 or later)",
            error_chain(&e)
        ),
    })
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
