//! [`EventMetadata`]: the free-form part of the identity and business-event calls.

use serde::Serialize;
use serde_json::Value;

/// Event metadata: any JSON-like tree (maps, lists, strings, numbers, booleans), flattened into
/// tags with `.` between path segments, list indices as segments, at most 5 segments deep;
/// `null` writes nothing.
///
/// ```
/// use tracing_usr::EventMetadata;
/// let from_json: EventMetadata = serde_json::json!({"plan": "free", "seats": 3}).into();
/// #[derive(serde::Serialize)]
/// struct Order { id: u64, items: Vec<&'static str> }
/// let from_struct = EventMetadata::serialize(&Order { id: 7, items: vec!["book"] }).unwrap();
/// assert!(from_json.as_value().is_some() && from_struct.as_value().is_some());
/// assert!(EventMetadata::none().as_value().is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventMetadata(Option<Value>);

impl EventMetadata {
    /// No metadata.
    pub fn none() -> Self {
        Self(None)
    }

    /// Metadata from anything `serde::Serialize`.
    ///
    /// # Errors
    /// When the value cannot be represented as JSON (for example a map with non-string keys).
    pub fn serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_value(value).map(|v| Self(Some(v)))
    }

    /// The metadata as JSON, if any.
    pub fn as_value(&self) -> Option<&Value> {
        self.0.as_ref()
    }

    pub(crate) fn into_value(self) -> Option<Value> {
        self.0
    }
}

impl From<Value> for EventMetadata {
    fn from(value: Value) -> Self {
        Self(Some(value))
    }
}

impl From<&Value> for EventMetadata {
    fn from(value: &Value) -> Self {
        Self(Some(value.clone()))
    }
}

impl From<Option<Value>> for EventMetadata {
    fn from(value: Option<Value>) -> Self {
        Self(value)
    }
}

impl From<()> for EventMetadata {
    fn from((): ()) -> Self {
        Self(None)
    }
}
