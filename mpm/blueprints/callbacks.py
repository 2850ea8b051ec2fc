"""Providers' callbacks, answered in front of Flask's page machinery.

A 100,000-recipient broadcast brings a few hundred thousand delivery reports, in bursts. These URLs
need nothing pages need (session, login, CSRF, rate limits, page headers, error pages), so they are
routed here, before Flask's request handling: match one of the URLs the registered gateways
declare, read the body within the same limits Flask applies, hand the request as plain values to
mpm.messaging.callbacks inside an app context, answer JSON. A report then costs the web server a
little more than a trivial page (bench/RESULTS.md). Every other URL goes on to Flask.
"""
import json
import logging
from http import HTTPStatus

from flask import Flask
from werkzeug.exceptions import HTTPException, NotFound, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request
from werkzeug.wsgi import get_path_info

from mpm.messaging import callbacks
from mpm.web import too_large

log = logging.getLogger("mpm.requests")


def install(app: Flask) -> None:
    """Route the callback URLs of the gateways registered by now (before ProxyFix wraps the app,
    so the provider's address is the real one)."""
    app.wsgi_app = CallbackRoutes(app, app.wsgi_app)


def url_map(app: Flask) -> Map:
    """Every callback URL; a rule's endpoint is the name of its callbacks.Endpoint."""
    return Map([Rule(e.rule, endpoint=e.name, methods=list(e.methods)) for e in callbacks.endpoints()],
               converters=dict(app.url_map.converters))


class CallbackRoutes:
    """WSGI middleware: the providers' callback URLs here, everything else to `next_app`."""

    def __init__(self, app: Flask, next_app):
        self.app = app
        self.next_app = next_app
        # Routes by path and method only (no host rules): one adapter serves every request.
        self.urls = url_map(app).bind("localhost")
        self.endpoints = {e.name: e for e in callbacks.endpoints()}
        self.prefixes = tuple({e.rule.split("<", 1)[0] for e in self.endpoints.values()})

    def __call__(self, environ, start_response):
        if not environ.get("PATH_INFO", "").startswith(self.prefixes):
            return self.next_app(environ, start_response)
        try:
            name, args = self.urls.match(get_path_info(environ), environ.get("REQUEST_METHOD", "GET"))
        except NotFound:
            return self.next_app(environ, start_response)
        except HTTPException as exc:  # a method the route does not take
            return _json({"error": exc.description}, exc.code, exc.get_headers())(environ, start_response)
        return self._receive(self.endpoints[name], args, Request(environ))(environ, start_response)

    def _receive(self, endpoint: callbacks.Endpoint, args: dict, request: Request):
        config = self.app.config
        request.max_content_length = config.get("MAX_CONTENT_LENGTH")
        request.max_form_memory_size = config.get("MAX_FORM_MEMORY_SIZE")
        request.max_form_parts = config.get("MAX_FORM_PARTS")
        company_id = args.pop("company_id")
        try:
            with self.app.app_context():
                answer = callbacks.receive_callback(endpoint.gateway, endpoint.kind, company_id,
                                                    _plain_request(request, args), request.remote_addr)
        except RequestEntityTooLarge:
            return _json({"error": too_large(request.method, request.path, request.content_length,
                                             request.remote_addr, request.max_content_length)}, 413)
        except HTTPException as exc:  # an unreadable body
            return _json({"error": exc.description}, exc.code or 400)
        except Exception:  # answer like any server error: the provider tries again later
            log.exception("callback failed: %s %s", request.method, request.path)
            return _json({"error": "internal error"}, 500)
        return _json(answer.body, answer.status)


def _plain_request(request: Request, path_params: dict) -> callbacks.CallbackRequest:
    # Form bodies are parsed first (their raw body is then empty); JSON bodies stay raw for the signature.
    raw_body = request.get_data(parse_form_data=True)
    return callbacks.CallbackRequest(method=request.method, path_params=path_params, query=request.args.to_dict(),
                                     headers={k.lower(): v for k, v in request.headers.items()}, raw_body=raw_body,
                                     form=request.form.to_dict())


def _json(body: dict, status: int, headers=None):
    """A JSON answer, as a WSGI app (no Response object on a path that answers thousands a second).
    `headers`: extra ones (e.g. Allow); their Content-Type gives way to JSON's."""
    data = json.dumps(body).encode()
    head = [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
            ("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store"),
            *((k, v) for k, v in headers or () if k.lower() != "content-type")]
    try:
        line = f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        line = f"{status} UNKNOWN"

    def answer(environ, start_response):
        start_response(line, head)
        return [data]

    return answer
