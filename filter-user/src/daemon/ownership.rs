//! Interface ownership: take (attach), release (detach), who owns, and what happens when an
//! owned interface disappears or changes its name.

use std::time::UNIX_EPOCH;

use super::{
    controller::{Controller, ControllerError, Ownership, Result},
    report::{AttachOutcome, Attached, CarrierView, Detached, OwnerView, Replaced},
};
use crate::{
    datapath::AttachMode,
    iface::{self, LinkEvent, xdp},
};

impl Controller {
    /// Take ownership of `iface`: fill the maps with its policy, then attach (or adopt a link
    /// msfilter pinned there). On an owned interface, `replace` swaps the program through the
    /// link; on one with another XDP program, `replace` replaces that program.
    pub fn attach(
        &mut self,
        iface: &str,
        mode: Option<AttachMode>,
        replace: bool,
        object: Option<&str>,
        follow: bool,
        drop_unjoined: bool,
    ) -> Result<AttachOutcome> {
        if drop_unjoined && !follow {
            return Err(ControllerError::DropUnjoinedNeedsFollow);
        }
        let iface::Interface {
            index: ifindex,
            name,
        } = iface::resolve(iface)?;
        if let Some(current) = self.datapath.attachment(ifindex).map(|a| a.mode) {
            let followed = self.follows_now(ifindex);
            if follow && !followed && !replace {
                // Owned already: the follower takes over its entries.
                if mode.is_some_and(|m| m != current) {
                    return Err(ControllerError::ModeChange {
                        iface: name,
                        current,
                    });
                }
                self.set_drop_unjoined(&name, drop_unjoined);
                self.follow_interface(ifindex, &name)?;
                return Ok(AttachOutcome::Attached(self.attached_report(ifindex, name)));
            }
            if !replace {
                return Err(ControllerError::AlreadyOwned {
                    iface: name,
                    mode: current,
                });
            }
            // A replacement keeps the interface followed or not; it cannot start following.
            if follow && !followed {
                return Err(ControllerError::FollowChange {
                    iface: name,
                    mode: current,
                    followed,
                });
            }
            if mode.is_some_and(|m| m != current) {
                return Err(ControllerError::ModeChange {
                    iface: name,
                    current,
                });
            }
            let bytes = object
                .map(|path| {
                    std::fs::read(path).map_err(|source| ControllerError::ReadObject {
                        path: path.to_string(),
                        source,
                    })
                })
                .transpose()?;
            let replaced = self.datapath.replace_program(ifindex, bytes.as_deref())?;
            return Ok(AttachOutcome::Replaced(Replaced {
                iface: name,
                old_program: replaced.old_program,
                new_program: replaced.new_program,
            }));
        }
        if object.is_some() {
            return Err(ControllerError::ObjectWithoutOwner);
        }
        let newly_followed = follow && !self.follows_now(ifindex);
        if newly_followed {
            // Before the entries are filled: the follower's merge is what they hold.
            self.start_following(ifindex)?;
        }
        self.released.remove(&name);
        self.kept.remove(&name);
        if let Err(e) = self.attach_filled(ifindex, mode, replace) {
            if newly_followed {
                self.stop_following(ifindex);
            }
            return Err(e.into());
        }
        if follow {
            self.followed.insert(name.clone());
            self.set_drop_unjoined(&name, drop_unjoined);
            self.apply_follow_changes();
            self.publish_follow();
        }
        self.owned.insert(name.clone(), mode);
        self.save_state();
        Ok(AttachOutcome::Attached(self.attached_report(ifindex, name)))
    }

    fn attached_report(&self, ifindex: u32, name: String) -> Attached {
        let attachment = self.datapath.attachment(ifindex).expect("attached");
        let drop_unjoined = self.drop_unjoined_view(ifindex, &name);
        let (groups, sources) = self.entries_of(ifindex);
        Attached {
            iface: name,
            ifindex,
            mode: attachment.mode,
            program_id: attachment.program_id,
            adopted: attachment.adopted,
            groups,
            sources,
            followed: self.follows_now(ifindex),
            drop_unjoined,
            carrier: CarrierView::of(attachment),
        }
    }

