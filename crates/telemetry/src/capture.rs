//! Axle's own logs, as log records for export: a `tracing` layer that hands every event the
//! process logs (after the process's `AXLE_LOG` filter) to a [`LogSink`].

use crate::export::LogSink;
use crate::otlp::{Log, Severity};
use std::fmt::Write as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

pub struct CaptureLayer {
    sink: LogSink,
}

impl CaptureLayer {
    pub fn new(sink: LogSink) -> CaptureLayer {
        CaptureLayer { sink }
    }
}

/// The event's message, then its other fields as `key=value`, as the console shows them.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut text = Text::default();
        event.record(&mut text);
        let metadata = event.metadata();
        let severity = match *metadata.level() {
            Level::ERROR => Severity::Error,
            Level::WARN => Severity::Warn,
            Level::INFO => Severity::Info,
            Level::DEBUG | Level::TRACE => Severity::Debug,
        };
        self.sink.push(Log {
            time_unix_nano: crate::export::unix_nanos(std::time::SystemTime::now()),
            severity,
            body: format!("{}{}", text.message, text.fields),
            attributes: vec![("code.namespace".into(), metadata.target().to_string())],
            resource: Vec::new(),
        });
    }
}
