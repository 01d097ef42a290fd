"""``oj metrics``: the state as OpenMetrics text, printed, or served on ``--listen``."""

from __future__ import annotations

import time

import click

from ojd.metrics import families, render


@click.command()
@click.option("--format", "fmt", type=click.Choice(["openmetrics", "prometheus"]),
              default="openmetrics", show_default=True,
              help="OpenMetrics 1.0, or Prometheus text format 0.0.4.")
@click.option("--listen", metavar="HOST:PORT",
              help="Serve /metrics on this address until Ctrl-C instead of printing.")
@click.pass_obj
def metrics(app, fmt: str, listen: str | None) -> int:
    """Items, jobs, workers and crons of every project in the state dir as metrics: gauges,
    counters (takes, completions, failures) and histograms (push to start, step durations).
    oj-metrics.socket serves the same at http://127.0.0.1:9464/metrics."""
    if listen is not None:
        # lazy: the HTTP server, for this one use
        from ojd import metrics_http

        return metrics_http.serve(listen)
    state = app.reader_store.state
    click.echo(render(families(state, time.time()), fmt == "openmetrics"), nl=False)
    return 0
