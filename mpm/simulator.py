"""Local gateway simulator (development tool). Full provider endpoints come with the gateways work."""
import argparse

from flask import Flask, jsonify


def create_simulator() -> Flask:
    app = Flask("mpm-gateway-simulator")

    @app.get("/healthz")
    def healthz():
        return jsonify({"ok": True, "simulator": True})

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="MPM gateway simulator (development only)")
    parser.add_argument("--port", type=int, default=5055)
    args = parser.parse_args()
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", args.port, create_simulator(), threaded=True)