    /// Whether `name` drops unjoined groups (once followed and owned).
    pub(super) fn set_drop_unjoined(&mut self, name: &str, on: bool) {
        if on {
            self.drop_unjoined.insert(name.to_string());
        } else {
            self.drop_unjoined.remove(name);
        }
    }

    fn drop_unjoined_view(&self, ifindex: u32, name: &str) -> Option<String> {
        (self.drop_unjoined.contains(name) && self.follows_now(ifindex))
            .then(|| super::following::unjoined_label(self.unjoined_bits(ifindex)).to_string())
    }

    /// Make the follower the writer of an owned interface's entries: follow it, replace the
    /// clients' merge there by the follower's, persist.
    pub(super) fn follow_interface(&mut self, ifindex: u32, name: &str) -> Result<()> {
        if !self.follows_now(ifindex) {
            self.start_following(ifindex)?;
        }
        self.followed.insert(name.to_string());
        let desired = self.follow_desired(ifindex);
        self.datapath.set_filters(desired)?;
        self.apply_follow_changes();
        self.publish_follow();
        self.save_state();
        log::info!("following {name} (index {ifindex})");
        Ok(())
    }

    /// Give an owned interface back to the clients' merge.
    pub(super) fn unfollow_interface(&mut self, ifindex: u32, name: &str) -> Result<()> {
        self.followed.remove(name);
        self.stop_following(ifindex);
        if self.ownership(ifindex) == Ownership::Owned {
            let desired = self.memberships.desired(self.keys_of(ifindex));
            self.datapath.set_filters(desired)?;
        }
        self.save_state();
        log::info!("no longer following {name} (index {ifindex})");
        Ok(())
    }

    fn entries_of(&self, ifindex: u32) -> (u32, u64) {
        let mut groups = 0;
        let mut sources = 0;
        for (k, i) in self.datapath.installed() {
            if k.ifindex == ifindex {
                groups += 1;
                sources += i.sources.len() as u64;
            }
        }
        (groups, sources)
    }

    /// Release `iface`. Memberships stay with the kernel's own socket filters.
    pub fn detach(&mut self, iface: &str, keep: bool) -> Result<Detached> {
        let iface::Interface {
            index: ifindex,
            name,
        } = iface::resolve(iface)?;
        if self.ownership(ifindex) != Ownership::Owned {
            return Err(ControllerError::NotOwned(name));
        }
        let deleted = self.datapath.detach(ifindex, keep)?;
        self.drop_unjoined.remove(&name);
        if self.followed.remove(&name) || self.follows(ifindex) {
            self.stop_following(ifindex);
        }
        self.owned.remove(&name);
        if keep {
            self.kept.insert(name.clone());
        } else {
            self.released.insert(name.clone());
        }
        self.save_state();
        Ok(Detached {
            iface: name,
            deleted: deleted as u64,
            kept: keep,
        })
    }

