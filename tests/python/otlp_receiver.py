"""An OTLP/HTTP receiver for Axle's tests.

Decodes what arrives with the official OpenTelemetry protobuf definitions (the
`opentelemetry-proto` package) and appends one JSON line per log record and per metric to
OUT. Usage: otlp_receiver.py PORT OUT
"""
import gzip
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)


def attributes(key_values):
    return {kv.key: kv.value.string_value for kv in key_values}


def log_lines(body):
    request = ExportLogsServiceRequest()
    request.ParseFromString(body)
    for resource_logs in request.resource_logs:
        resource = attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                yield {
                    "signal": "logs",
                    "resource": resource,
                    "body": record.body.string_value,
                    "severity": record.severity_text,
                    "time": record.time_unix_nano,
                    "attributes": attributes(record.attributes),
                }


def metric_lines(body):
    request = ExportMetricsServiceRequest()
    request.ParseFromString(body)
    for resource_metrics in request.resource_metrics:
        resource = attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                points = getattr(metric, kind).data_points
                values = [
                    {"attributes": attributes(p.attributes), "value": getattr(p, "as_double", None) if kind != "histogram" else p.count}
                    for p in points
                ]
                yield {"signal": "metrics", "resource": resource, "name": metric.name, "kind": kind, "points": values}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path == "/v1/logs":
            lines, response = list(log_lines(body)), ExportLogsServiceResponse()
        elif self.path == "/v1/metrics":
            lines, response = list(metric_lines(body)), ExportMetricsServiceResponse()
        else:
            self.send_error(404)
            return
        with open(OUT, "a") as out:
            for line in lines:
                out.write(json.dumps(line) + "\n")
        answer = response.SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    PORT, OUT = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    print("ready", flush=True)
    server.serve_forever()
