//! [`Message`]: one delivered `(topic, payload)`.

use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_pickle::{DeOptions, Value};

use crate::error::{Error, Result};

/// A delivered message: the topic, and the publisher's pickle exactly as it was sent.
#[derive(Debug, Clone)]
pub struct Message {
    topic: Arc<str>,
    body: Bytes,
}

impl Message {
    pub(crate) fn new(topic: Arc<str>, body: Bytes) -> Message {
        Message { topic, body }
    }

    /// The topic it was published to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The publisher's bytes: the pickle of the whole `(topic, payload)` tuple, unchanged.
    /// Forward these to keep a message byte for byte.
    pub fn pickle(&self) -> &Bytes {
        &self.body
    }

    /// The payload alone as a standalone pickle (decoded and pickled again by serde-pickle:
    /// equal in value to what was published, not necessarily the same bytes).
    pub fn payload_bytes(&self) -> Result<Vec<u8>> {
        Ok(serde_pickle::value_to_vec(
            &self.value()?,
            serde_pickle::SerOptions::new(),
        )?)
    }

    /// The payload decoded into `T` (a struct from a dict, a `Vec` from a list or tuple, ...).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        let (_, payload): (String, T) = serde_pickle::from_slice(&self.body, DeOptions::new())?;
        Ok(payload)
    }

    /// The payload as a dynamic [`serde_pickle::Value`].
    pub fn value(&self) -> Result<Value> {
        match serde_pickle::value_from_slice(&self.body, DeOptions::new())? {
            Value::Tuple(mut items) if items.len() == 2 => Ok(items.swap_remove(1)),
            other => Err(Error::Unexpected(format!("{other:.200}"))),
        }
    }
}
