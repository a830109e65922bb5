//! Owning interfaces: attaching the program (driver mode first, generic mode as the
//! fallback), refusing an interface where another XDP program runs unless told to replace
//! it, adopting links pinned by an earlier run, swapping the program atomically through the
//! link (hitless upgrade), and releasing.
//!
//! Every link is held as a bpf_link file descriptor; with a pin directory it is also pinned
//! there, so the program keeps enforcing if the daemon dies.
//!
//! An 802.1Q VLAN sub-interface is enforced on its parent: owning `eth0.100` attaches the
//! program to `eth0` (or shares the link already there) and maps VLAN 100 on `eth0` to
//! `eth0.100` in the VLAN map. The link (a *carrier*) belongs to the interface it is on and
//! is shared by that interface and every owned sub-interface of it; it is detached when the
//! last of them is released.

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

/// The program enforcing one owned interface.
#[derive(Debug)]
pub struct Attachment {
    pub ifindex: u32,
    pub iface: String,
    /// The mode of the program on the interface that carries it.
    pub mode: AttachMode,
    /// When this process took the interface over (attached or adopted).
    pub since: SystemTime,
    /// The kernel's id of the program attached there.
    pub program_id: u32,
    /// Whether the link was adopted from the pin directory rather than created now.
    pub adopted: bool,
    /// For a VLAN sub-interface: the parent whose XDP program enforces it.
    pub vlan: Option<VlanCarrier>,
    replaced: bool,
}

impl Attachment {
    /// Whether the program here replaced the daemon's own (`attach --replace`).
    pub const fn replaced(&self) -> bool {
        self.replaced
    }

    /// The interface whose link runs the program for this one.
    pub fn carrier(&self) -> u32 {
        self.vlan.as_ref().map_or(self.ifindex, |v| v.parent)
    }
}

/// Where a VLAN sub-interface is enforced: XDP on `parent`, frames of VLAN `vid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VlanCarrier {
    pub parent: u32,
    pub parent_name: String,
    pub vid: u16,
}

/// The program's link on one interface, shared by that interface and its owned VLAN
/// sub-interfaces.
#[derive(Debug)]
pub(super) struct Carrier {
    mode: AttachMode,
    program_id: u32,
    link: FdLink,
    pin: Option<PathBuf>,
    /// A program instance that replaced the daemon's own on this interface.
    program: Option<Ebpf>,
}

/// Owned interfaces by index (`.0`), and the links carrying their program by the index of
/// the interface each is on (`.1`).
#[derive(Debug, Default)]
pub(super) struct Attachments(pub(super) BTreeMap<u32, Attachment>, BTreeMap<u32, Carrier>);

