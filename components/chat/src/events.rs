//! The chat's one durable event: a message was posted, naming the members
//! who were offline, for the notifications service to reach them.

use bv_events_guest::CloudEvent;
use serde_json::json;

use crate::store::Message;

/// The `source` of chat events.
pub const SOURCE: &str = "/chat";
/// A message was stored.
pub const MESSAGE_POSTED: &str = "com.bitvelocity.chat.message.posted.v1";
/// How much of the text the event carries (a notification's preview).
const PREVIEW_CHARS: usize = 140;

/// `chat.message.posted`: subject the room, so a consumer gets one room's
/// messages in order.
pub fn message_posted(message: &Message, recipients: &[String], offline: &[String]) -> CloudEvent {
    let preview: String = message
        .body
        .as_deref()
        .unwrap_or("")
        .chars()
        .take(PREVIEW_CHARS)
        .collect();
    CloudEvent::new(
        MESSAGE_POSTED,
        SOURCE,
        &message.room_id,
        json!({
            "roomId": message.room_id,
            "seq": message.seq,
            "senderId": message.sender,
            "preview": preview,
            "recipients": recipients,
            "offline": offline,
        }),
    )
}
