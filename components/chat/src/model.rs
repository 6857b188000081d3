//! The chat's domain types: each parses its raw form once, so that code
//! holding one never checks it again.

use std::fmt;

use bv_auth::Subject;
use bv_service::Problem;

/// The longest message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2_000;
/// The most members a group room has, its owner included.
pub const MAX_MEMBERS: usize = 200;
/// The longest room name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// A room's id: a UUID, lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomId(String);

impl RoomId {
    /// Parses a UUID in its hyphenated form; `None` otherwise.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = raw.len() == 36
            && raw.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_hexdigit(),
            });
        ok.then(|| Self(raw.to_ascii_lowercase()))
    }

    /// The id, as the database gives it back (trusted).
    pub fn from_db(raw: String) -> Self {
        Self(raw)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The WebSocket group of the room's live members.
    pub fn group(&self) -> String {
        format!("chat:{}", self.0)
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A direct room is two people, fixed; a group has roles and grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKind {
    /// Two members, both owners; nobody joins or leaves.
    Direct,
    /// An owner, moderators and members.
    Group,
}

impl RoomKind {
    /// As stored and answered.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Direct => "direct",
            RoomKind::Group => "group",
        }
    }

    /// Parses the stored or requested form.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "direct" => Some(RoomKind::Direct),
            "group" => Some(RoomKind::Group),
            _ => None,
        }
    }
}

/// What a member may do in a room, ordered by power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MemberRole {
    /// Writes and reads.
    Member,
    /// Also adds members, deletes anyone's message, mutes members.
    Moderator,
    /// Also names moderators and removes them.
    Owner,
}

impl MemberRole {
    /// As stored and answered.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Member => "member",
            MemberRole::Moderator => "moderator",
            MemberRole::Owner => "owner",
        }
    }

    /// Parses the stored or requested form.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "member" => Some(MemberRole::Member),
            "moderator" => Some(MemberRole::Moderator),
            "owner" => Some(MemberRole::Owner),
            _ => None,
        }
    }
}

/// A user of the platform, by their token's subject.
pub type UserId = Subject;

/// Parses a user id from a request field.
pub fn user(field: &str, raw: &str) -> Result<UserId, Problem> {
    Subject::parse(raw).ok_or_else(|| {
        Problem::invalid_field(
            field,
            format!("`{raw}` is not a user id (1-128 letters, digits, `-`, `_`, `.`, `@`)"),
        )
    })
}

/// A message's text: 1 to [`MAX_MESSAGE_CHARS`] characters, not blank, no
/// control characters but newline and tab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    /// Parses `raw`, naming `field` in the problem.
    pub fn parse(field: &str, raw: &str) -> Result<Self, Problem> {
        let chars = raw.chars().count();
        if raw.trim().is_empty() {
            return Err(Problem::invalid_field(field, "must not be blank"));
        }
        if chars > MAX_MESSAGE_CHARS {
            return Err(Problem::invalid_field(
                field,
                format!("{chars} characters; at most {MAX_MESSAGE_CHARS}"),
            ));
        }
        if raw
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(Problem::invalid_field(
                field,
                "control characters other than newline and tab are not allowed",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The sender's own id for a message, so that a retried send is the same
/// message: 1-64 letters, digits, `-` or `_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId(String);

impl ClientId {
    /// Parses `raw`, naming `field` in the problem.
    pub fn parse(field: &str, raw: &str) -> Result<Self, Problem> {
        let ok = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(raw.to_owned()))
            .ok_or_else(|| Problem::invalid_field(field, "1-64 letters, digits, `-` or `_`"))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A room name: 1 to [`MAX_NAME_CHARS`] characters, trimmed, no control
/// characters.
pub fn room_name(raw: &str) -> Result<String, Problem> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(Problem::invalid_field(
            "name",
            format!("1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Problem::invalid_field("name", "no control characters"));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_are_uuids() {
        assert!(RoomId::parse("0b0e7c2e-8d4c-4c57-9a0e-2f1f7c6a1b2c").is_some());
        assert_eq!(
            RoomId::parse("0B0E7C2E-8D4C-4C57-9A0E-2F1F7C6A1B2C")
                .unwrap()
                .as_str(),
            "0b0e7c2e-8d4c-4c57-9a0e-2f1f7c6a1b2c"
        );
        for bad in [
            "",
            "x",
            "0b0e7c2e8d4c4c579a0e2f1f7c6a1b2c",
            "0b0e7c2e-8d4c-4c57-9a0e-2f1f7c6a1b2g",
        ] {
            assert!(RoomId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn message_text_limits() {
        assert!(MessageText::parse("body", "hi\nthere\t!").is_ok());
        assert!(MessageText::parse("body", "   ").is_err());
        assert!(MessageText::parse("body", "bell\u{7}").is_err());
        assert!(MessageText::parse("body", &"é".repeat(MAX_MESSAGE_CHARS)).is_ok());
        assert!(MessageText::parse("body", &"é".repeat(MAX_MESSAGE_CHARS + 1)).is_err());
    }

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(MemberRole::Owner > MemberRole::Moderator);
        assert!(MemberRole::Moderator > MemberRole::Member);
        assert_eq!(MemberRole::parse("moderator"), Some(MemberRole::Moderator));
        assert_eq!(MemberRole::parse("admin"), None);
    }
}
