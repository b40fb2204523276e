//! The session's side of pub/sub: entering subscribed mode (the relay itself is
//! `crate::pubsub`), and UNSUBSCRIBE outside it.

use super::{RequestArgs, Session, write_request};
use cinnabar_commands::{Args, Command};
use cinnabar_resp::encode;

impl Session {
    /// Arranges subscribed mode once earlier replies are out; the relay (`crate::pubsub`)
    /// decides which masters carry each subscription.
    pub(super) fn enter_pubsub(&mut self, command: &Command, args: &RequestArgs<'_>) {
        let routes = self.worker.routes();
        let master = match self.slot_of(command, args) {
            Ok(Some(slot)) if command.name() == "ssubscribe" => routes.owner(slot),
            Ok(_) => routes
                .owner(crate::pubsub::HOME_SLOT)
                .or((!routes.masters().is_empty()).then_some(0)),
            Err(e) => return self.local_error(&e),
        };
        if master.is_none() {
            return self.local_error(b"CLUSTERDOWN cinnabar: no master is known");
        }
        let mut first = Vec::new();
        write_request(args, &mut first);
        self.subscribe = Some(first.into_boxed_slice());
    }

    /// UNSUBSCRIBE & co. outside subscribed mode: Redis confirms with a count of 0 for each
    /// channel (or once, with a nil channel, when none is named).
    pub(super) fn unsubscribe_unsubscribed(&mut self, command: &Command, args: &RequestArgs<'_>) {
        let kind = command.name().as_bytes();
        let channels = args.len().saturating_sub(1);
        let protocol = self.protocol();
        for i in 0..channels.max(1) {
            let channel = args.get(i + 1);
            self.local_with(|out, _| {
                encode::push_header(out, 3, protocol);
                encode::bulk(out, kind);
                match channel {
                    Some(c) => encode::bulk(out, c),
                    None => encode::null(out, protocol),
                }
                encode::integer(out, 0);
            });
        }
    }
}
