"""The bot's web side (DESIGN.md, "The web side"): the class gallery, ``/healthz`` and ``/metrics``."""

from imaginebot.web.app import WEB, WebContext, create_app, serve_web

__all__ = ["WEB", "WebContext", "create_app", "serve_web"]
