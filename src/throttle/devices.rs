//! Known devices: a username's client ids that logged in successfully lately.

use super::*;

use super::limiter::{Episodes, shrink};

/// A known device, in its username's entry: 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Device {
    /// 32 bits of the device's keyed hash: two devices of one username share it by a
    /// chance of 2^-32, and someone who does not know the key cannot aim at it.
    pub(super) tag: u32,
    /// Its last success, seconds after the clock's start.
    pub(super) seen: u32,
}

/// A username's known devices: one inline (most users), more beside it. 16 bytes (the
/// box's null niche tells them apart).
#[derive(Debug)]
pub(super) enum Devices {
    One(Device),
    Many(Box<[Device]>),
}

impl Devices {
    pub(super) fn as_slice(&self) -> &[Device] {
        match self {
            Devices::One(device) => std::slice::from_ref(device),
            Devices::Many(devices) => devices,
        }
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [Device] {
        match self {
            Devices::One(device) => std::slice::from_mut(device),
            Devices::Many(devices) => devices,
        }
    }

    pub(super) fn push(&mut self, device: Device) {
        let mut devices = self.as_slice().to_vec();
        devices.push(device);
        *self = Devices::Many(devices.into_boxed_slice());
    }

    /// Keeps the devices `keep` says; the others go to `gone`. `false`: none is left.
    pub(super) fn retain(
        &mut self,
        mut keep: impl FnMut(&Device) -> bool,
        gone: &mut Vec<Device>,
    ) -> bool {
        if self.as_slice().iter().all(&mut keep) {
            return true;
        }
        let (kept, dropped): (Vec<Device>, Vec<Device>) =
            self.as_slice().iter().partition(|d| keep(d));
        gone.extend(dropped);
        *self = match kept[..] {
            [] => return false,
            [one] => Devices::One(one),
            _ => Devices::Many(kept.into_boxed_slice()),
        };
        true
    }

    pub(super) fn heap_bytes(&self) -> usize {
        match self {
            Devices::One(_) => 0,
            Devices::Many(devices) => {
                std::mem::size_of_val::<[Device]>(devices) + ALLOCATION_OVERHEAD
            }
        }
    }
}

/// A known device's failures in a row, kept only while it has some.
#[derive(Debug, Default)]
pub(super) struct Failing {
    /// Milliseconds after the clock's start (set from its second failure in a row).
    pub(super) blocked_until: u64,
    pub(super) failures: u16,
}

/// The key of a known device's failures and episode.
pub(super) fn device_key(user: u64, tag: u32) -> u64 {
    user.rotate_left(17) ^ u64::from(tag).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Known devices by username, at most [`DEVICES_PER_USER`] each and `limit` in all.
#[derive(Debug, Default)]
pub(super) struct KnownDevices {
    pub(super) users: Keyed<Devices>,
    pub(super) count: usize,
    pub(super) failing: Keyed<Failing>,
    pub(super) episodes: Episodes,
}

impl KnownDevices {
    pub(super) fn is_known(&self, user: u64, tag: u32, now_s: u32, lifetime: u32) -> bool {
        self.users.get(&user).is_some_and(|devices| {
            devices
                .as_slice()
                .iter()
                .any(|d| d.tag == tag && now_s.saturating_sub(d.seen) <= lifetime)
        })
    }

    /// A device no longer known: its failures and episode go with it.
    pub(super) fn forget(&mut self, user: u64, tag: u32, events: &mut Vec<Event>) {
        let key = device_key(user, tag);
        self.failing.remove(&key);
        self.episodes.end(KeyKind::Device, key, events);
    }

    /// A successful login: remembered (or refreshed), its failures forgotten.
    pub(super) fn remember(
        &mut self,
        user: u64,
        tag: u32,
        now_s: u32,
        lifetime: u32,
        limit: usize,
        events: &mut Vec<Event>,
    ) {
        if limit == 0 {
            return;
        }
        self.forget(user, tag, events);
        let fresh = Device { tag, seen: now_s };
        let full = self.count >= limit;
        let Some(devices) = self.users.get_mut(&user) else {
            // When full, the sweep frees room: other users' devices are never pushed out.
            if !full {
                self.users.insert(user, Devices::One(fresh));
                self.count += 1;
            }
            return;
        };
        let slice = devices.as_mut_slice();
        if let Some(device) = slice.iter_mut().find(|d| d.tag == tag) {
            device.seen = now_s;
            return;
        }
        // The user's own least recently seen makes room (an expired one even when full).
        let (oldest, seen) = slice
            .iter()
            .enumerate()
            .map(|(i, d)| (i, d.seen))
            .min_by_key(|&(_, seen)| seen)
            .expect("never empty");
        let expired = now_s.saturating_sub(seen) > lifetime;
        if slice.len() >= DEVICES_PER_USER || full && expired {
            let old = std::mem::replace(&mut slice[oldest], fresh);
            self.forget(user, old.tag, events);
        } else if !full {
            devices.push(fresh);
            self.count += 1;
        }
    }

    pub(super) fn sweep(&mut self, now_s: u32, lifetime: u32, events: &mut Vec<Event>) {
        let mut gone = Vec::new();
        let mut forgotten = Vec::new();
        self.users.retain(|&user, devices| {
            let start = gone.len();
            let left = devices.retain(|d| now_s.saturating_sub(d.seen) <= lifetime, &mut gone);
            forgotten.extend(gone[start..].iter().map(|d| (user, d.tag)));
            left
        });
        self.count -= forgotten.len();
        for (user, tag) in forgotten {
            self.forget(user, tag, events);
        }
        shrink(&mut self.users);
        shrink(&mut self.failing);
    }

    pub(super) fn bytes(&self) -> usize {
        table_bytes(&self.users)
            + self.users.values().map(Devices::heap_bytes).sum::<usize>()
            + table_bytes(&self.failing)
            + self.episodes.bytes()
    }
}

/// 127.0.0.0/8 and ::1 (also as an IPv4-mapped address).
pub(super) fn is_loopback(address: &str) -> bool {
    let address = address.strip_prefix("::ffff:").unwrap_or(address);
    address
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}
