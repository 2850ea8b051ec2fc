"""Providers' callbacks: one URL per callback route the registered gateways declare; each passes
the request, as plain values, to mpm.messaging.callbacks."""
from flask import Blueprint, jsonify, request

from mpm.extensions import csrf
from mpm.messaging import callbacks


def blueprint() -> Blueprint:
    """Made per app, after every gateway is registered."""
    bp = Blueprint("callbacks", __name__)
    csrf.exempt(bp)
    for endpoint in callbacks.endpoints():
        bp.add_url_rule(endpoint.rule, endpoint.name, _view(endpoint), methods=list(endpoint.methods))
    return bp


def _view(endpoint: callbacks.Endpoint):
    def receive(company_id: int, **path_params):
        answer = callbacks.receive_callback(endpoint.gateway, endpoint.kind, company_id, _plain_request(path_params),
                                            request.remote_addr)
        return jsonify(answer.body), answer.status
    return receive


def _plain_request(path_params: dict) -> callbacks.CallbackRequest:
    # Form bodies are parsed first (their raw body is then empty); JSON bodies stay raw for the signature.
    raw_body = request.get_data(parse_form_data=True)
    return callbacks.CallbackRequest(method=request.method, path_params=path_params, query=request.args.to_dict(),
                           headers={k.lower(): v for k, v in request.headers.items()}, raw_body=raw_body,
                           form=request.form.to_dict())
