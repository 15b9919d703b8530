//! What the gateway keeps per serial device: which `seq` it expects next and which it has
//! committed. Sans-IO: decoded messages and commit outcomes in, decisions out.
//!
//! The link is go-back-N with cumulative acks (`edge_wire::link`): a sample is stored only if its
//! `seq` is the next one expected for its device and boot, so per-device order holds and a
//! retransmitted sample is recognised and not stored twice. The state is shared by every port,
//! so a device moved to another port carries on where it was.

use std::collections::HashMap;

use edge_wire::link::{Ack, Hello};

/// Per-device expectations.
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    devices: HashMap<String, Expect>,
}

#[derive(Debug, Clone, Copy)]
struct Expect {
    boot: u32,
    /// The `seq` to store next.
    next: u32,
    /// Highest `seq` of this boot committed to the journal.
    committed: Option<u32>,
}

/// What to do with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Store it: it is the next one of its device.
    Store,
    /// Already stored: do not store it again. `Some(ack)` when it is committed, so the device
    /// can be told again.
    Duplicate(Option<Ack>),
    /// A sample is missing before it: drop it; the device resends from the gap.
    Gap {
        /// The `seq` expected.
        expected: u32,
    },
    /// Its boot is not the one its device announced: drop it.
    WrongBoot,
}

impl Sequencer {
    /// Takes a device's `Hello`; returns the ack to send back if something of this boot is
    /// already committed (the device may then free it without resending).
    pub(crate) fn hello(&mut self, hello: &Hello<'_>) -> Option<Ack> {
        let expect = self
            .devices
            .entry(hello.device.to_owned())
            .or_insert(Expect {
                boot: hello.boot,
                next: hello.oldest_seq,
                committed: None,
            });
        if expect.boot != hello.boot {
            *expect = Expect {
                boot: hello.boot,
                next: hello.oldest_seq,
                committed: None,
            };
        } else if expect.next < hello.oldest_seq {
            // The device no longer holds what it would have sent next (its outbox overflowed):
            // carry on from what it has.
            expect.next = hello.oldest_seq;
        }
        expect.committed.map(|seq| Ack {
            boot: expect.boot,
            seq,
        })
    }

    /// Decides about a sample of `device` (the device of the port's last `Hello`).
    pub(crate) fn sample(&mut self, device: &str, boot: u32, seq: u32) -> Verdict {
        let Some(expect) = self.devices.get_mut(device) else {
            return Verdict::WrongBoot;
        };
        if expect.boot != boot {
            return Verdict::WrongBoot;
        }
        if seq < expect.next {
            let ack = expect
                .committed
                .filter(|&committed| committed >= seq)
                .map(|committed| Ack {
                    boot,
                    seq: committed,
                });
            return Verdict::Duplicate(ack);
        }
        if seq > expect.next {
            return Verdict::Gap {
                expected: expect.next,
            };
        }
        match expect.next.checked_add(1) {
            Some(next) => {
                expect.next = next;
                Verdict::Store
            }
            // The last seq of a boot: nothing can follow it, so nothing can be stored after it.
            None => Verdict::Gap {
                expected: expect.next,
            },
        }
    }

    /// Records that every sample of `device`/`boot` up to `seq` is committed; returns the ack.
    pub(crate) fn committed(&mut self, device: &str, boot: u32, seq: u32) -> Option<Ack> {
        let expect = self.devices.get_mut(device)?;
        if expect.boot != boot {
            return None;
        }
        expect.committed = Some(expect.committed.map_or(seq, |done| done.max(seq)));
        Some(Ack { boot, seq })
    }

    /// Forgets what was accepted but not committed for `device`: after a failed commit, the
    /// device's resend is stored again from its oldest unacknowledged sample.
    pub(crate) fn rewind(&mut self, device: &str) {
        self.devices.remove(device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(device: &str, boot: u32, oldest_seq: u32) -> Hello<'_> {
        Hello {
            device,
            boot,
            firmware_version: "1.0",
            oldest_seq,
        }
    }

    #[test]
    fn samples_are_stored_in_order_once() {
        let mut sequencer = Sequencer::default();
        assert_eq!(sequencer.hello(&hello("d", 7, 0)), None);
        assert_eq!(sequencer.sample("d", 7, 0), Verdict::Store);
        assert_eq!(sequencer.sample("d", 7, 1), Verdict::Store);
        assert_eq!(
            sequencer.sample("d", 7, 1),
            Verdict::Duplicate(None),
            "in flight, not committed: no ack yet"
        );
        assert_eq!(sequencer.sample("d", 7, 3), Verdict::Gap { expected: 2 });
        assert_eq!(
            sequencer.committed("d", 7, 1),
            Some(Ack { boot: 7, seq: 1 })
        );
        assert_eq!(
            sequencer.sample("d", 7, 0),
            Verdict::Duplicate(Some(Ack { boot: 7, seq: 1 })),
            "a committed duplicate is acknowledged again"
        );
        assert_eq!(sequencer.sample("d", 7, 2), Verdict::Store);
        assert_eq!(sequencer.sample("d", 8, 3), Verdict::WrongBoot);
        assert_eq!(sequencer.sample("unknown", 7, 0), Verdict::WrongBoot);
    }

    #[test]
    fn hello_starts_a_boot_and_skips_what_the_device_dropped() {
        let mut sequencer = Sequencer::default();
        sequencer.hello(&hello("d", 1, 5));
        assert_eq!(sequencer.sample("d", 1, 4), Verdict::Duplicate(None));
        assert_eq!(sequencer.sample("d", 1, 5), Verdict::Store);
        assert_eq!(
            sequencer.committed("d", 1, 5),
            Some(Ack { boot: 1, seq: 5 })
        );
        // A repeated Hello of the same boot keeps the place and answers with the ack.
        assert_eq!(
            sequencer.hello(&hello("d", 1, 5)),
            Some(Ack { boot: 1, seq: 5 })
        );
        assert_eq!(
            sequencer.sample("d", 1, 5),
            Verdict::Duplicate(Some(Ack { boot: 1, seq: 5 }))
        );
        // The device's outbox overflowed: it now holds only from 9 on.
        sequencer.hello(&hello("d", 1, 9));
        assert_eq!(sequencer.sample("d", 1, 9), Verdict::Store);
        // A reboot starts over.
        assert_eq!(sequencer.hello(&hello("d", 2, 0)), None);
        assert_eq!(sequencer.sample("d", 2, 0), Verdict::Store);
        assert_eq!(
            sequencer.committed("d", 1, 9),
            None,
            "an ack for an old boot"
        );
    }

    #[test]
    fn rewind_accepts_the_resend_after_a_failed_commit() {
        let mut sequencer = Sequencer::default();
        sequencer.hello(&hello("d", 1, 0));
        assert_eq!(sequencer.sample("d", 1, 0), Verdict::Store);
        sequencer.rewind("d");
        sequencer.hello(&hello("d", 1, 0));
        assert_eq!(sequencer.sample("d", 1, 0), Verdict::Store);
    }

    #[test]
    fn the_last_seq_of_a_boot_ends_it() {
        let mut sequencer = Sequencer::default();
        sequencer.hello(&hello("d", 1, u32::MAX));
        assert_eq!(
            sequencer.sample("d", 1, u32::MAX),
            Verdict::Gap { expected: u32::MAX }
        );
    }
}
