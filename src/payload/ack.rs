//! The acknowledgement of one stream message (PROTOCOL.md §5.3).

use super::gojson::go_struct;
use crate::Frame;

go_struct! {
    /// Payload of an `acknowledge` frame. Receivers match acknowledgements by
    /// `acknowledged_message_sequence_number` only.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Acknowledge {
        /// MessageType of the acknowledged frame.
        "AcknowledgedMessageType" => pub acknowledged_message_type: String,
        /// Canonical lowercase text of the acknowledged frame's MessageId.
        "AcknowledgedMessageId" => pub acknowledged_message_id: String,
        /// SequenceNumber of the acknowledged frame.
        "AcknowledgedMessageSequenceNumber" => pub acknowledged_message_sequence_number: i64,
        /// Always `true` from the reference peers.
        "IsSequentialMessage" => pub is_sequential_message: bool,
        /// Our extension, sent only once both ends negotiated it: `true` acknowledges every
        /// message up to and including the sequence number. Absent from the Go peers' JSON.
        #[serde(skip_serializing_if = "Option::is_none")]
        "IsCumulative" => pub is_cumulative: Option<bool>,
    }
}

impl Acknowledge {
    /// The acknowledgement the reference peers send for `frame`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use bytes::Bytes;
    /// # use ssm_session::{Frame, MessageType, PayloadType};
    /// use ssm_session::payload::{Acknowledge, JsonPayload};
    /// # let frame = Frame {
    /// #     message_type: MessageType::OutputStreamData, schema_version: 1,
    /// #     created_date: 1, sequence_number: 5, flags: 0,
    /// #     message_id: uuid::Uuid::from_u128(0xdd01e56b_ff48_483e_a508_b5f073f31b16),
    /// #     payload_type: PayloadType::Output, payload: Bytes::from_static(b"x"),
    /// # };
    /// let ack = Acknowledge::for_frame(&frame);
    /// assert_eq!(ack.acknowledged_message_id, "dd01e56b-ff48-483e-a508-b5f073f31b16");
    /// assert!(ack.to_json().starts_with(br#"{"AcknowledgedMessageType":"output_stream_data""#));
    /// ```
    pub fn for_frame(frame: &Frame) -> Self {
        Acknowledge {
            acknowledged_message_type: frame.message_type.to_string(),
            acknowledged_message_id: frame.message_id.hyphenated().to_string(),
            acknowledged_message_sequence_number: frame.sequence_number,
            is_sequential_message: true,
            is_cumulative: None,
        }
    }
}
