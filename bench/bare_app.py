"""A bare Flask handler served by the same gunicorn settings, for comparison."""
from flask import Flask, Response

app = Flask("bare")


@app.put("/mdm/connect")
def connect():
    return Response(b"", status=200)


@app.get("/healthz")
def healthz():
    return {"status": "ok"}