    /// Who runs XDP on `iface`.
    pub fn owner(&self, iface: &str) -> Result<OwnerView> {
        let iface::Interface {
            index: ifindex,
            name,
        } = iface::resolve(iface)?;
        let (groups, sources) = self.entries_of(ifindex);
        let mut view = OwnerView {
            iface: name,
            ifindex,
            owner: "none".into(),
            program_id: None,
            program_name: None,
            mode: None,
            since: None,
            pid: None,
            adopted: false,
            replaced: false,
            groups,
            sources,
            followed: false,
            drop_unjoined: None,
            carrier: None,
        };
        if let Some(a) = self.datapath.attachment(ifindex) {
            view.followed = self.follows_now(ifindex);
            view.drop_unjoined = self.drop_unjoined_view(ifindex, &view.iface);
            view.carrier = CarrierView::of(a);
            view.owner = "msfilter".into();
            view.program_id = Some(a.program_id);
            view.program_name = xdp::program_summary(a.program_id).ok().map(|s| s.name);
            view.mode = Some(a.mode.to_string());
            view.since = a.since.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs());
            view.pid = Some(std::process::id());
            view.adopted = a.adopted;
            view.replaced = a.replaced();
            return Ok(view);
        }
        let running = xdp::xdp_attachment(ifindex).map_err(ControllerError::XdpQuery)?;
        if let Some(x) = running {
            let carries_vlans = self.datapath.vlans_on(ifindex).next().is_some();
            view.owner = if self.ownership(ifindex) == Ownership::Kept {
                "msfilter-kept".into()
            } else if carries_vlans {
                "msfilter-vlans".into()
            } else {
                "other".into()
            };
            view.program_id = Some(x.prog_id);
            view.mode = Some(x.mode.to_string());
            if let Ok(s) = xdp::program_summary(x.prog_id) {
                view.program_name = Some(s.name);
                view.since = s
                    .loaded_at
                    .duration_since(UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs());
            }
        }
        Ok(view)
    }

    /// An interface disappeared (or took another name): release it cleanly. Its memberships
    /// end with it; an interface the configuration names is taken again when it returns.
    fn interface_gone(&mut self, ifindex: u32, name: &str) {
        let was_owned = self.ownership(ifindex) != Ownership::Unowned;
        if self
            .follow
            .as_ref()
            .is_some_and(|f| f.follower.interfaces().contains(&ifindex))
        {
            self.stop_following(ifindex);
        }
        if !self.config.interfaces.get(name).is_some_and(|i| i.follow) {
            self.followed.remove(name);
        }
        let mut ended = 0;
        for client in self.clients.values_mut() {
            let before = client.sockets.len();
            client.sockets.retain(|k, _| k.ifindex != ifindex);
            ended += before - client.sockets.len();
        }
        let keys: Vec<_> = self
            .memberships
            .groups()
            .filter(|k| k.ifindex == ifindex)
            .copied()
            .collect();
        for key in &keys {
            let members: Vec<_> = self.memberships.members(key).map(|(c, _)| c).collect();
            for client in members {
                self.memberships.set(client, *key, None);
            }
        }
        match self.datapath.forget_interface(ifindex) {
            Ok(n) if was_owned || n > 0 => log::warn!(
                "interface {name} (index {ifindex}) went away: released it, deleted {n} \
                 entries, {ended} memberships ended"
            ),
            Ok(_) => {}
            Err(e) => log::error!("releasing interface {name} (index {ifindex}): {e}"),
        }
        self.owned.remove(name);
        self.save_state();
    }

    /// React to an interface event: an owned interface that goes away or takes another name
    /// is released; one the configuration names is taken when it (re)appears.
    pub fn link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Added { ifindex, name } => self.interface_present(ifindex, &name),
            LinkEvent::Renamed {
                ifindex,
                old_name,
                name,
            } => {
                if self.ownership(ifindex) != Ownership::Unowned {
                    log::warn!("owned interface {old_name} (index {ifindex}) is now called {name}");
                    self.interface_gone(ifindex, &old_name);
                }
                self.interface_present(ifindex, &name);
            }
            LinkEvent::Removed { ifindex, name } => self.interface_gone(ifindex, &name),
            LinkEvent::Changed { .. } => {}
        }
    }

    /// An interface appeared (or was renamed to `name`): restore the persisted memberships
    /// that waited for it, and take it if the configuration names it and msfilter does not
    /// own it yet.
    fn interface_present(&mut self, ifindex: u32, name: &str) {
        self.retry_unrestored(name);
        if self.ownership(ifindex) == Ownership::Owned || !self.config.interfaces.contains_key(name)
        {
            return;
        }
        log::info!("configured interface {name} (index {ifindex}) is here: taking it");
        if let Err(e) = self.apply_config_interface(name) {
            log::error!("taking configured interface {name}: {e}");
        }
    }
}
