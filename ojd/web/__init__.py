"""The dashboard (``oj web``, ``oj-web.socket``): one server-rendered page of the state,
kept live with server-sent events, and a few token-guarded actions that call the same
``ojd`` functions as the CLI."""
