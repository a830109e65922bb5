"""Parse a metrics exposition from stdin with the prometheus_client package's own parsers
and print its families as JSON: [{"name", "type", "unit", "samples": [{"name", "labels",
"value"}]}]. argv[1] is "openmetrics" (the strict OpenMetrics parser) or "prometheus" (the
Prometheus text format parser). A text either parser refuses exits 1 with its message."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as prometheus

PARSERS = {"openmetrics": openmetrics, "prometheus": prometheus}

try:
    families = [
        {
            "name": f.name,
            "type": f.type,
            "unit": getattr(f, "unit", ""),
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples
            ],
        }
        for f in PARSERS[sys.argv[1]](sys.stdin.read())
    ]
except Exception as e:  # the parsers raise ValueError and others
    print(f"{sys.argv[1]} parser refused the exposition: {e!r}", file=sys.stderr)
    sys.exit(1)
json.dump(families, sys.stdout)