impl Attachments {
    /// How many owned interfaces the link on `carrier` enforces.
    fn users(&self, carrier: u32) -> usize {
        self.0.values().filter(|a| a.carrier() == carrier).count()
    }
}

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
    ///
    /// An 802.1Q VLAN sub-interface is attached on its parent (sharing the link already
    /// there), and its VLAN mapped to it in the VLAN map.
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
        let vlan = self.vlan_carrier(ifindex, &name)?;
        let carrier = vlan.as_ref().map_or(ifindex, |v| v.parent);
        let (mode, program_id, adopted) = self.hook(carrier, mode, replace_foreign)?;
        if let Some(v) = &vlan
            && let Err(e) = self.set_vlan(v.parent, v.vid, ifindex)
        {
            self.release_carrier_if_unused(carrier);
            return Err(e);
        }
        if let Some(v) = &vlan {
            log::info!(
                "enforcing {name} (index {ifindex}) as VLAN {} on {}'s program",
                v.vid,
                v.parent_name
            );
        }
        let attachment = Attachment {
            ifindex,
            iface: name,
            mode,
            since: SystemTime::now(),
            program_id,
            adopted,
            vlan,
            replaced: self
                .attachments
                .1
                .get(&carrier)
                .is_some_and(|c| c.program.is_some()),
        };
        Ok(self.attachments.0.entry(ifindex).or_insert(attachment))
    }

    /// For a VLAN sub-interface, where it is enforced; `None` for any other interface.
    fn vlan_carrier(&self, ifindex: u32, name: &str) -> Result<Option<VlanCarrier>> {
        let vlan_error = |detail: String| DatapathError::Vlan {
            iface: name.to_string(),
            detail,
        };
        let Some(vlan) = iface::vlan::vlan_link(ifindex).map_err(|e| vlan_error(e.to_string()))?
        else {
            return Ok(None);
        };
        let parent_name = iface::name_of(vlan.parent).ok_or_else(|| {
            vlan_error(format!(
                "its parent (index {}) is not in this namespace",
                vlan.parent
            ))
        })?;
        match iface::vlan::vlan_link(vlan.parent) {
            Ok(None) => {}
            Ok(Some(_)) => {
                return Err(vlan_error(format!(
                    "it is VLAN {} of {parent_name}, itself a VLAN sub-interface; stacked VLANs \
                     are not enforced",
                    vlan.vid
                )));
            }
            Err(e) => return Err(vlan_error(format!("its parent {parent_name}: {e}"))),
        }
        Ok(Some(VlanCarrier {
            parent: vlan.parent,
            parent_name,
            vid: vlan.vid,
        }))
    }

    /// Make sure the program runs on `carrier`: share the link held there, adopt a pinned
    /// one, or attach. Returns the mode, the program id and whether the link was adopted.
    fn hook(
        &mut self,
        carrier: u32,
        mode: Option<AttachMode>,
        replace_foreign: bool,
    ) -> Result<(AttachMode, u32, bool)> {
        if let Some(c) = self.attachments.1.get(&carrier) {
            if let Some(wanted) = mode
                && wanted != c.mode
            {
                return Err(DatapathError::Attach {
                    iface: iface::label(carrier),
                    detail: format!(
                        "its program runs in {} mode for an owned interface; it cannot run in \
                         {wanted} mode as well",
                        c.mode
                    ),
                });
            }
            return Ok((c.mode, c.program_id, false));
        }
        if self.pinned_link(carrier) {
            let (mode, program_id) = self.adopt_link(carrier)?;
            return Ok((mode, program_id, true));
        }
        let name = iface::by_index(carrier)?.name;
        let foreign = xdp::xdp_attachment(carrier).map_err(|e| DatapathError::Attach {
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
            xdp::remove_xdp(carrier).map_err(|e| DatapathError::Attach {
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
            match program.attach_to_if_index(carrier, mode.xdp_mode()) {
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
        let (link, pin) = self.pin_link(carrier, link)?;
        log::info!("attached to {name} (index {carrier}) in {mode} mode");
        self.attachments.1.insert(
            carrier,
            Carrier {
                mode,
                program_id,
                link,
                pin,
                program: None,
            },
        );
        Ok((mode, program_id, false))
    }

    /// Drop the link on `carrier` if no owned interface uses it any more: unpinned, the
    /// kernel detaches the program.
    fn release_carrier_if_unused(&mut self, carrier: u32) {
        if self.attachments.users(carrier) > 0 {
            return;
        }
        let Some(c) = self.attachments.1.remove(&carrier) else {
            return;
        };
        if let Some(path) = &c.pin
            && let Err(e) = pins::unpin(path)
        {
            log::error!("unpinning {}: {e}", path.display());
        }
        if let Some(dir) = &self.pin_dir {
            let _ = pins::unpin(&pins::program_path(dir, Some(carrier)));
        }
        drop(c); // the last reference: the kernel detaches the program
        log::info!("detached from {} (index {carrier})", iface::label(carrier));
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
            .filter(|i| !self.attachments.1.contains_key(i))
            .collect())
    }

    /// Take over a pinned link: swap the program it runs for this process's own, atomically
    /// (the interface never runs without a filter), keeping the pin.
    pub fn adopt(&mut self, ifindex: u32) -> Result<&Attachment> {
        let iface = iface::label(ifindex);
        let (mode, program_id) = self.adopt_link(ifindex)?;
        log::info!("adopted the pinned link of {iface} (index {ifindex}, {mode} mode)");
        let attachment = Attachment {
            ifindex,
            iface,
            mode,
            since: SystemTime::now(),
            program_id,
            adopted: true,
            vlan: None,
            replaced: false,
        };
        Ok(self.attachments.0.entry(ifindex).or_insert(attachment))
    }

    /// Hold the link pinned for `carrier` and run this process's program through it; returns
    /// its mode and the program id.
    fn adopt_link(&mut self, carrier: u32) -> Result<(AttachMode, u32)> {
        if let Some(c) = self.attachments.1.get(&carrier) {
            return Ok((c.mode, c.program_id));
        }
        let dir = self.pin_dir.clone().ok_or(DatapathError::NotPinned)?;
        let path = pins::link_path(&dir, carrier);
        let iface = iface::label(carrier);
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
        let mode = mode_of(carrier);
        self.attachments.1.insert(
            carrier,
            Carrier {
                mode,
                program_id,
                link,
                pin: Some(path),
                program: None,
            },
        );
        Ok((mode, program_id))
    }

    /// Replace the program on an owned interface by a newly loaded one (`object`: an XDP
    /// object file's bytes; `None`: this build's own), atomically through the link: every
    /// frame meets either the old or the new program, both reading the same maps.
    pub fn replace_program(&mut self, ifindex: u32, object: Option<&[u8]>) -> Result<Replaced> {
        let dir = self.pin_dir.clone().ok_or(DatapathError::NotPinned)?;
        let Some(attachment) = self.attachments.0.get(&ifindex) else {
            return Err(DatapathError::NotAttached(ifindex));
        };
        let iface = attachment.iface.clone();
        if let Some(v) = &attachment.vlan {
            return Err(DatapathError::Attach {
                iface,
                detail: format!(
                    "its program runs on {} (VLAN {}); replace it there",
                    v.parent_name, v.vid
                ),
            });
        }
        let mut ebpf = self.load_instance(object)?;
        let new_program = program_mut(&mut ebpf)?
            .info()
            .map(|i| i.id())
            .map_err(|e| DatapathError::LoadProgram(Box::new(e)))?;
        let Some(carrier) = self.attachments.1.remove(&ifindex) else {
            return Err(DatapathError::NotAttached(ifindex));
        };
        let Carrier {
            mode,
            program_id: old_program,
            link,
            pin,
            ..
        } = carrier;
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
        self.attachments.1.insert(
            ifindex,
            Carrier {
                mode,
                program_id: new_program,
                link,
                pin,
                program: Some(ebpf),
            },
        );
        // Every interface the link enforces (its own and its VLAN sub-interfaces').
        for a in self.attachments.0.values_mut() {
            if a.carrier() == ifindex {
                a.program_id = new_program;
                a.replaced = true;
                if a.ifindex == ifindex {
                    a.since = SystemTime::now();
                    a.adopted = false;
                }
            }
        }
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
        let carrier = attachment.carrier();
        if keep {
            if self
                .attachments
                .1
                .get(&carrier)
                .is_none_or(|c| c.pin.is_none())
            {
                self.attachments.0.insert(ifindex, attachment);
                return Err(DatapathError::NotPinned);
            }
            log::info!(
                "released {} (index {ifindex}); its program keeps enforcing",
                attachment.iface
            );
            if self.attachments.users(carrier) == 0 {
                // The pin holds the link.
                self.attachments.1.remove(&carrier);
            }
            return Ok(0);
        }
        let mut deleted = 0;
        if let Some(v) = &attachment.vlan {
            // First: the VLAN's frames fall back to the parent's entries, then this
            // interface's entries go.
            if let Err(e) = self.remove_vlan(v.parent, v.vid) {
                self.attachments.0.insert(ifindex, attachment);
                return Err(e);
            }
            deleted += 1;
        } else if let Some(c) = self.attachments.1.get(&carrier)
            && self.attachments.users(carrier) == 0
            && let Some(path) = &c.pin
        {
            pins::unpin(path).map_err(|e| DatapathError::Detach {
                iface: attachment.iface.clone(),
                detail: format!("unpinning {}: {e}", path.display()),
            })?;
        }
        self.release_carrier_if_unused(carrier);
        log::info!("released {} (index {ifindex})", attachment.iface);
        Ok(deleted + self.clear_interface(ifindex)?)
    }

    /// Where the program is attached.
    pub fn attachments(&self) -> impl Iterator<Item = &Attachment> {
        self.attachments.0.values()
    }

    pub fn attachment(&self, ifindex: u32) -> Option<&Attachment> {
        self.attachments.0.get(&ifindex)
    }

    /// The owned VLAN sub-interfaces whose program runs on `parent`.
    pub fn vlans_on(&self, parent: u32) -> impl Iterator<Item = &Attachment> {
        self.attachments
            .0
            .values()
            .filter(move |a| a.vlan.as_ref().is_some_and(|v| v.parent == parent))
    }

    /// Forget an interface that disappeared: its link went with it. Deletes its entries and
    /// pins; returns how many entries were deleted.
    pub fn forget_interface(&mut self, ifindex: u32) -> Result<usize> {
        let carrier = if let Some(a) = self.attachments.0.remove(&ifindex) {
            log::info!("{} (index {ifindex}) is gone; released it", a.iface);
            a.carrier()
        } else {
            ifindex
        };
        // Its own link went with it; a parent's link stays while other interfaces use it.
        if let Some(c) = self.attachments.1.remove(&ifindex) {
            if let Some(path) = &c.pin {
                let _ = pins::unpin(path);
            }
        } else if let Some(dir) = &self.pin_dir
            && !self.attachments.1.contains_key(&carrier)
        {
            let _ = pins::unpin(&pins::link_path(dir, ifindex));
        }
        if let Some(dir) = &self.pin_dir {
            let _ = pins::unpin(&pins::program_path(dir, Some(ifindex)));
        }
        if carrier != ifindex {
            self.release_carrier_if_unused(carrier);
        }
        let vlans = self.remove_vlans_of(ifindex)?;
        Ok(vlans + self.clear_interface(ifindex)?)
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
