//! OTLP payloads (protobuf, the official definitions of `opentelemetry-proto`): log records as
//! an `ExportLogsServiceRequest`, and a Prometheus text exposition as an
//! `ExportMetricsServiceRequest`.
//!
//! Metrics are taken from the process's own exposition rather than kept twice: the text is
//! what Prometheus scrapes, and it maps onto OTLP the way the OpenTelemetry Collector's
//! Prometheus receiver maps it (counter → cumulative monotonic Sum, gauge → Gauge, histogram →
//! cumulative Histogram with explicit bounds).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::collections::BTreeMap;

/// Attributes as (key, value) strings.
pub type Attributes = Vec<(String, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Debug,
    Info,
    Warn,
    Error,
    /// A workload's line: its level is not known.
    Unspecified,
}

/// One log record, before encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub time_unix_nano: u64,
    pub severity: Severity,
    pub body: String,
    /// Attributes of the record (e.g. `log.iostream`, the tracing target).
    pub attributes: Attributes,
    /// Resource attributes beyond the process's own (a container's namespace, pod, container).
    pub resource: Attributes,
}

fn key_values(attributes: &[(String, String)]) -> Vec<KeyValue> {
    attributes
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.clone())) }),
            ..Default::default()
        })
        .collect()
}

fn scope() -> InstrumentationScope {
    InstrumentationScope { name: "axle".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() }
}

/// The logs as one request: one `ResourceLogs` per distinct resource (the process's
/// `resource` plus each record's own), records in their order.
pub fn logs_request(resource: &[(String, String)], logs: &[Log]) -> ExportLogsServiceRequest {
    let mut groups: Vec<(Attributes, Vec<LogRecord>)> = Vec::new();
    for log in logs {
        let record = LogRecord {
            time_unix_nano: log.time_unix_nano,
            observed_time_unix_nano: log.time_unix_nano,
            severity_number: match log.severity {
                Severity::Debug => SeverityNumber::Debug,
                Severity::Info => SeverityNumber::Info,
                Severity::Warn => SeverityNumber::Warn,
                Severity::Error => SeverityNumber::Error,
                Severity::Unspecified => SeverityNumber::Unspecified,
            } as i32,
            severity_text: match log.severity {
                Severity::Debug => "DEBUG",
                Severity::Info => "INFO",
                Severity::Warn => "WARN",
                Severity::Error => "ERROR",
                Severity::Unspecified => "",
            }
            .into(),
            body: Some(AnyValue { value: Some(any_value::Value::StringValue(log.body.clone())) }),
            attributes: key_values(&log.attributes),
            ..Default::default()
        };
        match groups.iter_mut().find(|(r, _)| *r == log.resource) {
            Some((_, records)) => records.push(record),
            None => groups.push((log.resource.clone(), vec![record])),
        }
    }
    ExportLogsServiceRequest {
        resource_logs: groups
            .into_iter()
            .map(|(extra, log_records)| {
                let attributes: Attributes = resource.iter().cloned().chain(extra).collect();
                ResourceLogs {
                    resource: Some(Resource { attributes: key_values(&attributes), ..Default::default() }),
                    scope_logs: vec![ScopeLogs { scope: Some(scope()), log_records, ..Default::default() }],
                    ..Default::default()
                }
            })
            .collect(),
    }
}

/// One sample line of an exposition: `name{labels} value`.
struct Sample {
    name: String,
    labels: Attributes,
    value: f64,
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find('{') {
        Some(open) => (&line[..open], &line[open..]),
        None => line.split_once(' ')?,
    };
    let (labels, value_text) = if let Some(body) = rest.strip_prefix('{') {
        let close = closing_brace(body)?;
        (parse_labels(&body[..close])?, body[close + 1..].trim())
    } else {
        (Vec::new(), rest.trim())
    };
    let value = match value_text.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name: name.to_string(), labels, value })
}

/// The index of the `}` closing a label set (quotes may hold braces).
fn closing_brace(body: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_labels(text: &str) -> Option<Attributes> {
    let mut labels = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        rest = after[end + 1..].trim_start_matches(',').trim();
    }
    Some(labels)
}

/// The metrics of a Prometheus text exposition (classic or OpenMetrics), observed at `now`
/// (counters count since `start`), as one request for `resource`. Returns the request and its
/// number of data points.
pub fn metrics_request(
    resource: &[(String, String)],
    exposition: &str,
    start_unix_nano: u64,
    now_unix_nano: u64,
) -> (ExportMetricsServiceRequest, usize) {
    let mut families: Vec<(String, String, Vec<Sample>)> = Vec::new(); // name, type, samples
    let mut help: BTreeMap<String, String> = BTreeMap::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, text)) = rest.split_once(' ') {
                help.insert(name.to_string(), text.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                families.push((name.to_string(), kind.trim().to_string(), Vec::new()));
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            if let (Some(sample), Some(family)) = (parse_sample(line), families.last_mut()) {
                family.2.push(sample);
            }
        }
    }
    let mut points = 0;
    let mut metrics = Vec::new();
    for (family, kind, samples) in &mut families {
        let description = help.get(family.as_str()).cloned().unwrap_or_default();
        let number = |s: &Sample| NumberDataPoint {
            attributes: key_values(&s.labels),
            start_time_unix_nano: start_unix_nano,
            time_unix_nano: now_unix_nano,
            value: Some(number_data_point::Value::AsDouble(s.value)),
            ..Default::default()
        };
        let data = match kind.as_str() {
            "counter" => {
                let data_points: Vec<NumberDataPoint> = samples.iter().map(number).collect();
                points += data_points.len();
                // OpenMetrics names the family without `_total`, its samples with it.
                if !family.ends_with("_total") && samples.iter().all(|s| s.name.ends_with("_total")) {
                    family.push_str("_total");
                }
                metric::Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })
            }
            "histogram" => {
                let data_points = histogram_points(family, samples, start_unix_nano, now_unix_nano);
                points += data_points.len();
                metric::Data::Histogram(Histogram {
                    data_points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })
            }
            _ => {
                let data_points: Vec<NumberDataPoint> = samples.iter().map(number).collect();
                points += data_points.len();
                metric::Data::Gauge(Gauge { data_points })
            }
        };
        metrics.push(Metric { name: family.clone(), description, data: Some(data), ..Default::default() });
    }
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: key_values(resource), ..Default::default() }),
            scope_metrics: vec![ScopeMetrics { scope: Some(scope()), metrics, ..Default::default() }],
            ..Default::default()
        }],
    };
    (request, points)
}

