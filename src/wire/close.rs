//! The close frames wssed sends a device (docs/protocol.md §8.8): why, with the code
//! (RFC 6455 §7.4.1) and the reason text that say it.

use super::listed::listed;

listed! {
    /// Why wssed closes a device's session with a close frame of its own.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Close {
        /// The daemon is shutting down.
        ShuttingDown,
        /// The device broke the WebSocket protocol.
        ProtocolError,
        /// The device sent a binary frame.
        Binary,
        /// A text message or a close reason that is not UTF-8.
        InvalidUtf8,
        /// `on_duplicate = "reject"`: the user id has a session already (sent to the new one).
        AlreadyConnected,
        /// `on_duplicate = "replace"`: a new session took the user id (sent to the old one).
        Replaced,
        /// A message or a frame over `max_message_bytes`.
        TooBig,
        /// The device table is full.
        AtCapacity,
        /// The memory budget cannot hold a new session, or a message the device started.
        OverBudget,
    }
}

impl Close {
    /// The close code.
    pub(crate) fn code(self) -> u16 {
        match self {
            Close::ShuttingDown => 1001,
            Close::ProtocolError => 1002,
            Close::Binary => 1003,
            Close::InvalidUtf8 => 1007,
            Close::AlreadyConnected | Close::Replaced => 1008,
            Close::TooBig => 1009,
            Close::AtCapacity | Close::OverBudget => 1013,
        }
    }

    /// The reason text.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Close::ShuttingDown => "Server shutting down",
            Close::ProtocolError => "Protocol error",
            Close::Binary => "Binary frames are not accepted",
            Close::InvalidUtf8 => "Invalid UTF-8",
            Close::AlreadyConnected => "User already connected",
            Close::Replaced => "Replaced by new connection",
            Close::TooBig => "Message too big",
            Close::AtCapacity => "Server at capacity, try again later",
            Close::OverBudget => "Memory budget exhausted, try again later",
        }
    }
}
