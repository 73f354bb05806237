//! A `tracing` subscriber for tests: every event of the process, as one
//! line each (`target LEVEL message=... field=value ... `), installed once
//! as the global default (events come from executors' threads too).
#![allow(dead_code)]

use std::sync::{Mutex, OnceLock};

static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A subscriber that records every event in [`EVENTS`].
struct Recorder;

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!(" {}={}", field.name(), value));
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let meta = event.metadata();
        let mut fields = Fields(format!("{} {}", meta.target(), meta.level()));
        event.record(&mut fields);
        // Every field ends with a space: `id=#1 ` never matches `id=#17`.
        fields.0.push(' ');
        EVENTS.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

pub fn record_events() {
    static SET: OnceLock<()> = OnceLock::new();
    SET.get_or_init(|| tracing::subscriber::set_global_default(Recorder).unwrap());
}

/// The recorded events that contain every one of `words`.
pub fn events_with(words: &[&str]) -> Vec<String> {
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|e| words.iter().all(|w| e.contains(w)))
        .cloned()
        .collect()
}

/// The message of a recorded event line.
pub fn message(line: &str) -> &str {
    line.split(" message=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_default()
}
