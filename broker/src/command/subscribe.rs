//! `("$sub", pattern)` / `("$sub", (pattern, group))` and `$unsub`: change this connection's
//! interest, answered `("$ok", <the request>)`.

use mphub_protocol::{reply, Interest};

use super::{held, Action, Session};

/// Subscribes (or joins a queue group), when the user may and within `max_subscriptions`. A
/// repeated `$sub` (a client restoring after a reconnect, say) changes nothing and is answered
/// `$ok` again.
pub(super) fn subscribe(s: &mut Session<'_>, i: &Interest<'_>) {
    if !s.user.permissions.may_subscribe(&i.pattern) {
        s.deny(Action::Subscribe, &i.pattern);
        return;
    }
    let key = held(&i.pattern, i.group.as_deref());
    let max = s.config.settings.max_subscriptions.get();
    if !s.subs.contains(&key) && s.subs.len() >= max {
        let reason = format!(
            "subscription limit reached: this connection holds {} (max_subscriptions)",
            s.subs.len()
        );
        s.refuse("invalid_message", &reason);
        return;
    }
    if s.subs.insert(key) {
        s.services
            .router
            .index()
            .subscribe(s.outbox, &i.pattern, i.group.as_deref());
    }
    s.outbox.reply(reply::ok("$sub", i));
}

/// Unsubscribes; answered `$ok` whether or not the connection held it.
pub(super) fn unsubscribe(s: &mut Session<'_>, i: &Interest<'_>) {
    let key = held(&i.pattern, i.group.as_deref());
    if s.subs.remove(&key) {
        if s.subs.capacity() > 4 * s.subs.len() + 64 {
            // Give back what a burst of subscriptions took, once most are gone.
            s.subs.shrink_to_fit();
        }
        s.services
            .router
            .index()
            .unsubscribe(s.outbox.id, &i.pattern, i.group.as_deref());
    }
    s.outbox.reply(reply::ok("$unsub", i));
}
