"""``oj web``: the dashboard in the foreground (``oj-web.socket`` serves it on demand)."""

from __future__ import annotations

import click

DEFAULT_LISTEN = "127.0.0.1:8080"


@click.command()
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT",
              help="Address to serve on (0.0.0.0:PORT for every address).")
@click.pass_obj
def web(app, listen: str) -> int:
    """Serve the dashboard of this state dir until Ctrl-C: workers, queues, running and
    waiting jobs, crons, a page per job; live, with actions for whoever has the
    web_token of oj.conf."""
    from ojd.web import app as dashboard  # lazy: the server, only for this command

    sock = dashboard.httpserve.listen(listen)
    store = app.store
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"serving the dashboard of {store.root} on http://{shown}:{port}/ "
               "(Ctrl-C stops)", err=True)
    return dashboard.serve(store, [sock], idle_timeout=None,
                           say=lambda line: click.echo(line, err=True))