type HistogramSeries = (Vec<(f64, f64)>, f64, f64);

/// A Prometheus histogram's `_bucket`/`_sum`/`_count` samples → one data point per label set,
/// with per-bucket (not cumulative) counts as OTLP wants them.
fn histogram_points(family: &str, samples: &[Sample], start: u64, now: u64) -> Vec<HistogramDataPoint> {
    // Per label set: (upper bound, cumulative count) of each bucket, the sum, the count.
    let mut series: BTreeMap<Attributes, HistogramSeries> = BTreeMap::new();
    for sample in samples {
        let mut labels = sample.labels.clone();
        let le = labels.iter().position(|(k, _)| k == "le").map(|i| labels.remove(i).1);
        let entry = series.entry(labels).or_default();
        match sample.name.strip_prefix(family) {
            Some("_bucket") => {
                let bound = match le.as_deref() {
                    Some("+Inf") | None => f64::INFINITY,
                    Some(v) => v.parse().unwrap_or(f64::INFINITY),
                };
                entry.0.push((bound, sample.value));
            }
            Some("_sum") => entry.1 = sample.value,
            Some("_count") => entry.2 = sample.value,
            _ => {}
        }
    }
    series
        .into_iter()
        .map(|(labels, (mut buckets, sum, count))| {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut previous = 0.0;
            let bucket_counts = buckets
                .iter()
                .map(|(_, cumulative)| {
                    let n = (cumulative - previous).max(0.0) as u64;
                    previous = *cumulative;
                    n
                })
                .collect();
            HistogramDataPoint {
                attributes: key_values(&labels),
                start_time_unix_nano: start,
                time_unix_nano: now,
                count: count as u64,
                sum: Some(sum),
                bucket_counts,
                explicit_bounds: buckets.iter().map(|(b, _)| *b).filter(|b| b.is_finite()).collect(),
                ..Default::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn logs_are_grouped_by_resource_in_order() {
        let log = |body: &str, pod: &str| Log {
            time_unix_nano: 1,
            severity: Severity::Unspecified,
            body: body.into(),
            attributes: attrs(&[("log.iostream", "stdout")]),
            resource: attrs(&[("k8s.pod.name", pod)]),
        };
        let request = logs_request(
            &attrs(&[("service.name", "axle-agent")]),
            &[log("a", "nav"), log("b", "maps"), log("c", "nav")],
        );
        assert_eq!(request.resource_logs.len(), 2);
        let nav = &request.resource_logs[0];
        let bodies: Vec<_> = nav.scope_logs[0].log_records.iter().map(|r| r.body.clone()).collect();
        assert_eq!(bodies.len(), 2);
        let resource = nav.resource.as_ref().expect("resource");
        assert_eq!(resource.attributes.len(), 2);
        let bytes = request.encode_to_vec();
        assert_eq!(ExportLogsServiceRequest::decode(bytes.as_slice()).expect("decodes"), request);
    }

    #[test]
    fn an_exposition_maps_onto_otlp_metrics() {
        let text = "# HELP requests Requests.\n# TYPE requests counter\nrequests_total{code=\"200\",path=\"/a{b}\"} 3\n\
                    # TYPE temp gauge\ntemp 21.5\n\
                    # TYPE latency histogram\nlatency_bucket{le=\"0.1\"} 2\nlatency_bucket{le=\"1\"} 5\nlatency_bucket{le=\"+Inf\"} 6\nlatency_sum 3.5\nlatency_count 6\n# EOF\n";
        let (request, points) = metrics_request(&attrs(&[("service.name", "s")]), text, 1, 2);
        assert_eq!(points, 3);
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(metrics[0].name, "requests_total");
        assert_eq!(metrics[0].description, "Requests.");
        let Some(metric::Data::Sum(sum)) = &metrics[0].data else { panic!("a sum: {:?}", metrics[0]) };
        assert!(sum.is_monotonic);
        assert_eq!(sum.data_points[0].value, Some(number_data_point::Value::AsDouble(3.0)));
        assert_eq!(sum.data_points[0].attributes.len(), 2);
        assert!(matches!(&metrics[1].data, Some(metric::Data::Gauge(g)) if g.data_points.len() == 1));
        let Some(metric::Data::Histogram(h)) = &metrics[2].data else { panic!("a histogram") };
        assert_eq!(h.data_points[0].bucket_counts, vec![2, 3, 1]);
        assert_eq!(h.data_points[0].explicit_bounds, vec![0.1, 1.0]);
        assert_eq!(h.data_points[0].count, 6);
    }

    #[test]
    fn label_values_keep_escapes_and_commas() {
        let sample = parse_sample(r#"m{a="x,y",b="q\"uote"} 1"#).expect("sample");
        assert_eq!(sample.labels, attrs(&[("a", "x,y"), ("b", "q\"uote")]));
        assert!(parse_sample("m{a=\"unterminated} 1").is_none());
    }
}
