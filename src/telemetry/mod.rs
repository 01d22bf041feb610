//! Structured logs through `tracing`, and, when `telemetry.otlp_endpoint` is
//! set, spans exported over OTLP so that one trace follows a request through
//! every instance it reaches. `RUST_LOG` filters the logs; `log_format` picks
//! text or JSON.
//!
//! The spans exported are only ours: `request` (every HTTP request but the
//! peer door's QUERY and COMMAND), `peer request` (a QUERY or COMMAND served,
//! continuing the sender's trace from the `traceparent` in its signed
//! envelope) and `peer call` (a request to a peer, whose `traceparent` goes
//! into the envelope). A process serves one instance, whose name is the
//! service name.

mod otlp;

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Config, LogFormat};
use crate::federation::traceparent::TraceParent;

/// Names of the spans exported (see the module's comment).
pub const REQUEST: &str = "request";
pub const PEER_REQUEST: &str = "peer request";
pub const PEER_CALL: &str = "peer call";
/// The HTTP span of a QUERY or COMMAND: logged, not exported, since the
/// `peer request` inside it is the server span of the sender's trace.
pub const PEER_DOOR: &str = "peer door";

/// Whether spans are exported: without it nothing below reads or writes a
/// trace context, so the request path pays only for creating its spans.
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Logs only (commands that serve no instance).
pub fn init(format: LogFormat) {
    let _ = install(format, None);
}

/// Flushes the spans still waiting when dropped or shut down.
pub struct Exporter(Option<SdkTracerProvider>);

impl Exporter {
    pub fn shutdown(mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: spans not all exported at shutdown: {e}");
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Logs, and span export when `telemetry.otlp_endpoint` is set: batches
/// every `telemetry.otlp_export_interval`, sent through `runtime` by our own
/// HTTP client. Call from outside the runtime; shut the result down before
/// the runtime stops, so the last batch goes out.
pub fn init_with_export(config: &Config, runtime: &tokio::runtime::Handle) -> anyhow::Result<Exporter> {
    let Some(endpoint) = &config.otlp_endpoint else {
        init(config.log_format);
        return Ok(Exporter(None));
    };
    let provider = otlp::provider(config, endpoint, runtime.clone())?;
    install(config.log_format, Some(provider.tracer("mosaic")))?;
    EXPORTING.store(true, Ordering::Relaxed);
    Ok(Exporter(Some(provider)))
}

fn install(format: LogFormat, tracer: Option<SdkTracer>) -> Result<(), tracing_subscriber::util::TryInitError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Colour codes only for a terminal, never into a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    subscriber(format, filter, ansi, std::io::stderr, tracer).try_init()
}

/// The logs (through `filter`, to `writer`) and, given a tracer, the spans
/// exported.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
    tracer: Option<SdkTracer>,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    // bollard's debug logs carry container definitions, environment (user
    // secrets) included: never below info, whatever RUST_LOG asks.
    let filter = filter.add_directive("bollard=info".parse().expect("static directive"));
    let logs = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(writer);
    let logs = match format {
        LogFormat::Json => logs.json().with_filter(filter).boxed(),
        LogFormat::Text => logs.with_filter(filter).boxed(),
    };
    // Its own filter: spans are exported whatever RUST_LOG keeps in the logs,
    // and only ours (events stay in the logs).
    let otel = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_filter(tracing_subscriber::filter::filter_fn(exported))
    });
    tracing_subscriber::registry().with(logs).with(otel)
}

fn exported(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.target().starts_with("mosaic") && [REQUEST, PEER_REQUEST, PEER_CALL].contains(&meta.name())
}

/// Records the span's trace id in its `trace_id` field, so every log line
/// inside it carries the id (text and JSON alike).
pub fn mark_trace(span: &Span) {
    if !exporting() {
        return;
    }
    let id = span.context().span().span_context().trace_id();
    if id != TraceId::INVALID {
        span.record("trace_id", tracing::field::display(id));
    }
}

/// Makes `span` (not yet entered) continue a peer's trace when its
/// `traceparent` is well formed; a malformed one is ignored (the span then
/// begins a trace of its own).
pub fn continue_trace(span: &Span, traceparent: Option<&str>) {
    if !exporting() {
        return;
    }
    if let Some(tp) = traceparent.and_then(TraceParent::parse) {
        let remote = SpanContext::new(
            TraceId::from_bytes(tp.trace_id),
            opentelemetry::trace::SpanId::from_bytes(tp.span_id),
            TraceFlags::new(tp.flags),
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    mark_trace(span);
}

/// The `traceparent` naming `span` as the parent of what the next hop does.
pub fn traceparent(span: &Span) -> Option<String> {
    if !exporting() {
        return None;
    }
    let context = span.context();
    let sc = context.span().span_context().clone();
    sc.is_valid().then(|| {
        TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        }
        .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What the log layer writes, kept for the test to read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged_inside_spans(format: LogFormat) -> (String, String) {
        EXPORTING.store(true, Ordering::Relaxed);
        let out = Captured::default();
        let writer = out.clone();
        let provider = SdkTracerProvider::builder().build();
        let subscriber = subscriber(
            format,
            EnvFilter::new("info"),
            false,
            move || writer.clone(),
            Some(provider.tracer("test")),
        );
        let trace_id = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(REQUEST, trace_id = tracing::field::Empty);
            mark_trace(&span);
            let _in = span.enter();
            // A child span, as a peer call is: the line still carries the id.
            let call = tracing::info_span!(PEER_CALL);
            let _in_call = call.enter();
            tracing::info!("inside");
            span.context().span().span_context().trace_id().to_string()
        });
        (String::from_utf8(out.0.lock().unwrap().clone()).unwrap(), trace_id)
    }

    #[test]
    fn log_lines_inside_a_request_carry_its_trace_id() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let (logged, trace_id) = logged_inside_spans(format);
            assert_eq!(trace_id.len(), 32, "{trace_id}");
            assert_ne!(trace_id, TraceId::INVALID.to_string());
            let line = logged
                .lines()
                .find(|l| l.contains("inside"))
                .expect("the line is logged");
            let expected = match format {
                LogFormat::Text => format!("trace_id={trace_id}"),
                LogFormat::Json => format!("\"trace_id\":\"{trace_id}\""),
            };
            assert!(line.contains(&expected), "{format:?}: {line}");
        }
    }

    #[test]
    fn a_peers_traceparent_is_continued_and_a_malformed_one_ignored() {
        EXPORTING.store(true, Ordering::Relaxed);
        let provider = SdkTracerProvider::builder().build();
        let subscriber = subscriber(
            LogFormat::Text,
            EnvFilter::new("off"),
            false,
            std::io::sink,
            Some(provider.tracer("test")),
        );
        tracing::subscriber::with_default(subscriber, || {
            let remote = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let span = tracing::info_span!(PEER_REQUEST, trace_id = tracing::field::Empty);
            continue_trace(&span, Some(remote));
            let next = traceparent(&span).expect("a sampled span has one");
            let next = TraceParent::parse(&next).unwrap();
            let remote = TraceParent::parse(remote).unwrap();
            assert_eq!(next.trace_id, remote.trace_id, "the trace goes on");
            assert_ne!(next.span_id, remote.span_id, "as a new span");

            let span = tracing::info_span!(PEER_REQUEST, trace_id = tracing::field::Empty);
            continue_trace(&span, Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
            let own = TraceParent::parse(&traceparent(&span).unwrap()).unwrap();
            assert_ne!(
                own.trace_id, remote.trace_id,
                "a malformed one starts a trace of its own"
            );
        });
    }
}
