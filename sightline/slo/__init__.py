"""SLOs as code: the spec (validation), the recording rules and alerts, and their promtool tests."""
