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
    let mut subs = s.conn.subscriptions();
    if !subs.contains(&key) && subs.len() >= max {
        let reason = format!(
            "subscription limit reached: this connection holds {} (max_subscriptions)",
            subs.len()
        );
        drop(subs);
        s.refuse("invalid_message", &reason);
        return;
    }
    let new = subs.insert(key);
    drop(subs);
    if new {
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
    let was_held = s.conn.subscriptions().remove(&key);
    if was_held {
        s.services
            .router
            .index()
            .unsubscribe(s.outbox.id, &i.pattern, i.group.as_deref());
    }
    s.outbox.reply(reply::ok("$unsub", i));
}
